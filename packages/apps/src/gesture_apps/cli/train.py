"""``gesture train <system>``: one subcommand per entry of the system registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from gesture_apps.cli._common import add_train_args, run_train
from gesture_apps.errors import CLIError
from gesture_apps.runtime.registry import SYSTEMS, SystemEntry


def add_train_command(sub, usage) -> None:
    """Register ``gesture train`` and one subcommand per registered system."""
    train = sub.add_parser(
        "train",
        help="train a model from a config preset",
        description="Train a model. Configs are named presets plus KEY=VALUE overrides.",
    )
    train.set_defaults(func=usage(train))
    systems = train.add_subparsers(dest="recipe", metavar="SYSTEM")
    for entry in SYSTEMS.values():
        p = systems.add_parser(
            entry.name, aliases=list(entry.aliases), help=entry.help, description=entry.description
        )
        if entry.stages:  # before the KEY=VALUE overrides: `gesture train NAME STAGE k=v`
            p.add_argument(
                "stage",
                nargs="?",
                metavar="STAGE",
                help=f"training stage: {', '.join(entry.stages)} (default: the preset's)",
            )
        add_train_args(p, entry)
        for flag, _, text in entry.inputs:
            p.add_argument(flag, metavar="DIR", help=text)
        p.set_defaults(func=_command(entry))
    from gesture_apps.cli.distill import add_distill_command  # the generic distillation system

    add_distill_command(systems)


def _command(entry: SystemEntry):
    def cmd(args: argparse.Namespace) -> int:
        if entry.stages:
            stage = args.stage
            if stage is not None and "=" in stage:  # no stage given: it is the first override
                args.overrides, stage = [stage, *args.overrides], None
            if stage is not None and stage not in entry.stages:
                raise CLIError(
                    f"unknown stage {stage!r} of {entry.name} (expected one of "
                    f"{', '.join(entry.stages)})"
                )
            if stage is not None:
                args.overrides = [*args.overrides, f"stage={stage}"]
        for flag, key, _ in entry.inputs:
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            if value:  # absolute, so `--resume` works from another folder
                args.overrides = [*args.overrides, f"{key}={Path(value).resolve()}"]
        return run_train(args, entry)

    return cmd
