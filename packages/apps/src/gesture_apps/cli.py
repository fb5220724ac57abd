"""The ``gesture`` command line.

Subcommands are added as the trainers land; every one has ``--help``, prints a one-line error and
exits with status 2 on bad input, never a traceback (set ``GESTURE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("motion-tokenizers", "flow-backbones", "gesture-data", "gesture-eval", "gesture-apps")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with the same one-line error as every other failure (argparse's default
    prints the whole usage block first, burying the line that says what is wrong)."""

    def error(self, message: str):
        self.exit(2, f"gesture: error: {message} (see `{self.prog} --help`)\n")


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
    from .runtime import list_presets, presets_dir

    for name in list_presets():
        first = (presets_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
        print(f"{name:<24} {first.lstrip('# ') if first.startswith('#') else ''}")
    return 0


def _add_train_args(p: argparse.ArgumentParser, recipe: str, default_preset: str) -> None:
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
    p.add_argument("--out", help=f"run folder (default runs/{recipe}, or the resumed run's)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint folder or run folder to continue")
    p.add_argument("--steps", type=int, help="stop after this many more steps (default: to max)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as yaml and exit"
    )
    p.set_defaults(recipe_name=recipe, default_preset=default_preset)


def _resolve_train_config(args: argparse.Namespace, cls):
    """(config, out_dir, checkpoint or None) from the preset / resumed run and overrides."""
    from .runtime import from_dict, preset_path, read_preset, read_run_config, resolve_checkpoint
    from .runtime.config import apply_overrides

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
        source = preset_path(args.preset or args.default_preset)
        raw = read_preset(str(source))
    recipe = raw.get("recipe", args.recipe_name)
    if recipe != args.recipe_name:
        raise CLIError(f"{source}: is a {recipe!r} config, not {args.recipe_name!r}")
    # a saved run config must be whole: a default standing in for a lost key would resume a
    # different run; a preset may leave keys to their defaults
    cfg = from_dict(
        cls, apply_overrides(raw, overrides), source=source, complete=checkpoint is not None
    )
    if args.out:
        out = Path(args.out)
    elif checkpoint is not None and checkpoint.parent.name == "checkpoints":
        out = checkpoint.parent.parent
    else:
        out = Path("runs") / args.recipe_name
    if checkpoint is None and (out / "checkpoints" / "latest.txt").is_file():
        raise CLIError(
            f"{out} already holds a run; pass --resume {out} to continue it or another --out"
        )
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be at least 1, found {args.steps}")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file, not a run folder")
    from .paths import check_output

    # the run fills out/ (checkpoints/, the export); it must not be one of the models it reads
    inputs = [(k, getattr(cfg, k, None)) for k in ("tokenizer", "teacher")]
    check_output(out, "--out", folders=[(k, p) for k, p in inputs if p])
    return cfg, out, checkpoint


def _run_train_recipe(args: argparse.Namespace, module, config_cls, export: str) -> int:
    """Shared body of ``gesture train <recipe>``: config, ``--print-config``, run, summary."""
    from .runtime import to_dict

    cfg, out, checkpoint = _resolve_train_config(args, config_cls)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    _setup_logging()
    result = module.run(
        cfg, out, resume=checkpoint, steps=args.steps, progress=not args.no_progress
    )
    if os.environ.get("RANK", "0") != "0":
        return 0  # one summary line per run, not per process
    loss = result.metrics.get("loss")
    shown = f"loss {loss:.4f}, " if loss is not None else ""
    print(
        f"{args.recipe_name}: step {result.step}/{cfg.train.max_steps}, {shown}"
        f"checkpoint {result.checkpoint}, export {out / export}"
    )
    return 0


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from .recipes import tokenizer

    return _run_train_recipe(args, tokenizer, tokenizer.TokenizerRecipeConfig, "tokenizer")


def _cmd_train_lsm(args: argparse.Namespace) -> int:
    from .recipes import lsm

    if args.tokenizer:
        # absolute, so `--resume` works from another folder
        args.overrides = [*args.overrides, f"tokenizer={Path(args.tokenizer).resolve()}"]
    return _run_train_recipe(args, lsm, lsm.LSMRecipeConfig, "lsm")


def _cmd_train_reflow(args: argparse.Namespace) -> int:
    from .recipes import reflow

    if args.teacher:
        args.overrides = [*args.overrides, f"teacher={Path(args.teacher).resolve()}"]
    return _run_train_recipe(args, reflow, reflow.ReflowRecipeConfig, "lsm")


