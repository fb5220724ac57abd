"""``gesture distill``: one-step distillation of a flow teacher (consistency + adversarial).

Kept out of ``cli.py`` so the subcommand is one call there; torch is imported only when the
command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONFIG_NAME = "distill_config.json"


def add_distill_command(sub) -> None:
    """Register ``gesture distill`` on the top-level subparsers."""
    p = sub.add_parser(
        "distill",
        help="distil a flow teacher to a one-step generator (consistency + adversarial)",
        description=(
            "Stage 1 (--stage1): a one-step student regresses the teacher's "
            "classifier-free-guided multi-step ODE solution (endpoint), or is trained by "
            "consistency distillation with an EMA target (consistency). Stage 2: Seaweed-APT "
            "adversarial post-training (a backbone-copy discriminator with query heads on "
            "three blocks, non-saturating loss, "
            "approximate R1, RMSprop, generator EMA). --teacher DIR takes a flow_backbones "
            "save_pretrained folder with teacher.kind=backbone (teacher.backbone names its class, "
            "e.g. DiT); a `gesture train lsm` run (preset distill/gesturelsm, the default with "
            "--teacher) exports OUT/student/ as an lsm export that `gesture generate "
            "--checkpoint OUT/student` runs in one step. Without --teacher the distill/tiny "
            "preset trains a toy 2-D teacher. Writes OUT/consistency/ and OUT/apt/ (resumable "
            "run folders), OUT/student/ (the one-step model) and OUT/metrics.json (energy "
            "distances to the teacher's multi-step samples)."
        ),
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. apt.steps=0"
    )
    p.add_argument(
        "--teacher",
        metavar="DIR",
        help="`gesture train lsm` run (teacher.kind=lsm, the distill/gesturelsm default) or a "
        "flow_backbones save_pretrained folder (teacher.kind=backbone); sets teacher.path",
    )
    p.add_argument(
        "--stage1",
        choices=["endpoint", "consistency"],
        help="stage 1: regress the teacher's multi-step endpoints (endpoint, the default) or "
        "consistency distillation with an EMA target (consistency); sets stage1",
    )
    p.add_argument("--data", help="kind lsm: condition windows, synthetic (default) or beat2:PATH")
    p.add_argument(
        "--preset",
        help="preset name or yaml (default distill/gesturelsm with --teacher, else distill/tiny)",
    )
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override"
    )
    p.add_argument("--out", help="run folder (default runs/distill)")
    p.add_argument("--resume", metavar="RUN", help="continue a distill run folder exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from gesture_apps.errors import CLIError
    from gesture_apps.runtime import apply_overrides, from_dict, preset_path, read_preset, to_dict

    overrides = [*args.overrides, *args.sets]
    if args.teacher:
        overrides.append(f"teacher.path={args.teacher}")
    if args.stage1:
        overrides.append(f"stage1={args.stage1}")
    if args.data:
        overrides.append(f"data.source={args.data}")
    if args.resume:
        if args.preset:
            raise CLIError("--preset cannot be combined with --resume (use KEY=VALUE overrides)")
        run_dir = Path(args.resume)
        saved = run_dir / CONFIG_NAME
        if not saved.is_file():
            raise CLIError(f"{run_dir}: not a distill run folder (no {CONFIG_NAME})")
        try:
            raw = json.loads(saved.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CLIError(f"{saved}: invalid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise CLIError(f"{saved}: expected a JSON object, found {type(raw).__name__}")
        out = Path(args.out) if args.out else run_dir
        source = saved
    else:
        source = preset_path(
            args.preset or ("distill/gesturelsm" if args.teacher else "distill/tiny")
        )
        raw = read_preset(str(source))
        out = Path(args.out or "runs/distill")
        if (out / CONFIG_NAME).is_file():
            raise CLIError(
                f"{out} already holds a distill run; pass --resume {out} or another --out"
            )
    if raw.get("recipe", "distill") != "distill":
        raise CLIError(f"{source}: is a {raw.get('recipe')!r} config, not 'distill'")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file, not a run folder")
    from gesture_apps.systems.distill import train as distill

    # the saved config of a run must be whole (a default for a lost key is another run)
    cfg = from_dict(
        distill.DistillRecipeConfig,
        apply_overrides(raw, overrides),
        source=source,
        complete=bool(args.resume),
    )
    from gesture_apps.runtime.paths import check_output

    check_output(out, "--out", folders=[("--teacher", cfg.teacher.path)])
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = distill.run(
        cfg,
        out,
        resume=bool(args.resume),
        progress=not args.no_progress,
        on_start=lambda: _write_config(out, to_dict(cfg)),
    )
    ed = result.metrics
    shown = ", ".join(f"{k} {v:.4f}" for k, v in ed.items())
    print(f"distill: one-step student -> {out / 'student'}; energy distance to teacher: {shown}")
    return 0


def _write_config(out: Path, data: dict) -> None:
    from gesture_apps.runtime import write_json

    write_json(out / CONFIG_NAME, data)
