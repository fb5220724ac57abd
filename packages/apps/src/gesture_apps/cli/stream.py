"""`gesture stream`: a recording through :class:`GestureStream` chunk by chunk, as a live
source would send it (paced to real time with ``--realtime``); writes the motion and prints the
latency each chunk added (p50 / p95 / max)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from gesture_apps.errors import CLIError


def add_stream_command(sub) -> None:
    """Register ``gesture stream``."""
    p = sub.add_parser(
        "stream",
        help="stream a recording chunk by chunk through a GestureLSM bundle (live generation)",
        description=(
            "Feeds --audio to a streaming generator in --chunk-s pieces, as a microphone would, "
            "and writes the motion as a BEAT2 npz (floor(seconds x 30) frames). Any mono wav "
            "rate is resampled on the fly. Prints the compute time of each chunk (the latency "
            "it adds on top of the chunk and the declared look-ahead)."
        ),
    )
    p.add_argument(
        "--checkpoint",
        "--bundle",
        dest="checkpoint",
        required=True,
        help="a GestureLSM bundle (e.g. the one-step student `gesture distill` writes)",
    )
    p.add_argument("--audio", required=True, help="speech, a mono wav at any sample rate")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--textgrid", help="word alignment (Praat TextGrid with a 'words' tier)")
    p.add_argument("--chunk-s", type=float, default=0.5, help="audio per push (default 0.5 s)")
    p.add_argument("--lookahead-s", type=float, help="model look-ahead (default 1 latent frame)")
    p.add_argument("--realtime", action="store_true", help="pace the chunks to the wall clock")
    p.add_argument("--steps", type=int, help="sampling steps (default: the bundle's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: bundle's)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace) -> int:
    from gesture_apps.data.motion import write_beat2_npz
    from gesture_apps.data.speech import read_wav, read_words
    from gesture_apps.runtime.device import resolve_device
    from gesture_apps.systems.gesturelsm.streaming import GestureStream, concat_motion

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise CLIError(f"--out {out}: expected a .npz file name")
    if not (math.isfinite(args.chunk_s) and 0.01 <= args.chunk_s <= 10):
        raise CLIError(f"--chunk-s must be between 0.01 and 10 seconds, found {args.chunk_s}")
    audio, sr = read_wav(args.audio)
    words = read_words(args.textgrid, audio.size / sr) if args.textgrid else None
    stream = GestureStream(
        args.checkpoint,
        chunk_s=args.chunk_s,
        lookahead_s=args.lookahead_s,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        words=words,
        sample_rate=sr,
        device=resolve_device(args.device),
    )
    step = max(1, round(args.chunk_s * sr))
    pieces, start = [], time.perf_counter()
    for i in range(0, audio.size, step):
        if args.realtime:  # a live source delivers a chunk once it has been spoken
            wait = start + (i + step) / sr - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        pieces.append(stream.push(audio[i : i + step]))
    pieces.append(stream.flush())
    motion = concat_motion(pieces)
    write_beat2_npz(out, motion)
    ms = np.asarray(stream.latencies) * 1000
    p50, p95 = np.percentile(ms, [50, 95])
    print(
        f"stream: {motion.poses.shape[0]} frames from {audio.size / sr:.2f} s of audio in "
        f"{len(ms)} chunks of {args.chunk_s:g} s -> {out}\n"
        f"latency per chunk (compute): p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {ms.max():.1f} ms; "
        f"look-ahead {stream.lookahead_s * 1000:.0f} ms, motion step {stream.chunk_s:.3f} s"
    )
    return 0
