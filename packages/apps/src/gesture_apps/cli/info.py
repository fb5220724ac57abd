"""`gesture info` and `gesture presets`."""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata

LIBRARIES = ("motion-tokenizers", "flow-backbones", "gesture-data", "gesture-eval", "gesture-apps")


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


def _cmd_presets(args: argparse.Namespace) -> int:
    from gesture_apps.runtime import list_presets, presets_dir

    for name in list_presets():
        first = (presets_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
        print(f"{name:<24} {first.lstrip('# ') if first.startswith('#') else ''}")
    return 0


def add_info_commands(sub) -> None:
    """Register ``gesture info`` and ``gesture presets``."""
    info = sub.add_parser("info", help="show library versions and the compute device")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info)
    presets = sub.add_parser("presets", help="list the named config presets")
    presets.set_defaults(func=_cmd_presets)
