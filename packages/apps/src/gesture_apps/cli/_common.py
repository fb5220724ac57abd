"""Shared pieces of the training commands."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from gesture_apps.errors import CLIError
from gesture_apps.runtime.registry import SystemEntry


def add_train_args(p: argparse.ArgumentParser, entry: SystemEntry) -> None:
    """The options every ``gesture train <system>`` takes."""
    default_preset = f"{entry.presets}/{entry.default_preset}"
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.lr=1e-3 model.parts=[upper,hands]",
    )
    p.add_argument(
        "--preset",
        default=None,
        help=f"named preset from `gesture presets` or a yaml path (default {default_preset})",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable); same as a positional KEY=VALUE",
    )
    p.add_argument("--data", help="synthetic (default) or beat2:PATH; sets data.source")
    p.add_argument("--out", help=f"run folder (default runs/{entry.name}, or the resumed run's)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint folder or run folder to continue")
    p.add_argument("--steps", type=int, help="stop after this many more steps (default: to max)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as yaml and exit"
    )
    p.set_defaults(system=entry.name)


def _resolve_train_config(args: argparse.Namespace, entry: SystemEntry):
    """(config, out_dir, checkpoint or None) from the preset / resumed run and overrides."""
    from gesture_apps.runtime import (
        from_dict,
        preset_path,
        read_preset,
        read_run_config,
        resolve_checkpoint,
    )
    from gesture_apps.runtime.config import apply_overrides

    overrides = [*args.overrides, *args.sets]
    if args.data:
        overrides.append(f"data.source={args.data}")
    checkpoint = None
    if args.resume:
        if args.preset:
            raise CLIError("--preset cannot be combined with --resume (use KEY=VALUE overrides)")
        checkpoint = resolve_checkpoint(args.resume)
        raw = read_run_config(checkpoint)
        source = checkpoint / "run_config.json"
    else:
        source = preset_path(args.preset or entry.default_preset, entry.presets)
        raw = read_preset(str(source))
    recipe = raw.get("recipe", entry.name)
    if recipe not in entry.names:
        raise CLIError(f"{source}: is a {recipe!r} config, not {entry.name!r}")
    # a saved run config must be whole: a default standing in for a lost key would resume a
    # different run; a preset may leave keys to their defaults
    cfg = from_dict(
        entry.config_class(),
        apply_overrides(raw, overrides),
        source=source,
        complete=checkpoint is not None,
    )
    if args.out:
        out = Path(args.out)
    elif checkpoint is not None and checkpoint.parent.name == "checkpoints":
        out = checkpoint.parent.parent
    else:
        out = Path("runs") / args.recipe
    if checkpoint is None and (out / "checkpoints" / "latest.txt").is_file():
        raise CLIError(
            f"{out} already holds a run; pass --resume {out} to continue it or another --out"
        )
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be at least 1, found {args.steps}")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file, not a run folder")
    from gesture_apps.runtime.paths import check_output

    # the run fills out/ (checkpoints/, the export); it must not be one of the models it reads
    keys = ("tokenizer", "teacher", "audio_codec", "text_vae", "vae")
    inputs = [(k, getattr(cfg, k, None)) for k in keys]
    check_output(out, "--out", folders=[(k, p) for k, p in inputs if p])
    return cfg, out, checkpoint


def run_train(args: argparse.Namespace, entry: SystemEntry) -> int:
    """Shared body of ``gesture train <system>``: config, ``--print-config``, run, summary."""
    from gesture_apps.runtime import to_dict

    cfg, out, checkpoint = _resolve_train_config(args, entry)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    setup_logging()
    result = entry.load().run(
        cfg, out, resume=checkpoint, steps=args.steps, progress=not args.no_progress
    )
    if os.environ.get("RANK", "0") != "0":
        return 0  # one summary line per run, not per process
    loss = result.metrics.get("loss")
    shown = f"loss {loss:.4f}, " if loss is not None else ""
    print(
        f"{args.recipe}: step {result.step}/{cfg.train.max_steps}, {shown}"
        f"checkpoint {result.checkpoint}, export {out / entry.export}"
    )
    return 0


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
