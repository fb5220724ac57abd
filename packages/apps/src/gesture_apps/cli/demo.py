"""`gesture demo`: the built-in end-to-end run."""

from __future__ import annotations

import logging
from pathlib import Path


def add_demo_command(sub) -> None:
    """Register ``gesture demo`` on the top-level subparsers (torch loads only when it runs)."""
    p = sub.add_parser(
        "demo",
        help="the whole loop offline: corpus, tokenizer, lsm, one-step student, eval, video",
        description=(
            "Build the synthetic corpus (or --data beat2:PATH), train the tokenizers and the "
            "GestureLSM model at a small size, distil a one-step student, generate gestures for "
            "held-out speech and evaluate FGD, BC and L1div against the ground truth and two "
            "baselines (another recording's motion, the mean pose). Writes metrics.json, "
            "motion/*.npz, side_by_side.mp4, training_curves.png and runs/ into --out. FGD uses "
            "a tiny encoder trained on the training clips in the same run: its values compare "
            "methods within one run only."
        ),
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="demo settings, e.g. lsm_steps=1000 num_clips=16 render=false",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    p.add_argument(
        "--size", default="default", help="named size: default or tiny (the test-suite size)"
    )
    p.add_argument("--data", help="synthetic (default) or beat2:PATH")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from gesture_apps.systems.demo import demo_config, parse_overrides, run

    overrides = parse_overrides(list(args.overrides))
    if args.data:
        overrides["data"] = args.data
    cfg = demo_config(args.size, **overrides)
    kind = cfg.data.split(":", 1)[0]
    if kind not in ("synthetic", "beat2") or (kind == "beat2" and ":" not in cfg.data):
        raise ValueError(f"--data: expected 'synthetic' or 'beat2:PATH', found {cfg.data!r}")
    out = Path(args.out)
    if (out / "metrics.json").exists() or (out / "runs").exists():
        raise ValueError(f"{out} already holds a demo run; pass another --out or remove it")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(cfg, out, progress=args.progress)
    return 0
