"""Speed of speech-to-gesture generation on this machine (CPU); prints tables.

    uv run python benchmarks/generation.py [--threads N] [--repeats R] [--seconds S]

Random weights at the GestureLSM preset (``configs lsm_gesturelsm``: 3 parts x 128 latents,
denoiser 256 wide, 8 spatial-temporal + 3 cross blocks, 30.6 M parameters) and the 3-part
``MultiPartTokenizer.gesturelsm`` (upper / hands / lower RVQ-VAEs), built in memory: no
training, no downloads. The input is ``--seconds`` of the synthetic corpus' speech-like audio
with its word alignment, run through
:func:`gesture_apps.systems.gesturelsm.pipeline.generate_motion` (sliding 128-frame windows, 4
seed latents, no dropped tail).

Rows: 1, 2, 4 and 20 Euler steps with guidance 2 (conditional + unconditional branch in one
batch-2 forward), the one-step student (1 step, guidance 1: batch 1) and the same student under
bf16 autocast, whole (``generate_motion(bf16=True)``) or on the tokenizer decoders only, with
the largest joint-rotation angle to fp32. Columns: best wall time over ``--repeats`` runs,
real-time factor (audio seconds / wall seconds), peak RSS during the row, where the time goes
(audio features, condition encoder, denoiser, tokenizer decode, rest),
FLOPs counted with ``torch.utils.flop_counter`` and the FLOP lower bound, total FLOPs divided
by this machine's fp32 matmul rate measured in the same run (1024^3 matmul, best of many).
Guided rows with more than 2 steps get their FLOPs by linear extrapolation from the 1- and
2-step counts (the only work that grows with steps is one denoiser forward per step).

Last, one training step of the LSM recipe (shortcut loss: flow matching on 3/4 of the batch,
self-consistency on 1/4, Adam) at ``--train-batch`` windows (default 32; the recipe's own
batch is 128).

Timings are wall-clock: other processes on the machine slow them down (the load average is
printed before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
import timeit
from collections import defaultdict
from pathlib import Path

# keep this folder off the import path (benchmarks/tokenizers.py would shadow `tokenizers`)
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

PARTS = ("audio features", "condition encoder", "denoiser", "tokenizer decode")


def best_of(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    return min(timeit.repeat(fn, number=1, repeat=repeats))


def matmul_rate(repeats: int) -> float:
    """fp32 GFLOP/s of a 1024^3 matmul (best of many)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / best_of(lambda: a @ b, 10 * repeats) / 1e9


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timers:
    """Wall time accumulated per component by wrapping the functions the pipeline calls."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.depth = 0  # only the outermost timed call counts (forward calls cross_kv)

    def wrap(self, key: str, fn):
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[key] += time.perf_counter() - t0
                self.depth -= 1

        return timed

    def reset(self) -> None:
        self.total.clear()


def build(seconds: float):
    """(bundle, audio, words): GestureLSM-preset generator and tokenizer, random weights."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
    from gesture_apps.systems.gesturelsm.export import LSMBundle
    from gesture_apps.systems.gesturelsm.model import LSMGenerator, build_spec
    from gesture_data import Normalizer
    from gesture_data.datasets.beat2 import Vocabulary
    from gesture_data.datasets.synthetic import make_corpus
    from motion_tokenizers import MultiPartTokenizer

    clip = make_corpus(1, seconds, 0)[0]
    vocab = Vocabulary.build([clip])
    cfg = load_config(LSMRecipeConfig, "gesturelsm/gesturelsm", ["tokenizer=unused"])
    tok = MultiPartTokenizer.gesturelsm(parts=tuple(cfg.model.parts)).eval()
    spec = build_spec(cfg, tok, vocab_size=len(vocab))
    gen = LSMGenerator(spec).eval()
    bundle = LSMBundle(gen, tok, Normalizer(), vocab, spec, Path("."))
    return bundle, np.asarray(clip.audio, np.float32), list(clip.words), cfg


def instrument(bundle, timers: Timers) -> None:
    """Route the pipeline's components through ``timers`` (instance attributes only)."""
    import gesture_data.features.audio as audio_mod

    audio_mod.onset_amplitude = timers.wrap(PARTS[0], audio_mod.onset_amplitude)
    gen = bundle.generator
    gen.encoder.forward = timers.wrap(PARTS[1], gen.encoder.forward)
    den = gen.denoiser
    for name in ("forward", "cross_kv"):
        setattr(den, name, timers.wrap(PARTS[2], getattr(den, name)))
    bundle.tokenizer.decode = timers.wrap(PARTS[3], bundle.tokenizer.decode)