def _cmd_generate(args: argparse.Namespace) -> int:
    from .pipelines import generate, write_beat2_npz

    out = Path(args.out)
    if out.suffix != ".npz" or out.is_dir():
        raise CLIError(f"--out {out}: expected a .npz file name")
    from .pipelines import MAX_STEPS

    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise CLIError(f"--steps must be between 1 and {MAX_STEPS}, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    if args.render and Path(args.render).suffix.lower() not in (".mp4", ".gif"):
        raise CLIError(f"--render {args.render}: expected a .mp4 or .gif file name")
    from .paths import check_output
    from .pipelines import find_export

    inputs = [("--audio", args.audio), ("--textgrid", args.textgrid)]
    try:  # the export generation reads whole (lsm/: config, weights, normaliser, tokenizer)
        export = find_export(args.checkpoint)
    except ValueError:
        export = None  # reported when the model is loaded, after the audio is checked
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
        from .pipelines import read_audio, render_video

        render_video(args.render, motion, read_audio(args.audio))
        shown += f", {args.render}"
    write_beat2_npz(out, motion)
    print(shown)
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


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
    info = sub.add_parser("info", help="show library versions and the compute device")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info)

    presets = sub.add_parser("presets", help="list the named config presets")
    presets.set_defaults(func=_cmd_presets)

    train = sub.add_parser(
        "train",
        help="train a model from a config preset",
        description="Train a model. Configs are named presets plus KEY=VALUE overrides.",
    )
    train.set_defaults(func=_usage(train))
    recipes = train.add_subparsers(dest="recipe", metavar="RECIPE")
    tok = recipes.add_parser(
        "tokenizer",
        help="RVQ-VAE motion tokenizers (GestureLSM's four body parts by default)",
        description=(
            "Train RVQ-VAE motion tokenizers on the synthetic corpus (default) or BEAT2 "
            "(--data beat2:PATH). Writes OUT/checkpoints/step_*/ (resumable with --resume) "
            "and OUT/tokenizer/{model,model_ema}/ + normalizer.npz."
        ),
    )
    _add_train_args(tok, "tokenizer", "tokenizer_gesturelsm")
    tok.set_defaults(func=_cmd_train_tokenizer)
    lsm = recipes.add_parser(
        "lsm",
        help="GestureLSM audio-to-gesture shortcut model on frozen tokenizer latents",
        description=(
            "Train GestureLSM's spatial-temporal shortcut denoiser on the latents of frozen "
            "multi-part tokenizers (--tokenizer: a `gesture train tokenizer` run folder), "
            "conditioned on onset+amplitude audio, words and seed frames, on the synthetic "
            "corpus (default) or BEAT2 (--data beat2:PATH). Writes OUT/checkpoints/step_*/ and "
            "OUT/lsm/ (what `gesture generate --checkpoint` reads)."
        ),
    )
    _add_train_args(lsm, "lsm", "lsm_gesturelsm")
    lsm.add_argument("--tokenizer", metavar="DIR", help="tokenizer run folder; sets tokenizer=")
    lsm.set_defaults(func=_cmd_train_lsm)
    reflow = recipes.add_parser(
        "reflow",
        help="straighten a trained `train lsm` model on its own (noise, sample) pairs",
        description=(
            "Reflow: the teacher (--teacher: a `gesture train lsm` run) samples every training "
            "window from seeded noise (20 Euler steps, guidance 2); a student initialised from "
            "it learns the shortcut objective on these (noise, sample, condition) triples. "
            "Writes OUT/lsm/ like `train lsm` (sampled with guidance 1, 2 steps by default)."
        ),
    )
    _add_train_args(reflow, "reflow", "reflow_gesturelsm")
    reflow.add_argument("--teacher", metavar="DIR", help="`train lsm` run folder; sets teacher=")
    reflow.set_defaults(func=_cmd_train_reflow)

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
    gen.set_defaults(func=_cmd_generate)

    from .distill_cli import add_distill_command  # `gesture distill` (recipes/distill.py)

    add_distill_command(sub)

    from .eval_cli import add_eval_command, add_render_command  # `gesture eval`, `gesture render`

    add_eval_command(sub)
    add_render_command(sub)

    from .recipes.demo import add_demo_command  # `gesture demo` (recipes/demo.py)

    add_demo_command(sub)
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


if __name__ == "__main__":
    sys.exit(main())
