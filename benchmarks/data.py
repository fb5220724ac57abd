"""gesture-data loading speed: BEAT2 load+featurise, cache build/read, synthetic corpus.

Run: uv run python benchmarks/data.py [--fixtures DIR]
Prints a table; never run by CI. Uses the real BEAT2 take in $GESTURE_FIXTURES
(default ../shared/fixtures) when present, else only the synthetic corpus.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from gesture_data._io import fixtures_root
from gesture_data.datasets import beat2, synthetic
from gesture_data.datasets.windows import beat2_windows, clip_windows, collate, prepare_clip


def timeit(fn, repeat=3):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def read_windows(ds, batch=64, limit=2000):
    n = min(len(ds), limit)
    t = time.perf_counter()
    for s in range(0, n, batch):
        collate([ds[i] for i in range(s, min(n, s + batch))])
    return n / (time.perf_counter() - t)


def rows_value(rows, key):
    """The first BEAT2 cached read rate matching ``key``, else the synthetic read rate."""
    for name, v in rows:
        if "cached window reads" in name and key in name:
            return v
    return next(v for name, v in rows if name.startswith("synthetic window reads"))


def model_windows_per_second(batch=64, steps=3):
    """Training-step throughput of the GestureLSM upper-body tokenizer on this machine's
    CPU (forward + backward, 64-frame windows), if motion-tokenizers is installed."""
    try:
        import torch

        from motion_tokenizers import RVQVAE
    except ImportError:
        return None
    model = RVQVAE.gesturelsm("upper")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 64, 78)
    model(x)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        out = model(x)
        loss = (out.recon - x).abs().mean() + out.commit_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", type=Path, default=fixtures_root())
    args = ap.parse_args()
    rows = []
    root = args.fixtures / "beat2"
    cid = "2_scott_0_1_1"
    if (root / "smplxflame_30" / f"{cid}.npz").exists():
        t_bare, _ = timeit(
            lambda: (
                np.load(root / "smplxflame_30" / f"{cid}.npz")["poses"],
                sf.read(str(root / "wave16k" / f"{cid}.wav")),
            )
        )
        t_load, clip = timeit(lambda: beat2.load_clip(root, cid))
        t_feat, _ = timeit(lambda: prepare_clip(clip))
        minutes = clip.duration / 60
        rows += [
            ("BEAT2 bare np.load + sf.read (s/min)", t_bare / minutes),
            ("BEAT2 load_clip (s/min)", t_load / minutes),
            ("BEAT2 load + featurise, onset+amplitude (s/min)", (t_load + t_feat) / minutes),
            ("overhead factor load_clip / bare", t_load / t_bare),
        ]
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            beat2_windows(root, cache_dir=d)
            rows.append(("BEAT2 cache build, 1 take (s)", time.perf_counter() - t))
            t = time.perf_counter()
            ds, _ = beat2_windows(root, cache_dir=d)
            rows.append(("BEAT2 cache open (s)", time.perf_counter() - t))
            rows.append(("BEAT2 cached window reads, len 64 (windows/s)", read_windows(ds)))
            ds128, _ = beat2_windows(root, cache_dir=d, pose_length=128)
            rows.append(("BEAT2 cached window reads, len 128 (windows/s)", read_windows(ds128)))
    t, clips = timeit(lambda: synthetic.make_corpus(8, 10.0, seed=0), repeat=1)
    rows.append(("synthetic corpus, 80 s of clips (s)", t))
    t, (ds, _) = timeit(lambda: clip_windows(clips), repeat=1)
    rows.append(("synthetic prepare 80 s (s)", t))
    rows.append(("synthetic window reads, len 64 (windows/s)", read_windows(ds)))
    consumed = model_windows_per_second()
    if consumed is not None:
        rows.append(("RVQVAE.gesturelsm('upper') train step, CPU (windows/s)", consumed))
        rows.append(("cached read / model consumption (x)", rows_value(rows, "len 64") / consumed))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  value")
    for name, v in rows:
        print(f"{name:<{w}}  {v:10.3f}")


if __name__ == "__main__":
    main()
