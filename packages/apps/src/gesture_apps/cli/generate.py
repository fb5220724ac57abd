"""`gesture generate`: speech -> motion with any exported bundle."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from gesture_apps.errors import CLIError


def add_generate_command(sub) -> None:
    """Register ``gesture generate``."""
    gen = sub.add_parser(
        "generate",
        help="generate gestures for a speech recording",
        description=(
            "Sliding-window generation with seed frames and no dropped tail: the output has "
            "floor(audio seconds x 30) frames, written as a BEAT2 npz (poses (T,165) axis-angle, "
            "trans, expressions, betas, model, gender, mocap_frame_rate). Audio must be mono "
            "16 kHz wav, at least 1 s."
        ),
    )
    gen.add_argument("--audio", required=True, help="speech, mono 16 kHz wav")
    gen.add_argument("--textgrid", help="word alignment (Praat TextGrid with a 'words' tier)")
    gen.add_argument(
        "--checkpoint", required=True, help="`gesture train lsm` run, checkpoint or lsm/ folder"
    )
    gen.add_argument(
        "--steps", type=int, help="sampling steps, 1 to 1000 (default: the model's, 2)"
    )
    gen.add_argument("--guidance", type=float, help="classifier-free guidance (default 2)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    gen.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 networks: ~1.4x faster on CPUs with bf16 units, rotations within degrees",
    )
    gen.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:1... (default: cuda when present, else cpu)"
    )
    gen.add_argument("--out", required=True, help="output .npz")
    gen.add_argument(
        "--render", metavar="VIDEO", help="also draw a stick figure: .mp4 (with audio) or .gif"
    )
    gen.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from gesture_apps.data.motion import write_beat2_npz
    from gesture_apps.runtime.bundle import open_bundle
    from gesture_apps.runtime.registry import generator_of

    out = Path(args.out)
    if out.suffix != ".npz" or out.is_dir():
        raise CLIError(f"--out {out}: expected a .npz file name")
    from gesture_apps.runtime.paths import check_output
    from gesture_apps.systems.gesturelsm.pipeline import MAX_STEPS

    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise CLIError(f"--steps must be between 1 and {MAX_STEPS}, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    if args.render and Path(args.render).suffix.lower() not in (".mp4", ".gif"):
        raise CLIError(f"--render {args.render}: expected a .mp4 or .gif file name")
    inputs = [("--audio", args.audio), ("--textgrid", args.textgrid)]
    try:  # the bundle generation reads whole (config, weights, normaliser, tokenizer)
        bundle = open_bundle(args.checkpoint)
        export, system = bundle.folder, bundle.system
    except ValueError:
        export, system = None, "gesturelsm"  # reported when loading, after the audio is checked
    generate = generator_of(system)
    for flag, path in (("--out", out), ("--render", args.render)):
        if path is not None:
            check_output(
                path,
                flag,
                files=inputs,
                folders=[("--checkpoint", export)],
                keep=[("--checkpoint", args.checkpoint)],
            )
    motion = generate(
        args.audio,
        checkpoint=args.checkpoint,
        textgrid=args.textgrid,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
    )
    seconds = motion.num_frames / motion.fps
    shown = f"generate: {motion.num_frames} frames ({seconds:.2f} s) -> {out}"
    if args.render:  # first, so that a failed render leaves no npz behind
        from gesture_apps.data.motion import render_video
        from gesture_apps.data.speech import read_audio

        render_video(args.render, motion, read_audio(args.audio))
        shown += f", {args.render}"
    write_beat2_npz(out, motion)
    print(shown)
    return 0
