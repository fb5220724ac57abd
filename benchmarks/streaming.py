"""Latency of streaming speech-to-gesture generation on this machine (CPU); prints a table.

    uv run python benchmarks/streaming.py [--seconds S] [--chunk-s 0.5] [--threads 1 2]

:class:`gesture_apps.systems.gesturelsm.streaming.GestureStream` is fed ``--seconds`` of the
synthetic corpus' speech (with its word alignment) in ``--chunk-s`` pieces, as fast as it takes
them; each row gives the compute time of the pushes that produced motion (the latency a chunk
adds on top of its own duration and the declared look-ahead): p50, p95 and max, the look-ahead,
and the real-time margin (chunk duration / p95).

Rows: the GestureLSM paper size with random weights (the ``gesturelsm/gesturelsm`` preset and
the 3-part ``MultiPartTokenizer.gesturelsm``, built in memory as in ``generation.py``) as the
one-step student (1 step, guidance 1) and as a teacher (2 steps, guidance 2), and the demo's
trained tiny student (``packages/apps/tests/data/demo_student``), each at every ``--threads``.
Timings are wall-clock: other processes on the machine slow them down (the load average is
printed before and after).

A second table splits each row's compute per chunk (mean over the pushes that produced motion):
condition encoder, cross-attention keys, denoiser, tokenizer decode, and the rest (the causal
onset/amplitude features, stitching, Python). A third puts the paper-size denoiser's one window
(FLOPs counted with ``torch.utils.flop_counter``) next to this machine's fp32 matmul rate at
the window's shape (its widest linear layer with as many rows as the window has latent frames)
and at 1024^3, measured in the same run: a batch-1 window streams every weight once for a few
dozen rows, so it runs at the rate of the former, not the latter.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import Timers, best_of, build, matmul_rate, table

DEMO = Path(__file__).resolve().parents[1] / "packages/apps/tests/data/demo_student"
PARTS = ("condition encoder", "attention keys", "denoiser", "decode")


def instrument(bundle) -> Timers:
    """Time the stream's components through ``bundle``'s own instances (once per bundle)."""
    timers = Timers()
    gen = bundle.generator
    den = gen.denoiser
    for key, obj, name in (
        (PARTS[0], gen.encoder, "forward"),
        (PARTS[0], gen.encoder, "encode_audio"),  # a stream runs these two, not forward
        (PARTS[0], gen.encoder, "combine"),
        (PARTS[1], den, "cross_kv"),
        (PARTS[2], den, "forward"),
        (PARTS[3], bundle.tokenizer, "decode"),
    ):
        setattr(obj, name, timers.wrap(key, getattr(obj, name)))
    return timers


def run(bundle, audio, words, chunk_s: float, steps: int | None, guidance: float | None, timers):
    """(ms of each push that produced motion, the stream, mean ms per such push of each part)"""
    from gesture_apps.systems.gesturelsm.streaming import GestureStream

    stream = GestureStream(bundle, chunk_s=chunk_s, steps=steps, guidance=guidance, words=words)
    step = round(chunk_s * 16000)
    busy, split = [], {k: 0.0 for k in PARTS}
    for i in range(0, audio.size, step):
        before = stream.frames_out
        timers.reset()
        stream.push(audio[i : i + step])
        if stream.frames_out > before:  # pushes that only buffered audio cost ~0.1 ms
            busy.append(stream.latencies[-1])
            for k in PARTS:
                split[k] += timers.total[k]
    stream.flush()
    split = {k: 1000 * v / max(1, len(busy)) for k, v in split.items()}
    return np.asarray(busy) * 1000, stream, split


def denoiser_bound(bundle, repeats: int = 5) -> list:
    """One batch-1 window of the one-step student: ms, GFLOP, GFLOP/s, and the matmul rates of
    its widest linear layer at the window's rows and of a 1024^3 matmul."""
    from torch.utils.flop_counter import FlopCounterMode

    from gesture_apps.systems.gesturelsm.pipeline import sample_window
    from gesture_apps.systems.gesturelsm.streaming import SAMPLES_PER_FRAME

    gen = bundle.generator
    den = gen.denoiser
    n, D = bundle.spec["pose_length"] // bundle.spec["factor"], den.num_parts * den.part_dim
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        samples = round(bundle.spec["pose_length"] * SAMPLES_PER_FRAME)
        feats = gen.encoder(
            torch.zeros(1, samples, 2), torch.zeros(1, n * bundle.spec["factor"], dtype=torch.long)
        )
        kv = den.cross_kv(feats, n_frames=n)
        noise, seed = (
            torch.randn(1, n, D, generator=g),
            torch.randn(1, gen.seed_frames, D, generator=g),
        )

        def window():
            return sample_window(den, kv, None, seed, noise, 1, 1.0)

        with FlopCounterMode(display=False) as fc:
            window()
        s = best_of(window, repeats)
        w = max(
            (m.weight for m in den.modules() if isinstance(m, torch.nn.Linear)), key=torch.numel
        )
        x = torch.randn(n, w.shape[1], generator=g)
        narrow = 2 * n * w.numel() / best_of(lambda: torch.nn.functional.linear(x, w), 10 * repeats)
    flop = fc.get_total_flops()
    return [
        f"{1000 * s:.1f}",
        f"{flop / 1e9:.2f}",
        f"{flop / s / 1e9:.1f}",
        f"{n}x{w.shape[1]} @ {w.shape[1]}x{w.shape[0]}: {narrow / 1e9:.1f}",
        f"{matmul_rate(repeats):.1f}",
    ]


