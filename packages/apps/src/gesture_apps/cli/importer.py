"""`gesture import <system>`: turn a paper's released files into a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from gesture_apps.errors import CLIError


def add_import_command(sub, usage) -> None:
    """Register ``gesture import gesturelsm``."""
    imp = sub.add_parser(
        "import",
        help="convert released checkpoints into a bundle",
        description="Convert a paper's released checkpoints into a bundle `gesture generate` runs.",
    )
    systems = imp.add_subparsers(dest="system", metavar="SYSTEM")
    imp.set_defaults(func=usage(imp))
    lsm = systems.add_parser(
        "gesturelsm",
        help="GestureLSM (ycyentropy/GestureLSM): generator, RVQ-VAEs, mean/std, vocab.pkl",
        description=(
            "Import GestureLSM's released files. The bundle keeps the released network and "
            "generates by its test loop's rules (128-frame windows seeded by the previous 4 "
            "latents, guidance 2, the yaml's steps) without dropping the tail. Nothing is "
            "unpickled but tensors and the vocabulary's fields."
        ),
    )
    lsm.add_argument("--lsm", required=True, help="generator checkpoint (model_state_dict)")
    lsm.add_argument("--config", required=True, help="its yaml, e.g. shortcut_rvqvae_128.yaml")
    lsm.add_argument(
        "--rvq-dir", required=True, help="folder with net_300000_{upper,hands,lower}.pth"
    )
    lsm.add_argument(
        "--mean-std",
        required=True,
        help="folder with beatx_2_330_{mean,std}.npy and beatx_2_trans_{mean,std}.npy",
    )
    lsm.add_argument("--vocab", required=True, help="weights/vocab.pkl")
    lsm.add_argument("--out", required=True, help="bundle folder to write")
    lsm.set_defaults(func=cmd_import_gesturelsm)


def cmd_import_gesturelsm(args: argparse.Namespace) -> int:
    from gesture_apps.runtime.paths import check_output, inside
    from gesture_apps.systems.gesturelsm.importer import import_gesturelsm

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    check_output(
        out,
        "--out",
        files=[("--lsm", args.lsm), ("--config", args.config), ("--vocab", args.vocab)],
        folders=[("--rvq-dir", args.rvq_dir), ("--mean-std", args.mean_std)],
    )
    inputs = {
        "--lsm": args.lsm,
        "--config": args.config,
        "--vocab": args.vocab,
        "--rvq-dir": args.rvq_dir,
        "--mean-std": args.mean_std,
    }
    for flag, path in inputs.items():  # the bundle replaces --out whole
        if inside(path, out):
            raise CLIError(f"--out {out}: holds the input {flag} {path}; choose another path")
    for flag, path in (("--lsm", args.lsm), ("--config", args.config), ("--vocab", args.vocab)):
        if not Path(path).is_file():
            raise CLIError(f"{flag} {path}: file not found")
    for flag, path in (("--rvq-dir", args.rvq_dir), ("--mean-std", args.mean_std)):
        if not Path(path).is_dir():
            raise CLIError(f"{flag} {path}: folder not found")
    folder = import_gesturelsm(
        lsm=args.lsm,
        config=args.config,
        rvq_dir=args.rvq_dir,
        mean_std=args.mean_std,
        vocab=args.vocab,
        out=out,
    )
    print(f"import gesturelsm: bundle -> {folder} (run it with `gesture generate --checkpoint`)")
    return 0
