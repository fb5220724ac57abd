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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import build, table

DEMO = Path(__file__).resolve().parents[1] / "packages/apps/tests/data/demo_student"


def run(bundle, audio, words, chunk_s: float, steps: int | None, guidance: float | None):
    from gesture_apps.systems.gesturelsm.streaming import GestureStream

    stream = GestureStream(bundle, chunk_s=chunk_s, steps=steps, guidance=guidance, words=words)
    step = round(chunk_s * 16000)
    busy = []
    for i in range(0, audio.size, step):
        before = stream.frames_out
        stream.push(audio[i : i + step])
        if stream.frames_out > before:  # pushes that only buffered audio cost ~0.1 ms
            busy.append(stream.latencies[-1])
    stream.flush()
    return np.asarray(busy) * 1000, stream


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
    rows = []
    for name, bundle, steps, guidance in models:
        for threads in args.threads:
            torch.set_num_threads(threads)
            run(bundle, audio[: 16000 * 3], words, args.chunk_s, steps, guidance)  # warm up
            ms, stream = run(bundle, audio, words, args.chunk_s, steps, guidance)
            p50, p95 = np.percentile(ms, [50, 95])
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
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