def main() -> None:
    from gesture_apps.systems.gesturelsm.export import load_lsm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="audio length")
    p.add_argument("--chunk-s", type=float, default=0.5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    paper, audio, words, _ = build(args.seconds)
    demo = load_lsm(DEMO)
    models = [
        ("paper size, one-step student", paper, 1, 1.0),
        ("paper size, teacher (2 steps, cfg 2)", paper, 2, 2.0),
        ("demo tiny student (trained)", demo, None, None),
    ]
    timers = {id(b): instrument(b) for b in (paper, demo)}
    rows, splits, bounds = [], [], []
    for name, bundle, steps, guidance in models:
        for threads in args.threads:
            torch.set_num_threads(threads)
            t = timers[id(bundle)]
            run(bundle, audio[: 16000 * 3], words, args.chunk_s, steps, guidance, t)  # warm up
            ms, stream, split = run(bundle, audio, words, args.chunk_s, steps, guidance, t)
            p50, p95 = np.percentile(ms, [50, 95])
            rest = ms.mean() - sum(split.values())
            splits.append([name, threads, *(f"{split[k]:.1f}" for k in PARTS), f"{rest:.1f}"])
            if bundle is paper and steps == 1:
                bounds.append([threads, *denoiser_bound(paper)])
            rows.append(
                [
                    name,
                    threads,
                    len(ms),
                    f"{p50:.1f}",
                    f"{p95:.1f}",
                    f"{ms.max():.1f}",
                    f"{stream.lookahead_s * 1000:.0f}",
                    f"{stream.chunk_s * 1000 / p95:.1f}x",
                ]
            )
            print(rows[-1], flush=True)
    head = ["model", "threads", "chunks", "p50 ms", "p95 ms", "max ms", "look-ahead ms", "margin"]
    print(
        f"\nstreaming {args.seconds:.0f} s of speech in {args.chunk_s:g} s chunks "
        f"(motion step {stream.chunk_s:.3f} s), compute per chunk that produced motion\n"
    )
    print(table(head, rows))
    print("\nwhere a chunk's compute goes (mean ms per chunk that produced motion)\n")
    print(table(["model", "threads", *PARTS, "rest"], splits))
    print(
        "\nthe paper-size denoiser's window (one-step student, batch 1) against the matmul rate\n"
    )
    head = ["threads", "window ms", "GFLOP", "GFLOP/s", "widest linear GFLOP/s", "1024^3 GFLOP/s"]
    print(table(head, bounds))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
