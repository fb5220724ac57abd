"""``gesture eval`` (FGD / BC / L1div of generated BEAT2 npz files against ground truth) and
``gesture render`` (stick-figure video of a BEAT2 npz).

Kept out of ``cli.py`` so each subcommand is one call there; torch is imported only when a
command runs.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: numpy loads when a command runs
    import numpy as np

# the reference implementations gesture_eval reproduces (see its README)
VARIANTS = ("evaltools", "cvpr24")


# ----- gesture eval ------------------------------------------------------------------------


def add_eval_command(sub) -> None:
    """Register ``gesture eval`` on the top-level subparsers."""
    p = sub.add_parser(
        "eval",
        help="FGD, BC and L1div of generated motion against ground truth",
        description=(
            "Score predictions (--pred: a BEAT2 npz or a folder of them) against ground truth "
            "(--gt, matched by file name stem; lengths cut to the shorter, as the reference "
            "evaltools do) with gesture_eval.evaluate. FGD needs --fgd-encoder (a "
            "save_pretrained folder, or EMAGE's AESKConv_240_100.bin); BC needs --audio (a wav "
            "or a folder of wavs named like the npz files) and normalises joint speeds by "
            "--mean-velocity (BEAT2's mean_vel_smplxflame_30.npy) or, without it, by the mean "
            "speed of the ground truth. Joints come from --smplx-model (SMPL-X npz, each "
            "variant's convention) or gesture_data's approximate rest skeleton. Metrics that "
            "cannot be computed are skipped with the reason."
        ),
    )
    p.add_argument(
        "system",
        nargs="?",
        choices=["omniges", "t2m"],
        help="omniges: score every task of an Omniges bundle (--checkpoint) on held-out windows; "
        "t2m: HumanML3D metrics (FID, R-precision, MM-Dist, diversity) of a caption-to-motion "
        "bundle (--bundle; without it, of the ground truth) with --evaluator on --data DIR",
    )
    p.add_argument("--pred", metavar="P", help="predicted npz or folder")
    p.add_argument("--gt", metavar="G", help="ground-truth npz or folder")
    p.add_argument("--checkpoint", metavar="BUNDLE", help="omniges: the bundle or run folder")
    p.add_argument(
        "--data",
        default="synthetic",
        help="omniges: synthetic (held-out clips of the built-in corpus, seed 1) or beat2:PATH",
    )
    p.add_argument("--clips", type=int, default=4, help="omniges: number of held-out clips")
    p.add_argument("--tasks", help="omniges: comma-separated tasks (default: all six)")
    p.add_argument("--steps", type=int, help="omniges: sampling steps (default: the bundle's)")
    p.add_argument("--guidance", type=float, help="omniges: guidance (default: the bundle's)")
    p.add_argument(
        "--mismatched",
        action="store_true",
        help="omniges: also score with every condition taken from another clip (the baseline)",
    )
    p.add_argument("--evaluator", metavar="DIR", help="t2m: `gesture train t2m-evaluator` run")
    p.add_argument("--bundle", metavar="DIR", help="t2m: the generator bundle to score")
    p.add_argument("--split", default="test", help="t2m: split of --data to score (default test)")
    p.add_argument("--replications", type=int, default=1, help="t2m: reshuffled repeats")
    p.add_argument("--batch-size", type=int, default=32, help="t2m: R-precision batch (32)")
    p.add_argument("--seed", type=int, default=0, help="t2m: seed of shuffles and generation")
    p.add_argument(
        "--mm-samples",
        type=int,
        default=0,
        help="t2m: multimodality over this many captions (the reference: 100; 0 leaves it out)",
    )
    p.add_argument("--mm-repeats", type=int, default=30, help="t2m: generations per caption (30)")
    p.add_argument("--audio", metavar="A", help="speech wav or folder of wavs (enables BC)")
    p.add_argument(
        "--fgd-encoder", metavar="DIR", help="FGDEncoder save_pretrained folder or EMAGE .bin"
    )
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="evaltools (PantoMatrix emage_evaltools) or cvpr24 (EMAGE metric.py); "
        "repeatable (default: both)",
    )
    p.add_argument("--mean-velocity", metavar="FILE.npy", help="(55,) per-joint mean speed for BC")
    p.add_argument(
        "--smplx-model",
        metavar="PATH",
        help="SMPL-X model .npz file (e.g. SMPLX_NEUTRAL_2020.npz) for the joints",
    )
    p.add_argument("--out", metavar="metrics.json", help="also write the metrics as JSON")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from gesture_apps.errors import CLIError
    from gesture_apps.evaluation.files import pair_files, read_motion_npz

    if args.system == "omniges":
        return _eval_omniges(args)
    if args.system == "t2m":
        return _eval_t2m(args)
    for flag in ("pred", "gt"):
        if getattr(args, flag) is None:
            raise CLIError(f"--{flag}: required (or name a system: gesture eval omniges)")

    variants = list(dict.fromkeys(args.variant or VARIANTS))
    for v in variants:
        if v not in VARIANTS:
            raise CLIError(f"--variant {v!r}: expected one of {', '.join(VARIANTS)}")
    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or out.suffix.lower() != ".json"):
        raise CLIError(f"--out {out}: expected a .json file name")
    if out is not None:
        from gesture_apps.runtime.paths import check_output

        inputs = [(f"--{k.replace('_', '-')}", getattr(args, k)) for k in _EVAL_INPUTS]
        check_output(out, "--out", files=inputs, folders=[("--fgd-encoder", args.fgd_encoder)])
    pairs = pair_files(args.pred, args.gt, args.audio)
    pred_files = [read_motion_npz(p.pred) for p in pairs]
    pred = [m["poses"] for m in pred_files]
    gt_files = [read_motion_npz(p.gt) for p in pairs]
    gt = [g["poses"] for g in gt_files]
    fps = {g["fps"] for g in gt_files}
    if len(fps) != 1 or not float(next(iter(fps))).is_integer():
        raise CLIError(f"--gt {args.gt}: frame rates differ or are not whole ({sorted(fps)})")
    for p, m, g in zip(pairs, pred_files, gt_files, strict=True):
        # frames are compared one to one: a 60 fps prediction against 30 fps ground truth
        # would be scored at twice its speed and half its length without a word
        if m["fps"] != g["fps"]:
            raise CLIError(
                f"{p.pred}: mocap_frame_rate {m['fps']:g} fps differs from the ground truth's "
                f"{g['fps']:g} fps ({p.gt}); resample one of them"
            )
    fps = int(fps.pop())
    audios = None
    if args.audio is not None:
        from gesture_data.datasets.beat2 import load_audio

        audios = [load_audio(p.audio) for p in pairs]  # resampled to 16 kHz like the references
    encoder = _load_fgd_encoder(args.fgd_encoder) if args.fgd_encoder else None
    rest = _smplx_rest(args.smplx_model) if args.smplx_model else None
    mean_velocity, mv_source = _mean_velocity(args.mean_velocity, gt, rest, fps)

    import gesture_eval
    from gesture_apps.data.motion import joints_approx

    result = gesture_eval.evaluate(
        pred,
        gt,
        audios=audios,
        pred_joints=None if rest is not None else [joints_approx(p) for p in pred],
        smplx_model=args.smplx_model if rest is not None else None,
        fgd_encoder=encoder,
        mean_velocity=mean_velocity,
        variants=variants,
        fps=fps,
    )
    if "fgd" in result["skipped"] and encoder is None:
        result["skipped"]["fgd"] = "needs --fgd-encoder"
    if "bc" in result["skipped"] and audios is None:
        result["skipped"]["bc"] = "needs --audio"
    result["inputs"] = {
        "pred": str(args.pred),
        "gt": str(args.gt),
        "audio": None if args.audio is None else str(args.audio),
        "fgd_encoder": args.fgd_encoder,
        "joints": args.smplx_model or "gesture_data.skeleton.smplx_joints_approx",
        "mean_velocity": mv_source,
        "sequences": [p.stem for p in pairs],
    }
    _print_table(result)
    if out is not None:
        from gesture_apps.runtime import write_json

        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        print(f"eval: {len(pairs)} sequences -> {out}")
    return 0


# every input of `gesture eval` that --out must not overwrite
_EVAL_INPUTS = ("pred", "gt", "audio", "fgd_encoder", "mean_velocity", "smplx_model")


def _mean_velocity(
    path: str | None, gt: list[np.ndarray], rest, fps: int
) -> tuple[np.ndarray, str]:
    """BC's (55,) per-joint speed normaliser: the given .npy, else the ground truth's mean."""
    import numpy as np

    from gesture_apps.data.motion import joints_approx
    from gesture_data.motion import MotionFileError
    from gesture_eval import mean_joint_speed

    if path is not None:
        try:
            mv = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise MotionFileError(path, f"cannot read mean velocity ({e})") from None
        mv = np.asarray(mv, np.float64).reshape(-1)
        if mv.shape != (55,) or not np.isfinite(mv).all() or (mv <= 0).any():
            raise MotionFileError(path, "mean velocity must be 55 positive finite values")
        return mv, str(path)
    if rest is not None:
        from gesture_eval import smplx_joints

        joints = [smplx_joints(g, rest) for g in gt]
    else:
        joints = [joints_approx(g) for g in gt]
    return mean_joint_speed(joints, fps), "ground-truth mean joint speed"


def _load_fgd_encoder(path: str):
    import contextlib
    import io

    from gesture_apps.errors import CLIError
    from gesture_eval import FGDEncoder

    p = Path(path)
    if not p.exists():
        raise CLIError(f"--fgd-encoder {p}: not found")
    if p.is_dir() and not (p / "config.json").is_file():
        raise CLIError(f"--fgd-encoder {p}: not an FGDEncoder folder (no config.json)")
    try:
        if p.is_file():
            encoder = FGDEncoder.from_emage_checkpoint(p).eval()
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub may print a line
                encoder = FGDEncoder.from_pretrained(p).eval()
            _check_all_keys(encoder, p / "model.safetensors")
    except CLIError:
        raise
    except Exception as e:  # torch.load / safetensors / json raise many types
        message = " ".join(str(e).split())[:300]
        raise CLIError(f"--fgd-encoder {p}: cannot load ({message})") from None
    for name, t in encoder.state_dict().items():
        if t.is_floating_point() and not t.isfinite().all():  # every FGD would be NaN
            raise CLIError(f"--fgd-encoder {p}: tensor {name!r} has non-finite values")
    return encoder


def _check_all_keys(encoder, weights: Path) -> None:
    """An FGD from a partly loaded encoder is a number about nothing: every tensor of the
    model must come from the file, and the file must hold nothing else."""
    from safetensors import safe_open

    from gesture_apps.errors import CLIError

    if not weights.is_file():
        raise CLIError(f"--fgd-encoder {weights}: file not found")
    with safe_open(str(weights), framework="pt") as f:
        stored = set(f.keys())
    expected = set(encoder.state_dict())
    if stored != expected:
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        raise CLIError(
            f"--fgd-encoder {weights}: does not match FGDEncoder ({len(missing)} tensors "
            f"missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )


def _smplx_rest(path: str):
    from gesture_apps.errors import CLIError
    from gesture_eval import SmplxRest

    if not Path(path).exists():
        raise CLIError(f"--smplx-model {path}: not found")
    try:
        return SmplxRest(path)
    except (ValueError, OSError):
        raise
    except Exception as e:  # numpy raises BadZipFile, KeyError, EOFError for foreign files
        message = " ".join(str(e).split())[:200]
        raise CLIError(f"--smplx-model {path}: not an SMPL-X model file ({message})") from None


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    variants = result["variants"]
    metrics = list(dict.fromkeys(k for r in variants.values() for k in r))
    table = Table(
        title=f"{result['num_sequences']} sequences, {result['num_frames']} frames",
        title_justify="left",
    )
    table.add_column("metric")
    for v in variants:
        table.add_column(v, justify="right")
    for m in metrics:
        table.add_row(m, *(f"{variants[v][m]:.4f}" if m in variants[v] else "-" for v in variants))
    console = Console(highlight=False)
    console.print(table)
    for m, why in result["skipped"].items():
        console.print(f"skipped {m}: {why}")


# ----- gesture render ----------------------------------------------------------------------


def _eval_omniges(args: argparse.Namespace) -> int:
    """``gesture eval omniges``: per-task metrics of a bundle, JSON out."""
    import math

    from gesture_apps.errors import CLIError
    from gesture_apps.systems.omniges.config import TASKS

    if not args.checkpoint:
        raise CLIError("--checkpoint: required (the Omniges bundle or run folder)")
    tasks = [t.strip() for t in (args.tasks or ",".join(TASKS)).split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise CLIError(f"--tasks: expected a comma-separated subset of {','.join(TASKS)}")
    if args.clips < 2:
        raise CLIError(f"--clips must be at least 2, found {args.clips}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise CLIError(f"--steps must be between 1 and 1000, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or out.suffix.lower() != ".json"):
        raise CLIError(f"--out {out}: expected a .json file name")
    from gesture_apps.systems.omniges.evaluate import eval_windows, evaluate_omniges
    from gesture_apps.systems.omniges.pipeline import OmnigesPipeline

    pipe = OmnigesPipeline.from_pretrained(args.checkpoint)
    if args.data == "synthetic":
        from gesture_data.datasets.synthetic import make_corpus

        clips = make_corpus(args.clips, 6.0, seed=1)
    elif args.data.startswith("beat2:"):
        from gesture_data.datasets.beat2 import find_root, list_clips, load_clip

        root = find_root(Path(args.data.split(":", 1)[1]).expanduser())
        clips = [load_clip(root, c) for c in list_clips(root, split="test")[: args.clips]]
    else:
        raise CLIError(f"--data: expected synthetic or beat2:PATH, found {args.data!r}")
    windows = eval_windows(clips, pipe.pose_length)
    kw = dict(
        steps=args.steps,
        guidance=args.guidance,
        fgd_encoder=_load_fgd_encoder(args.fgd_encoder) if args.fgd_encoder else None,
        text_encoder=_sentence_encoder(),
    )
    result = {"tasks": evaluate_omniges(pipe, windows, tasks, **kw), "windows": len(windows)}
    if args.mismatched:
        result["mismatched"] = evaluate_omniges(pipe, windows, tasks, mismatched=True, **kw)
    for task, metrics in result["tasks"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"{task}: {shown}")
    if out is not None:
        from gesture_apps.runtime import write_json

        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        print(f"eval omniges: {len(windows)} windows -> {out}")
    return 0


def _eval_t2m(args: argparse.Namespace) -> int:
    """``gesture eval t2m``: HumanML3D metrics of a bundle (or of the ground truth)."""
    from gesture_apps.errors import CLIError

    if not args.evaluator:
        raise CLIError("--evaluator: required (a `gesture train t2m-evaluator` run or bundle)")
    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise CLIError(f"--data {args.data}: expected a HumanML3D-layout folder")
    if args.replications < 1 or args.batch_size < 2:
        raise CLIError("--replications must be >= 1 and --batch-size >= 2")
    if args.mm_samples < 0 or (args.mm_samples and args.mm_repeats < 2):
        raise CLIError("--mm-samples must be >= 0 and --mm-repeats >= 2")
    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or out.suffix.lower() != ".json"):
        raise CLIError(f"--out {out}: expected a .json file name")
    from gesture_apps.systems.t2m_gpt.evaluate import evaluate_t2m, ground_truth_generate

    if args.bundle:
        # the generator side lands separately; import it only when a bundle is scored
        try:
            from gesture_apps.systems.t2m_gpt.pipeline import generate_from_bundle
        except ImportError as e:
            raise CLIError(f"--bundle: the T2M-GPT generator is not available ({e})") from None

        calls = itertools.count()

        def generate(captions, lengths):
            # a new seed per call: multimodality's repeats must be different draws
            seed = args.seed + next(calls)
            return generate_from_bundle(args.bundle, captions, lengths, seed=seed)

        scored = str(args.bundle)
    else:
        generate, scored = ground_truth_generate(data, args.split), "ground truth"
    result = evaluate_t2m(
        generate,
        data,
        args.evaluator,
        split=args.split,
        replications=args.replications,
        seed=args.seed,
        batch_size=args.batch_size,
        mm_samples=args.mm_samples,
        mm_repeats=args.mm_repeats,
    )
    print(f"t2m ({scored}, {args.split}): " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if out is not None:
        from gesture_apps.runtime import write_json

        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, {"scored": scored, "split": args.split, "metrics": result})
    return 0


def _sentence_encoder():
    """all-MiniLM-L6-v2 from its PyPI wheel for the text tasks' embedding similarity, or None
    when the ``pretrained`` extra is not installed (the metric is then left out)."""
    try:
        from gesture_data.features.text import TextEncoder

        return TextEncoder.default()
    except ImportError:
        return None
