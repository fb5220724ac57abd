"""The ``gesture`` command line.

Subcommands are added as the trainers land; every one has ``--help``, prints a one-line error and
exits with status 2 on bad input, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

LIBRARIES = ("motion-tokenizers", "flow-backbones", "gesture-data", "gesture-eval", "gesture-apps")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def environment_report() -> dict[str, object]:
    """Versions of the gesture libraries, torch and the compute device that would be used."""
    import torch

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "packages": versions,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"python {report['python']}  torch {report['torch']}  device {report['device']}")
    for name, version in report["packages"].items():
        print(f"  {name:<18} {version or 'not installed'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gesture", description="Co-speech gesture and human-motion generation."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_own_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show library versions and the compute device")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info)
    return parser


def _own_version() -> str:
    try:
        return metadata.version("gesture-apps")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CLIError as e:
        print(f"gesture: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
