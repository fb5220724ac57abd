"""Speed of the flow-backbones models on this machine (CPU by default); prints a table.

    uv run python benchmarks/backbones.py [--threads N] [--repeats R]

Rows: this machine's fp32 matmul rate (the reference), MMDiT and DiT at a mid size (8 blocks,
512 wide; MMDiT with 3 streams of 128 tokens, DiT with 384 tokens) forward and forward+backward
with achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter), the GestureLSM denoiser
preset on one 128-frame window (32 latent frames) at batch 1 and batch 2 (the guidance batch),
and the tiny presets. Paper-size MMDiT (3.1B parameters) is not run on CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# this script shares the package's name: keep its own folder off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from flow_backbones import DiT, MMDiT, SpatialTemporalDenoiser, StreamSpec  # noqa: E402


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def matmul_rate(repeats: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    s = timeit(lambda: a @ b, repeats * 3)
    return 2 * 1024**3 / s / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    peak = matmul_rate(args.repeats)
    rows.append(
        ("fp32 matmul 1024^3", "", f"{1e3 * 2 * 1024**3 / peak / 1e9:.1f}", "", f"{peak:.1f}")
    )

    def bench(name, model, call):
        n = sum(p.numel() for p in model.parameters())
        model.eval()
        with torch.no_grad():
            f_fwd = flops(call)
            t_fwd = timeit(call, args.repeats)
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            out = call()
            (
                out if isinstance(out, torch.Tensor) else sum(o.sum() for o in out.values())
            ).sum().backward()

        f_bwd = flops(step)
        t_bwd = timeit(step, args.repeats)
        rows.append(
            (
                f"{name} fwd",
                f"{n / 1e6:.2f}M",
                f"{1e3 * t_fwd:.1f}",
                f"{f_fwd / 1e9:.2f}",
                f"{f_fwd / t_fwd / 1e9:.1f}",
            )
        )
        rows.append(
            (
                f"{name} fwd+bwd",
                "",
                f"{1e3 * t_bwd:.1f}",
                f"{f_bwd / 1e9:.2f}",
                f"{f_bwd / t_bwd / 1e9:.1f}",
            )
        )

    streams = {"gesture": StreamSpec(512), "audio": StreamSpec(32), "text": StreamSpec(256)}
    mm = MMDiT(streams, dim=512, depth=8, num_heads=8)
    x = {n: torch.randn(1, 128, s.in_dim) for n, s in streams.items()}
    t = {n: torch.rand(1) for n in streams}
    bench("MMDiT mid (8x512, 3x128 tok, B=1)", mm, lambda: mm(x, t))

    dit = DiT(in_channels=64, dim=512, depth=8, num_heads=8)
    xd = torch.randn(1, 384, 64)
    bench("DiT mid (8x512, 384 tok, B=1)", dit, lambda: dit(xd, torch.rand(1)))

    st = SpatialTemporalDenoiser.gesturelsm()
    for B in (1, 2):
        xs, cond = torch.randn(B, 32, 384), torch.randn(B, 32, 768)
        seed = torch.randn(B, 4, 384)
        bench(
            f"GestureLSM denoiser (32 latent frames, B={B})",
            st,
            lambda xs=xs, cond=cond, seed=seed: st(
                xs, torch.rand(xs.shape[0]), 0.5, cond, seed=seed
            ),
        )

    tiny = MMDiT.tiny()
    xt = {"gesture": torch.randn(4, 16, 8), "audio": torch.randn(4, 24, 4)}
    bench("MMDiT.tiny (B=4)", tiny, lambda: tiny(xt, {"gesture": torch.rand(4), "audio": 1.0}))

    head = ("model", "params", "ms (best)", "GFLOP", "GFLOP/s")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(f"threads={args.threads}, torch {torch.__version__}")
    print(fmt.format(*head))
    for r in rows:
        print(fmt.format(*r))


if __name__ == "__main__":
    main()
