"""The ``gesture`` command line.

One module per command group; ``gesture train <system>`` is generated from
:mod:`gesture_apps.runtime.registry`. Every command has ``--help``, prints a one-line error and
exits with status 2 on bad input, never a traceback (set ``GESTURE_DEBUG=1`` to see one). Heavy
imports (torch, the systems) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from gesture_apps.cli.data import add_data_command
from gesture_apps.cli.demo import add_demo_command
from gesture_apps.cli.distill import add_distill_command
from gesture_apps.cli.eval import add_eval_command
from gesture_apps.cli.generate import add_generate_command
from gesture_apps.cli.importer import add_import_command
from gesture_apps.cli.info import add_info_commands, environment_report
from gesture_apps.cli.render import add_render_command
from gesture_apps.cli.serve import add_serve_command
from gesture_apps.cli.stream import add_stream_command
from gesture_apps.cli.train import add_train_command
from gesture_apps.errors import CLIError

__all__ = ["CLIError", "build_parser", "environment_report", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with the same one-line error as every other failure (argparse's default
    prints the whole usage block first, burying the line that says what is wrong)."""

    def error(self, message: str):
        self.exit(2, f"gesture: error: {message} (see `{self.prog} --help`)\n")


def _usage(parser: argparse.ArgumentParser):
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        print(f"gesture: error: {parser.prog} needs a subcommand", file=sys.stderr)
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gesture", description="Co-speech gesture and human-motion generation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_own_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_info_commands(sub)
    add_train_command(sub, _usage)
    add_distill_command(sub)  # `gesture distill` = `gesture train distill`
    add_import_command(sub, _usage)
    add_generate_command(sub)
    add_stream_command(sub)
    add_eval_command(sub)
    add_render_command(sub)
    add_serve_command(sub)
    add_demo_command(sub)
    add_data_command(sub)
    return parser


def _own_version() -> str:
    try:
        return metadata.version("gesture-apps")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may come after options too (argparse takes one positional run only)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        print("gesture: error: a command is required", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C is how a user stops a long run; the atomic writers leave no partial file
        if os.environ.get("GESTURE_DEBUG"):
            raise
        print("gesture: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as e:
        # ConfigError, CheckpointError and DataError are ValueErrors naming the file/key
        if os.environ.get("GESTURE_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"gesture: error: {message}", file=sys.stderr)
        return 2
