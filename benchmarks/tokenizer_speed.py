"""Throughput of the GestureLSM RVQ-VAE tokenizer (upper part, 78-d) on this machine's CPU.

    uv run python benchmarks/tokenizer_speed.py [--threads 2] [--repeats 5] [--quick]

Prints one table: encode (motion -> indices) and decode (indices -> motion) throughput in motion
frames per second at batch 1 and 64 x 64 frames, the training step time at batch 256 x 64, each
stage's peak resident memory, and the achieved GFLOP/s next to this machine's fp32 matmul
GFLOP/s measured in the same run. ``plain`` is the literal nearest-upsample + conv decoder,
``fast`` the polyphase decoder (same parameters, 2/3 of the upsampling convs' FLOPs), ``bf16``
the fast path under CPU bfloat16 autocast. Every stage runs in a fresh process so its peak
memory is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def _model(polyphase: bool):
    from motion_tokenizers import RVQVAE

    torch.manual_seed(0)
    model = RVQVAE.gesturelsm("upper", polyphase_upsample=polyphase)
    model(torch.randn(8, 64, 78))  # k-means init of the codebooks
    return model


_CLOCK = time.perf_counter


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = _CLOCK()
        fn()
        best = min(best, _CLOCK() - t0)
    return best


_GRAD_CTX = torch.inference_mode


def _flops(fn) -> int:
    # FlopCounterMode's module hooks need autograd metadata, so count under no_grad instead
    global _GRAD_CTX
    _GRAD_CTX = torch.no_grad
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        _GRAD_CTX = torch.inference_mode
    return counter.get_total_flops()


def _stage(name, batch, mode, threads, repeats, cpu_time, queue) -> None:
    global _CLOCK
    if cpu_time:
        _CLOCK = time.process_time
    torch.set_num_threads(threads)
    model = _model(polyphase=mode != "plain")
    x = torch.randn(batch, 64, 78)
    row = {"stage": name, "batch": batch, "mode": mode}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16")
    if name in ("encode", "decode"):
        model.eval()
        with torch.inference_mode():
            idx = model.encode(x)

        def encode():
            with _GRAD_CTX(), autocast:
                return model.encode(x)

        def decode():
            with _GRAD_CTX(), autocast:
                return model.decode_indices(idx)

        fn = encode if name == "encode" else decode
        seconds = _timeit(fn, repeats)
        row["frames_per_s"] = batch * 64 / seconds
        if mode != "plain" and name == "decode":
            ref = _model(polyphase=False).eval()
            with torch.inference_mode():
                row["max_abs_diff_vs_plain"] = (
                    (fn().float() - ref.decode_indices(idx)).abs().max().item()
                )
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.99))

        def step():
            with autocast:
                out = model(x)
                loss = (
                    torch.nn.functional.smooth_l1_loss(out.recon.float(), x)
                    + 0.02 * out.commit_loss
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds = _timeit(step, max(1, repeats // 2))
        fn = step
        row["s_per_step"] = seconds
    row["seconds"] = seconds
    row["gflops"] = _flops(fn) / seconds / 1e9
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(row)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10, cpu_time: bool = False) -> float:
    global _CLOCK
    _CLOCK = time.process_time if cpu_time else time.perf_counter
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = _timeit(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="skip the training-step stages")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process CPU time (robust on a shared machine; use with --threads 1)",
    )
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    plan = [
        (s, b, m) for s in ("encode", "decode") for b in (1, 64) for m in ("plain", "fast", "bf16")
    ]
    if not args.quick:
        plan += [("train", 256, m) for m in ("plain", "fast", "bf16")]
    rows = []
    peak = matmul_gflops(
        args.threads, cpu_time=args.cpu_time
    )  # measured before and after; the best one is the rate
    for stage, batch, mode in plan:
        queue = ctx.Queue()
        p = ctx.Process(
            target=_stage,
            args=(stage, batch, mode, args.threads, args.repeats, args.cpu_time, queue),
        )
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"stage {stage} batch {batch} {mode} failed (exit {p.exitcode})")
        rows.append(queue.get())
    peak = max(peak, matmul_gflops(args.threads, cpu_time=args.cpu_time))
    clock = "CPU time" if args.cpu_time else "wall clock"
    print(
        f"torch {torch.__version__}, {args.threads} threads, {clock}; "
        f"fp32 matmul 2048^3: {peak:.1f} GFLOP/s"
    )
    print(
        f"{'stage':<7} {'batch':>5} {'mode':<6} {'throughput':>18} {'GFLOP/s':>8} {'% matmul':>8} "
        f"{'peak MB':>8} {'max|diff|':>9}"
    )
    for r in rows:
        thr = (
            f"{r['frames_per_s']:,.0f} frames/s"
            if "frames_per_s" in r
            else f"{r['s_per_step']:.2f} s/step"
        )
        diff = r.get("max_abs_diff_vs_plain")
        print(
            f"{r['stage']:<7} {r['batch']:>5} {r['mode']:<6} {thr:>18} {r['gflops']:>8.1f} "
            f"{100 * r['gflops'] / peak:>7.0f}% {r['peak_mb']:>8.0f} "
            f"{'' if diff is None else f'{diff:.1e}':>9}"
        )


if __name__ == "__main__":
    main()
