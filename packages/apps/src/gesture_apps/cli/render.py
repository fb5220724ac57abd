"""`gesture render`: an npz as a stick-figure video."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_render_command(sub) -> None:
    """Register ``gesture render`` on the top-level subparsers."""
    p = sub.add_parser(
        "render",
        help="draw a BEAT2 npz as a stick-figure video",
        description=(
            "Draw the SMPL-X joints of a BEAT2 npz (poses (T,165) + trans) on an approximate "
            "rest skeleton as a stick figure: .mp4 (with --audio muxed in, cut to the shorter "
            "stream) or .gif. The video is written to a temporary name, then renamed."
        ),
    )
    p.add_argument("motion", metavar="MOTION.npz", help="BEAT2 npz (poses, trans)")
    p.add_argument("--out", required=True, metavar="VIDEO", help="output .mp4 or .gif")
    p.add_argument("--audio", help="speech, mono 16 kHz wav (mp4 only)")
    p.add_argument("--size", type=int, default=320, help="frame width and height (default 320)")
    p.set_defaults(func=cmd_render)


def cmd_render(args: argparse.Namespace) -> int:
    import numpy as np

    from gesture_apps.errors import CLIError
    from gesture_apps.evaluation.files import read_motion_npz
    from gesture_data.motion import MotionFileError

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif") or out.is_dir():
        raise CLIError(f"--out {out}: expected a .mp4 or .gif file name")
    if not 64 <= args.size <= 2048:
        raise CLIError(f"--size must be between 64 and 2048, found {args.size}")
    if args.audio and out.suffix.lower() == ".gif":
        raise CLIError("--audio needs an .mp4 --out (a gif has no sound)")
    data = read_motion_npz(args.motion)
    from gesture_apps.data.motion import Motion, render_video
    from gesture_apps.data.speech import read_audio

    audio = read_audio(args.audio) if args.audio else None
    poses = data["poses"]
    trans = data["trans"] if data["trans"] is not None else np.zeros((len(poses), 3), np.float32)
    fps = data["fps"]
    if fps != round(fps):
        raise MotionFileError(args.motion, f"'mocap_frame_rate' must be whole, found {fps}")
    motion = Motion(poses, trans, np.zeros((len(poses), 100), np.float32), fps=int(fps))
    render_video(out, motion, audio, size=args.size)
    print(f"render: {motion.num_frames} frames ({motion.num_frames / fps:.2f} s) -> {out}")
    return 0