@contextlib.contextmanager
def bf16_decoders(bundle):
    """bf16 autocast over the tokenizer decoders only (the codes are picked in fp32 before
    them, so only the decoded motion's rounding changes)."""
    decode = bundle.tokenizer.decode

    def decode_bf16(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return decode(*args, **kwargs)

    bundle.tokenizer.decode = decode_bf16
    try:
        yield
    finally:
        bundle.tokenizer.decode = decode


def rotation_diff(a, b) -> float:
    """Largest geodesic angle (degrees) between the joint rotations of two motions."""
    import roma

    ra, rb = (roma.rotvec_to_rotmat(torch.from_numpy(m.poses).double().view(-1, 3)) for m in (a, b))
    return float(roma.rotmat_geodesic_distance(ra, rb).max().rad2deg())


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def train_step_time(cfg, bundle, batch: int, repeats: int):
    """(seconds, GFLOP) of one LSM-recipe optimiser step at ``batch`` windows."""
    from dataclasses import asdict

    from flow_backbones import ShortcutLoss
    from gesture_apps.systems.gesturelsm.model import LSMGenerator
    from gesture_apps.systems.gesturelsm.train import LSMObjective

    gen = LSMGenerator(bundle.spec).train()
    obj = LSMObjective(gen, ShortcutLoss(**asdict(cfg.loss)), cfg.model.seed_drop)
    opt = torch.optim.Adam(obj.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    spec = bundle.spec
    L, n = spec["pose_length"], spec["pose_length"] // spec["factor"]
    la = round(L * spec["sample_rate"] / spec["fps"])
    D = gen.denoiser.num_parts * gen.denoiser.part_dim
    g = torch.Generator().manual_seed(0)
    data = {
        "latents": torch.randn(batch, n, D, generator=g),
        "audio": torch.rand(batch, la, 2, generator=g),
        "words": torch.randint(0, spec["vocab_size"], (batch, L), generator=g),
    }

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = obj(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), cfg.train.grad_clip)
        opt.step()

    flops = count_flops(step)  # also the warm-up
    return min(timeit.repeat(step, number=1, repeat=repeats)), flops / 1e9


def table(head, rows) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def main() -> None:
    from gesture_apps.systems.gesturelsm.pipeline import generate_motion

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60.0, help="audio length")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--no-train", action="store_true", help="skip the training-step row")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load0 = os.getloadavg()

    bundle, audio, words, cfg = build(args.seconds)
    secs = audio.size / 16000
    rate = matmul_rate(args.repeats)
    timers = Timers()
    instrument(bundle, timers)

    def run(steps, guidance, bf16=False):
        return generate_motion(bundle, audio, words, steps=steps, guidance=guidance, bf16=bf16)

    # FLOPs: counted for the cheap settings, extrapolated linearly in steps for the others
    counted = {(s, g): count_flops(lambda s=s, g=g: run(s, g)) for s, g in [(1, 2.0), (2, 2.0)]}
    counted[(1, 1.0)] = count_flops(lambda: run(1, 1.0))
    per_step = counted[(2, 2.0)] - counted[(1, 2.0)]

    settings = [(1, 2.0), (2, 2.0), (4, 2.0), (20, 2.0), (1, 1.0)]
    rows, ref = [], {}
    bf16_rows = [(1, 1.0, "bf16"), (1, 1.0, "bf16 decoders")]
    for steps, guidance, bf16 in [*((s, g, None) for s, g in settings), *bf16_rows]:
        key = (steps, guidance)
        name = f"{steps} step{'s' if steps > 1 else ''}, guidance {guidance:g}"
        if guidance == 1.0:
            name += " (student)"
        if bf16:
            name += f" {bf16}"
        whole = bf16 == "bf16"  # generate_motion(bf16=True); else the decoders only
        ctx = bf16_decoders(bundle) if bf16 and not whole else contextlib.nullcontext()
        reps = 1 if steps > 4 else args.repeats
        reset_peak_rss()
        best, parts = float("inf"), {}
        with ctx:
            out = run(steps, guidance, whole)  # warm-up
            for _ in range(reps):
                timers.reset()
                t0 = time.perf_counter()
                out = run(steps, guidance, whole)
                wall = time.perf_counter() - t0
                if wall < best:
                    best, parts = wall, dict(timers.total)
        rss = peak_rss_mib()
        if bf16:
            # compared as rotations: axis-angle vectors of one rotation differ by 2 pi near pi
            name += f" (joint rotation diff max {rotation_diff(out, ref[key]):.2f} deg)"
        else:
            ref[key] = out
        flops = counted.get(key, counted[(1, guidance)] + (steps - 1) * per_step)
        rest = best - sum(parts.get(k, 0.0) for k in PARTS)
        rows.append(
            (
                name,
                f"{best:.2f}",
                f"{secs / best:.1f}x",
                f"{rss:.0f}",
                *(f"{parts.get(k, 0.0):.3f}" for k in PARTS),
                f"{rest:.3f}",
                f"{flops / 1e9:.1f}",
                f"{flops / 1e9 / rate:.2f}",
            )
        )

    print(
        f"threads={args.threads}, torch {torch.__version__}, {secs:.0f} s of audio, "
        f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"fp32 matmul rate (1024^3): {rate:.1f} GFLOP/s")
    head = (
        "setting",
        "s (best)",
        "RTF",
        "peak MiB",
        "audio s",
        "encoder s",
        "denoiser s",
        "decode s",
        "rest s",
        "GFLOP",
        "bound s",
    )
    print(table(head, rows))
    if not args.no_train:
        t, gf = train_step_time(cfg, bundle, args.train_batch, max(1, args.repeats - 2))
        print(
            table(
                ("training step (LSM recipe, Adam)", "batch", "s (best)", "GFLOP", "bound s"),
                [
                    (
                        "shortcut loss fwd+bwd+step",
                        args.train_batch,
                        f"{t:.2f}",
                        f"{gf:.0f}",
                        f"{gf / rate:.2f}",
                    )
                ],
            )
        )


if __name__ == "__main__":
    main()
