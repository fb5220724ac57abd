"""``gesture demo``: the whole loop, offline, at a small size.

1. the synthetic corpus (``gesture_data``'s ``make_corpus``; clips ``0..num_clips-1`` train,
   the next ``test_clips`` are held out), or BEAT2's ``train`` / ``test`` splits with
   ``data=beat2:PATH``;
2. ``train tokenizer`` -> ``train lsm`` -> ``distill`` (consistency + APT) through their Python
   APIs, into ``OUT/runs/{tokenizer,lsm,distill}/``;
3. gestures for the held-out speech from the teacher (``teacher_steps`` guided Euler steps) and
   the one-step student;
4. FGD, BC and L1div against the held-out ground truth for both models and two baselines: the
   motion of a different recording (a training clip, cut / looped to the length) and the mean
   training pose; and for the ground truth passed through the trained tokenizer
   (``tokenizer_reconstruction``), the floor any generator on these latents is held to.

Reading the numbers: FGD pools windows over the held-out clips, so real motion of another clip
is a strong baseline that tends to 0 as the held-out set grows; the generator wins on a few
clips because it follows each clip's own speech. BC rewards any speed minimum near an audio
onset: decoded motion carries a small speed ripple (about three times the capture's speed
minima per upper-body joint) and scores above the ground truth, the tokenizer reconstruction
included, so BC here says "moves with the speech", not "better than the capture".

FGD uses a tiny :class:`gesture_eval.FGDEncoder` trained here (``train_fgd_encoder``) on the
training clips, so its values are relative to that encoder and comparable only within one demo
run, not with published FGD numbers (those use EMAGE's BEAT2 encoder). Joints for BC and L1div
come from ``gesture_data``'s approximate SMPL-X rest skeleton (no SMPL-X model files needed);
BC normalises joint speeds by the per-joint mean speed of the training clips (as BEAT2's
``mean_vel`` file does).

Outputs in ``OUT``: ``metrics.json`` (``{method: {"fgd", "bc", "l1div"}}`` for ``teacher``,
``student_1step``, ``baseline_other_clip``, ``baseline_mean_pose``, ``ground_truth`` and
``tokenizer_reconstruction``),
``motion/<clip>_<method>.npz`` (BEAT2 npz), ``side_by_side.mp4`` (ground truth, teacher,
student with the speech), ``training_curves.png``, ``fgd_encoder/`` and ``runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("teacher", "student_1step", "baseline_other_clip", "baseline_mean_pose", "ground_truth")
# the ground truth through the trained tokenizer: what a perfect generator would reach
ORACLE = "tokenizer_reconstruction"
METRICS = ("fgd", "bc", "l1div")


@dataclass
class DemoConfig:
    """All sizes of the demo. ``SIZES`` holds the named ones; any field can be overridden."""

    data: str = "synthetic"  # or beat2:PATH
    train_split: str = "train"  # BEAT2: the split the models (and the FGD encoder) train on
    test_split: str = "test"  # BEAT2: the held-out split
    num_clips: int = 48  # synthetic training clips
    test_clips: int = 4  # held-out clips (synthetic: the next indices; BEAT2: the test split)
    seconds: float = 8.0  # synthetic training clip length
    test_seconds: float = 10.0  # synthetic held-out clip length (BC trims 2 s at each end)
    seed: int = 0
    pose_length: int = 32
    stride: int = 8
    tokenizer_steps: int = 1200
    lsm_steps: int = 1500
    lsm_batch: int = 16
    lsm_lr: float = 2e-3
    distill_pairs: int = 512
    distill_steps: int = 200
    apt_steps: int = 20
    teacher_steps: int = 20
    guidance: float = 2.0
    fgd_steps: int = 400
    render: bool = True
    size: str = "default"
    extra: dict[str, list[str]] = field(default_factory=dict)  # recipe -> KEY=VALUE overrides


SIZES: dict[str, dict[str, Any]] = {
    "default": {},
    # the test-suite size: still enough data and steps for the model to beat the baselines
    "tiny": dict(
        num_clips=32,
        test_clips=3,
        tokenizer_steps=400,
        lsm_steps=1000,
        distill_pairs=128,
        distill_steps=100,
        apt_steps=5,
        fgd_steps=200,
    ),
}


def demo_config(size: str = "default", **overrides: Any) -> DemoConfig:
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, found {size!r}")
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown demo setting(s) {unknown}; known: {sorted(fields)}")
    return DemoConfig(**{**SIZES[size], "size": size, **overrides})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lsm_steps=100", "render=false"]`` -> typed values for :func:`demo_config`."""
    import yaml

    types = {f.name: f.type for f in dataclasses.fields(DemoConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in types or key in ("extra", "size"):
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of the demo settings")
        value = yaml.safe_load(text) if types[key] != "str" else text
        want = {"int": int, "float": (int, float), "bool": bool}.get(str(types[key]))
        wrong = want is not None and not isinstance(value, want)
        if wrong or (isinstance(value, bool) and types[key] in ("int", "float")):
            raise ValueError(f"{key}: expected {types[key]}, found {text!r}")
        out[key] = float(value) if types[key] == "float" else value
    return out


# ----- data --------------------------------------------------------------------------------


@dataclass
class Clip:
    clip_id: str
    poses: np.ndarray  # (T, 165) axis-angle
    trans: np.ndarray  # (T, 3)
    audio: np.ndarray  # (N,) 16 kHz
    words: list
    source: Any = None  # the gesture_data Beat2Clip


def _held_out(cfg: DemoConfig) -> tuple[list[Clip], list[np.ndarray]]:
    """(held-out clips, training-clip poses) for the FGD encoder, mean pose and mean speed."""
    if cfg.data == "synthetic":
        from gesture_data.datasets.synthetic import make_clip

        def clip(i: int, seconds: float) -> Clip:
            c = make_clip(i, seconds, cfg.seed)
            return Clip(c.clip_id, c.poses, c.trans, c.audio, c.words, c)

        train = [clip(i, cfg.seconds).poses for i in range(cfg.num_clips)]
        test = [clip(cfg.num_clips + k, cfg.test_seconds) for k in range(cfg.test_clips)]
        return test, train
    from gesture_data.datasets.beat2 import list_clips, load_clip

    root = Path(cfg.data.split(":", 1)[1]).expanduser()
    tests = list_clips(root, split=cfg.test_split)[: cfg.test_clips]
    # FGD encoder, mean pose, mean speed and the other-recording baseline: a bounded sample
    trains = list_clips(root, split=cfg.train_split)[: max(cfg.num_clips, 16)]
    if not tests or not trains:
        raise ValueError(
            f"{root}: no clips in split {cfg.train_split!r} or {cfg.test_split!r} "
            "(set train_split= / test_split=)"
        )
    test = []
    for cid in tests:
        c = load_clip(root, cid)
        test.append(Clip(c.clip_id, c.poses, c.trans, c.audio, c.words, c))
    return test, [load_clip(root, cid).poses for cid in trains]


# ----- training ----------------------------------------------------------------------------


def _data_overrides(cfg: DemoConfig, cache: Path) -> list[str]:
    split = [f"data.split={cfg.train_split}"] if cfg.data != "synthetic" else []
    return [
        *split,
        f"data.source={cfg.data}",
        f"data.num_clips={cfg.num_clips}",
        f"data.seconds={cfg.seconds}",
        f"data.seed={cfg.seed}",
        f"data.pose_length={cfg.pose_length}",
        f"data.stride={cfg.stride}",
        f"data.cache_dir={cache}",
    ]


def _schedule(steps: int) -> list[str]:
    """``steps`` training steps, one checkpoint at the end, ~20 log lines."""
    return [
        f"train.max_steps={steps}",
        f"train.checkpoint_every={max(1, steps)}",
        f"train.log_every={max(1, steps // 20)}",
    ]


def train_models(cfg: DemoConfig, runs: Path, progress: bool = False) -> dict[str, Any]:
    """tokenizer -> lsm -> distill; returns the folders and the loss histories."""
    from ..runtime import load_config
    from . import distill, lsm, tokenizer

    cache = runs / "cache"
    data = _data_overrides(cfg, cache)
    t0 = time.perf_counter()
    tok_cfg = load_config(
        tokenizer.TokenizerRecipeConfig,
        "tokenizer_demo",
        [
            *data,
            *_schedule(cfg.tokenizer_steps),
            *cfg.extra.get("tokenizer", []),
        ],
    )
    tok = tokenizer.run(tok_cfg, runs / "tokenizer", progress=progress)
    t1 = time.perf_counter()
    lsm_cfg = load_config(
        lsm.LSMRecipeConfig,
        "lsm_demo",
        [
            *data,
            f"tokenizer={(runs / 'tokenizer').resolve()}",
            *_schedule(cfg.lsm_steps),
            f"train.batch_size={cfg.lsm_batch}",
            f"train.lr={cfg.lsm_lr}",
            f"sample.guidance={cfg.guidance}",
            *cfg.extra.get("lsm", []),
        ],
    )
    gen = lsm.run(lsm_cfg, runs / "lsm", progress=progress)
    t2 = time.perf_counter()
    dist_cfg = load_config(
        distill.DistillRecipeConfig,
        "distill_gesturelsm",
        [
            *data,
            f"teacher.path={(runs / 'lsm').resolve()}",
            f"consistency.num_pairs={cfg.distill_pairs}",
            f"consistency.teacher_steps={cfg.teacher_steps}",
            f"consistency.guidance={cfg.guidance}",
            *_schedule(cfg.distill_steps),
            f"train.batch_size={min(64, cfg.distill_pairs)}",
            "train.lr=5.0e-4",
            f"train.warmup_steps={max(1, cfg.distill_steps // 10)}",
            "train.ema_decay=0.9",
            f"apt.steps={cfg.apt_steps}",
            f"apt.batch_size={min(16, cfg.distill_pairs)}",
            f"apt.checkpoint_every={max(1, cfg.apt_steps)}",
            "apt.ema_decay=0.9",
            f"eval_samples={min(64, cfg.distill_pairs)}",
            *cfg.extra.get("distill", []),
        ],
    )
    dist = distill.run(dist_cfg, runs / "distill", progress=progress)
    t3 = time.perf_counter()
    return {
        "teacher": runs / "lsm" / "lsm",
        "student": runs / "distill" / "student",
        "history": {
            "tokenizer": tok.history,
            "lsm": gen.history,
            "distill (stage 1)": dist.stage1.history,
        },
        "seconds": {"tokenizer": t1 - t0, "lsm": t2 - t1, "distill": t3 - t2},
        "energy_distance": dist.metrics,
    }


# ----- evaluation --------------------------------------------------------------------------


def reconstruct(bundle, clip: Clip) -> np.ndarray:
    """The clip's motion encoded and decoded by the bundle's tokenizer: poses ``(T, 165)``
    (the last frame repeated up to the tokenizer's downsampling factor, then cropped)."""
    import torch

    from gesture_data.datasets.windows import WindowDataset, collate, prepare_clip
    from motion_tokenizers import pad_to_multiple

    from ..pipelines import decode_motion
    from .tokenizer import DATA_KEYS

    prepared = prepare_clip(clip.source)
    t = prepared["rot6d"].shape[0]
    item = collate([WindowDataset([prepared], t, t, normalizer=bundle.normalizer)[0]])
    tok, f = bundle.tokenizer, bundle.spec["factor"]
    parts = {n: pad_to_multiple(item[DATA_KEYS[n]], f)[0] for n in tok.part_names}
    with torch.no_grad():
        return decode_motion(bundle, tok.encode_continuous(parts), t).poses


def _fit_length(poses: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // poses.shape[0])
    return np.concatenate([poses] * reps)[:n]


def evaluate_methods(
    preds: dict[str, list[np.ndarray]],
    test: list[Clip],
    encoder,
    mean_velocity: np.ndarray,
) -> dict[str, dict[str, float]]:
    """``{method: {"fgd", "bc", "l1div"}}`` over the held-out clips (gesture_eval.evaluate,
    evaltools conventions; joints from the approximate skeleton, root at the origin)."""
    from gesture_eval import evaluate

    from ..pipelines import joints_approx

    gt = [c.poses for c in test]
    out = {}
    for name, poses in preds.items():
        r = evaluate(
            poses,
            gt,
            audios=[c.audio for c in test],
            pred_joints=[joints_approx(p) for p in poses],
            fgd_encoder=encoder,
            mean_velocity=mean_velocity,
            variants=["evaltools"],
        )["variants"]["evaltools"]
        out[name] = {k: float(r[k]) for k in METRICS}
    return out


def mean_speed(poses: list[np.ndarray], fps: int = 30) -> np.ndarray:
    """Per-joint mean speed (55,) of the training clips (BEAT2's ``mean_vel`` analogue)."""
    from ..pipelines import joints_approx, mean_joint_speed

    return mean_joint_speed([joints_approx(p) for p in poses], fps)


# ----- outputs -----------------------------------------------------------------------------


def plot_curves(history: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2))
    for ax, (name, rows) in zip(np.atleast_1d(axes), history.items(), strict=True):
        pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if pts and min(p[1] for p in pts) > 0 else "linear")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def render_side_by_side(path: Path, clip: Clip, motions: dict[str, np.ndarray]) -> Path:
    from gesture_data.render import render_motion

    from ..pipelines import joints_approx

    joints = [joints_approx(p, clip.trans[: p.shape[0]]) for p in motions.values()]
    return render_motion(
        joints, path, fps=30, audio=clip.audio, sample_rate=16000, titles=list(motions)
    )


def _table(metrics: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gesture demo (held-out clips)")
    table.add_column("method")
    for name in ("FGD (lower is better)", "BC", "L1div"):
        table.add_column(name, justify="right")
    for method, m in metrics.items():
        table.add_row(method, *(f"{m[k]:.4f}" for k in METRICS))
    Console().print(table)


def run(
    cfg: DemoConfig, out_dir: str | Path = "demo_out", *, progress: bool = False, show=True
) -> dict[str, Any]:
    """The whole demo into ``out_dir``; returns ``{"metrics", "seconds", ...}``. Runs on one
    torch thread (the models are tiny: extra threads only wait on each other)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(cfg, out_dir, progress=progress, show=show)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig, out_dir: str | Path, *, progress: bool, show: bool) -> dict[str, Any]:
    import torch

    from gesture_eval import FGDEncoder, train_fgd_encoder

    from ..pipelines import Motion, generate_motion, load_lsm, write_beat2_npz

    start = time.perf_counter()
    if cfg.test_clips < 1 or cfg.num_clips < 1:
        raise ValueError("num_clips and test_clips must be at least 1")
    test, train_poses = _held_out(cfg)  # raises before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained = train_models(cfg, out / "runs", progress=progress)

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    window = 64 if min(p.shape[0] for p in train_poses) >= 64 else 32
    encoder = train_fgd_encoder(
        train_poses, encoder=FGDEncoder.tiny(), steps=cfg.fgd_steps, window=window, seed=cfg.seed
    )
    encoder.save_pretrained(out / "fgd_encoder")
    t_fgd = time.perf_counter() - t0

    t0 = time.perf_counter()
    teacher = load_lsm(trained["teacher"])
    student = load_lsm(trained["student"])
    mean_pose = np.concatenate(train_poses).mean(axis=0, dtype=np.float64).astype(np.float32)
    preds: dict[str, list[np.ndarray]] = {m: [] for m in (*METHODS, ORACLE)}
    for i, c in enumerate(test):
        words = c.words or None
        mt = generate_motion(
            teacher, c.audio, words, steps=cfg.teacher_steps, guidance=cfg.guidance, seed=i
        )
        ms = generate_motion(student, c.audio, words, steps=1, guidance=1.0, seed=i)
        rec = reconstruct(teacher, c)
        T = min(mt.num_frames, c.poses.shape[0], rec.shape[0])
        preds[ORACLE].append(rec[:T])
        # a training recording's motion: a permutation of the held-out clips would pool to the
        # very same feature set as the ground truth (FGD 0)
        other = train_poses[i % len(train_poses)]
        preds["teacher"].append(mt.poses[:T])
        preds["student_1step"].append(ms.poses[:T])
        preds["baseline_other_clip"].append(_fit_length(other, T))
        preds["baseline_mean_pose"].append(np.repeat(mean_pose[None], T, axis=0))
        preds["ground_truth"].append(np.asarray(c.poses[:T], np.float32))
        trans = {"teacher": mt.trans, "student_1step": ms.trans, "ground_truth": c.trans}
        trans = {k: v[:T] for k, v in trans.items()}
        for m in METHODS:
            write_beat2_npz(
                out / "motion" / f"{c.clip_id}_{m}.npz",
                Motion(preds[m][-1], trans.get(m, np.zeros((T, 3))), np.zeros((T, 100))),
            )
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    metrics = evaluate_methods(preds, test, encoder, mean_speed(train_poses))
    t_eval = time.perf_counter() - t0
    bad = [(m, k) for m, v in metrics.items() for k, x in v.items() if not np.isfinite(x)]
    if bad:
        raise ValueError(f"non-finite metrics: {bad}")
    text = json.dumps(metrics, indent=2)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")

    t0 = time.perf_counter()
    plot_curves(trained["history"], out / "training_curves.png")
    if cfg.render:
        shown = ("ground_truth", "teacher", "student_1step")
        render_side_by_side(out / "side_by_side.mp4", test[0], {m: preds[m][0] for m in shown})
    t_out = time.perf_counter() - t0
    seconds = {
        **trained["seconds"],
        "fgd_encoder": t_fgd,
        "generate": t_gen,
        "evaluate": t_eval,
        "outputs": t_out,
        "total": time.perf_counter() - start,
    }
    info = {
        "config": dataclasses.asdict(cfg),
        "seconds": seconds,
        "distill_energy_distance": trained["energy_distance"],
        "held_out": [c.clip_id for c in test],
        "fgd_encoder": "tiny FGDEncoder trained in this run on the training clips "
        f"({cfg.fgd_steps} steps); FGD is relative to it",
    }
    (out / "demo_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if show:
        _table(metrics)
        print(f"demo: {seconds['total']:.1f} s; outputs in {out}")
    return {"metrics": metrics, "seconds": seconds, "out": out}


# ----- `gesture demo` ------------------------------------------------------------------------


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
        "--size", default="default", choices=sorted(SIZES), help="named size (default: default)"
    )
    p.add_argument("--data", help="synthetic (default) or beat2:PATH")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
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
