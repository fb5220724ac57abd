"""``gesture demo``: the whole loop, offline, at a small size.

1. the synthetic corpus (``gesture_data``'s ``make_corpus``): clips ``0..num_clips-1`` train,
   the next ``val_clips`` are the validation split, the next ``test_clips`` the held-out test
   split, and the next ``max(val_clips, test_clips)`` are "other recordings" for the baseline
   (as long as the held-out clips); or BEAT2's ``train`` / ``val`` / ``test`` splits with
   ``data=beat2:PATH`` (the other recordings are windows cropped from training takes);
2. ``train tokenizer`` -> ``train lsm`` through their Python APIs, into ``OUT/runs/``;
3. the classifier-free guidance scale is chosen from ``guidance_grid`` by the teacher's FGD on
   the validation split (the test clips play no part in it), then ``distill`` (endpoint
   regression + APT, ``distill/gesturelsm``'s ``stage1``) runs with the chosen scale;
4. gestures for the validation and the test speech from the teacher (``teacher_steps`` guided
   Euler steps) and the one-step student; FGD, BC and L1div against each split's ground truth
   for both models and two baselines: the motion of another real recording of the same length
   (never looped: a loop puts a pose jump into every sequence and inflates FGD) and the mean
   training pose; and for the ground truth passed through the trained tokenizer
   (``tokenizer_reconstruction``), the floor any generator on these latents is held to.
   The test split is only scored; the validation numbers are what choices and margins use.

Reading the numbers: FGD pools windows over the clips of a split, so real motion of another
clip is a strong baseline that tends to 0 as the split grows, and ``tokenizer_reconstruction``
(the ground truth itself through the tokenizer) is the practical floor of a generator on its
latents. Where that floor lies above the other recording's FGD (the tiny size's validation
split), a win over that baseline is not to be expected until the tokenizer improves; the demo
reports it instead of weakening the baseline. The ground truth against itself is 0 by
definition: ``fgd`` shows 0 and ``fgd_raw`` keeps the computed value, which is
``-2 * latent_dim * eps`` (the ``eps * I`` that the evaltools convention adds to both
covariances). BC rewards any speed minimum near an audio onset: it cannot tell the ground truth
from another recording of unrelated speech, and decoded motion carries a small speed ripple
(about three times the capture's speed minima per upper-body joint) that scores above the
ground truth, the tokenizer reconstruction included. BC is reported, never read as a win.

FGD uses a tiny :class:`gesture_eval.FGDEncoder` trained here (``train_fgd_encoder``) on the
training clips, so its values are relative to that encoder and comparable only within one demo
run, not with published FGD numbers (those use EMAGE's BEAT2 encoder). Joints for BC and L1div
come from ``gesture_data``'s approximate SMPL-X rest skeleton (no SMPL-X model files needed);
BC normalises joint speeds by the per-joint mean speed of the training clips (as BEAT2's
``mean_vel`` file does).

Outputs in ``OUT``: ``metrics.json`` (``test`` and ``validation``: ``{method: {"fgd", "bc",
"l1div"}}`` for ``teacher``, ``student_1step``, ``baseline_other_clip``,
``baseline_mean_pose``, ``ground_truth`` (plus ``fgd_raw``) and ``tokenizer_reconstruction``;
``selection``: the guidance grid's validation FGDs and the choice; ``fgd_ratio``: each model's
FGD over each baseline's, per split; ``notes``: how to read FGD and BC),
``motion/<clip>_<method>.npz`` (BEAT2 npz, test clips),
``side_by_side.mp4`` (ground truth, teacher, student, each along its own root translation,
with the speech), ``training_curves.png``, ``fgd_encoder/`` and ``runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gesture_apps.runtime.curves import plot_curves

logger = logging.getLogger(__name__)

METHODS = ("teacher", "student_1step", "baseline_other_clip", "baseline_mean_pose", "ground_truth")
# the ground truth through the trained tokenizer: what a perfect generator would reach
ORACLE = "tokenizer_reconstruction"
METRICS = ("fgd", "bc", "l1div")
MODELS = ("teacher", "student_1step")
BASELINES = ("baseline_other_clip", "baseline_mean_pose")

NOTES = {
    "fgd": "Frechet distance of a tiny encoder's latents (trained in this run on the training "
    "clips), pooled over the clips of a split; lower is better; comparable within one run only.",
    "ground_truth_fgd": "the ground truth against itself is 0 by definition; fgd_raw keeps the "
    "computed value, -2 * latent_dim * eps from the eps * I added to both covariances.",
    "floor": "tokenizer_reconstruction (the ground truth through the tokenizer) is the practical "
    "FGD floor of a generator on its latents; where it lies above baseline_other_clip's, a win "
    "over that baseline is not to be expected.",
    "baseline_other_clip": "real motion of another recording, at least as long as the held-out "
    "clip and cut to its length (never looped), paired with speech it was not recorded with.",
    "bc": "beat consistency rewards any joint-speed minimum near an audio onset: it scores the "
    "ground truth and another recording of unrelated speech alike, and decoded motion carries a "
    "speed ripple that scores above the capture (the tokenizer reconstruction included). It is "
    "reported, not a sign of a better model.",
    "selection": "the guidance scale is chosen by the teacher's FGD on the validation split; "
    "the test split is only scored.",
}


@dataclass
class DemoConfig:
    """All sizes of the demo. ``SIZES`` holds the named ones; any field can be overridden."""

    data: str = "synthetic"  # or beat2:PATH
    train_split: str = "train"  # BEAT2: the split the models (and the FGD encoder) train on
    val_split: str = "val"  # BEAT2: the split the choices are made on
    test_split: str = "test"  # BEAT2: the held-out split, only scored
    num_clips: int = 48  # synthetic training clips
    # 8 + 8 clips (4 before): FGD over more clips is steadier, and the margins are a few percent
    val_clips: int = 8  # validation clips (synthetic: after the training ones)
    test_clips: int = 8  # held-out clips (synthetic: after the validation ones)
    seconds: float = 8.0  # synthetic training clip length
    test_seconds: float = 10.0  # synthetic validation/held-out length (BC trims 2 s each end)
    seed: int = 0
    pose_length: int = 32
    stride: int = 8
    tokenizer_steps: int = 1200
    # chosen on the validation split (teacher FGD on 4 clips, guidance 1): 1500 steps 0.0036,
    # 3000 steps 0.0027; 5000 steps, batch 32, lr 1e-3, EMA 0.99 or a 2400-step tokenizer were
    # no better
    lsm_steps: int = 3000
    lsm_batch: int = 16
    lsm_lr: float = 2e-3
    distill_pairs: int = 512
    distill_steps: int = 200
    apt_steps: int = 20
    teacher_steps: int = 20
    # classifier-free guidance scales tried on the validation split (teacher FGD picks one)
    guidance_grid: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    fgd_steps: int = 400
    render: bool = True
    size: str = "default"
    extra: dict[str, list[str]] = field(default_factory=dict)  # recipe -> KEY=VALUE overrides


SIZES: dict[str, dict[str, Any]] = {
    "default": {},
    # the test-suite size: still enough data and steps for the model to beat the baselines
    "tiny": dict(
        num_clips=32,
        val_clips=3,
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
    cfg = DemoConfig(**{**SIZES[size], "size": size, **overrides})
    grid = cfg.guidance_grid
    if not grid or not all(
        isinstance(g, int | float) and not isinstance(g, bool) and math.isfinite(g) and g > 0
        for g in grid
    ):
        raise ValueError(f"guidance_grid: expected positive numbers, found {grid!r}")
    cfg.guidance_grid = [float(g) for g in grid]
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lsm_steps=100", "render=false", "guidance_grid=[1.5,2]"]`` -> typed values for
    :func:`demo_config`."""
    import yaml

    types = {f.name: f.type for f in dataclasses.fields(DemoConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in types or key in ("extra", "size"):
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of the demo settings")
        value = yaml.safe_load(text) if types[key] != "str" else text
        if types[key] == "list[float]":
            value = value if isinstance(value, list) else [value]
            if not value or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"{key}: expected a number or a list of numbers, found {text!r}")
            out[key] = [float(v) for v in value]
            continue
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


@dataclass
class Splits:
    train: list[np.ndarray]  # training poses: FGD encoder, mean pose, mean speed
    val: list[Clip]
    test: list[Clip]
    # per split, one other real recording per clip, at least as long as that clip
    val_other: list[Clip]
    test_other: list[Clip]


def _wrap(c) -> Clip:
    return Clip(c.clip_id, c.poses, c.trans, c.audio, c.words, c)


def _other_recordings(clips: list[Clip], pool: list[Clip], split: str) -> list[Clip]:
    """For each held-out clip, a pool recording at least as long (never looped: a loop puts a
    pose jump into the baseline that real motion does not have), taken in turn so the
    baseline spans several recordings."""
    out = []
    for k, c in enumerate(clips):
        fits = [o for o in pool if o.poses.shape[0] >= c.poses.shape[0]]
        if not fits:
            raise ValueError(
                f"{c.clip_id} ({c.poses.shape[0]} frames): no {split!r} clip loaded is at least "
                "as long, and the other-recording baseline is never looped (raise num_clips)"
            )
        out.append(fits[k % len(fits)])
    return out


def load_splits(cfg: DemoConfig) -> Splits:
    """Training poses, the validation and test clips and the baseline's other recordings."""
    if cfg.data == "synthetic":
        from gesture_data.datasets.synthetic import make_clip

        n, v, t = cfg.num_clips, cfg.val_clips, cfg.test_clips
        train = [make_clip(i, cfg.seconds, cfg.seed).poses for i in range(n)]
        val = [_wrap(make_clip(n + k, cfg.test_seconds, cfg.seed)) for k in range(v)]
        test = [_wrap(make_clip(n + v + k, cfg.test_seconds, cfg.seed)) for k in range(t)]
        # recordings of the held-out length that neither train nor get scored as ground truth
        pool = [
            _wrap(make_clip(n + v + t + k, cfg.test_seconds, cfg.seed)) for k in range(max(v, t))
        ]
        return Splits(train, val, test, pool[:v], pool[:t])
    from gesture_data.datasets.beat2 import list_clips, load_clip

    root = Path(cfg.data.split(":", 1)[1]).expanduser()
    ids = {
        "test": list_clips(root, split=cfg.test_split)[: cfg.test_clips],
        "val": list_clips(root, split=cfg.val_split)[: cfg.val_clips],
        # FGD encoder, mean pose, mean speed and the other-recording baseline: a bounded sample
        "train": list_clips(root, split=cfg.train_split)[: max(cfg.num_clips, 16)],
    }
    if not all(ids.values()):
        raise ValueError(
            f"{root}: no clips in split {cfg.train_split!r}, {cfg.val_split!r} or "
            f"{cfg.test_split!r} (set train_split= / val_split= / test_split=)"
        )
    loaded = {k: [_wrap(load_clip(root, cid)) for cid in v] for k, v in ids.items()}
    pool = loaded["train"]
    return Splits(
        [c.poses for c in pool],
        loaded["val"],
        loaded["test"],
        _other_recordings(loaded["val"], pool, cfg.train_split),
        _other_recordings(loaded["test"], pool, cfg.train_split),
    )


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


def train_generator(cfg: DemoConfig, runs: Path, progress: bool = False) -> dict[str, Any]:
    """tokenizer -> lsm; returns the teacher folder, loss histories and timings."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.gesturelsm import train as lsm
    from gesture_apps.systems.tokenizer import train as tokenizer

    data = _data_overrides(cfg, runs / "cache")
    t0 = time.perf_counter()
    tok_cfg = load_config(
        tokenizer.TokenizerRecipeConfig,
        "tokenizer/demo",
        [*data, *_schedule(cfg.tokenizer_steps), *cfg.extra.get("tokenizer", [])],
    )
    tok = tokenizer.run(tok_cfg, runs / "tokenizer", progress=progress)
    t1 = time.perf_counter()
    lsm_cfg = load_config(
        lsm.LSMRecipeConfig,
        "gesturelsm/demo",
        [
            *data,
            f"tokenizer={(runs / 'tokenizer').resolve()}",
            *_schedule(cfg.lsm_steps),
            f"train.batch_size={cfg.lsm_batch}",
            f"train.lr={cfg.lsm_lr}",
            *cfg.extra.get("lsm", []),
        ],
    )
    gen = lsm.run(lsm_cfg, runs / "lsm", progress=progress)
    t2 = time.perf_counter()
    return {
        "teacher": runs / "lsm" / "lsm",
        "history": {"tokenizer": tok.history, "lsm": gen.history},
        "seconds": {"tokenizer": t1 - t0, "lsm": t2 - t1},
    }


def train_student(
    cfg: DemoConfig, runs: Path, guidance: float, progress: bool = False
) -> dict[str, Any]:
    """One-step student distilled from ``runs/lsm`` at the chosen ``guidance``."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.distill import train as distill

    t0 = time.perf_counter()
    dist_cfg = load_config(
        distill.DistillRecipeConfig,
        "distill/gesturelsm",
        [
            *_data_overrides(cfg, runs / "cache"),
            f"teacher.path={(runs / 'lsm').resolve()}",
            f"consistency.num_pairs={cfg.distill_pairs}",
            f"consistency.teacher_steps={cfg.teacher_steps}",
            f"consistency.guidance={guidance}",
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
    return {
        "student": runs / "distill" / "student",
        "history": {"distill (stage 1)": dist.stage1.history},
        "seconds": {"distill": time.perf_counter() - t0},
        "energy_distance": dist.metrics,
    }


# ----- evaluation --------------------------------------------------------------------------


def reconstruct(bundle, clip: Clip) -> np.ndarray:
    """The clip's motion encoded and decoded by the bundle's tokenizer: poses ``(T, 165)``
    (the last frame repeated up to the tokenizer's downsampling factor, then cropped)."""
    import torch

    from gesture_apps.data.codec import decode_latents
    from gesture_data.datasets.windows import WindowDataset, collate, prepare_clip
    from motion_tokenizers import pad_to_multiple

    prepared = prepare_clip(clip.source)
    t = prepared["rot6d"].shape[0]
    item = collate([WindowDataset([prepared], t, t, normalizer=bundle.normalizer)[0]])
    tok, f = bundle.tokenizer, bundle.spec["factor"]
    parts = {n: pad_to_multiple(item[n], f)[0] for n in tok.part_names}
    with torch.no_grad():
        return decode_latents(
            bundle.tokenizer, bundle.normalizer, tok.encode_continuous(parts), t
        ).poses


def generate_split(bundle, clips: list[Clip], steps: int, guidance: float) -> list:
    """One :class:`Motion` per clip; clip ``i`` uses seed ``i`` whatever the model or scale,
    so settings are compared on the same noise."""
    from gesture_apps.systems.gesturelsm.pipeline import generate_motion

    return [
        generate_motion(bundle, c.audio, c.words or None, steps=steps, guidance=guidance, seed=i)
        for i, c in enumerate(clips)
    ]


def assemble(
    clips: list[Clip],
    others: list[Clip],
    generated: dict[str, list],
    oracle: list[np.ndarray],
    mean_pose: np.ndarray,
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """(poses, root translations) per method, each clip cut to the frames every method has."""
    poses: dict[str, list[np.ndarray]] = {m: [] for m in (*METHODS, ORACLE)}
    trans: dict[str, list[np.ndarray]] = {m: [] for m in (*METHODS, ORACLE)}
    for i, c in enumerate(clips):
        T = min(
            c.poses.shape[0], oracle[i].shape[0], *(g[i].num_frames for g in generated.values())
        )
        other = others[i]
        assert other.poses.shape[0] >= T, (other.clip_id, T)  # checked when the pool was built
        rows = {
            **{m: (g[i].poses, g[i].trans) for m, g in generated.items()},
            "baseline_other_clip": (other.poses, other.trans),
            "baseline_mean_pose": (np.repeat(mean_pose[None], T, axis=0), np.zeros((T, 3))),
            "ground_truth": (np.asarray(c.poses, np.float32), c.trans),
            ORACLE: (oracle[i], c.trans),
        }
        for m, (p, tr) in rows.items():
            poses[m].append(np.asarray(p[:T], np.float32))
            trans[m].append(np.asarray(tr[:T], np.float64))
    return poses, trans


def evaluate_methods(
    preds: dict[str, list[np.ndarray]],
    clips: list[Clip],
    encoder,
    mean_velocity: np.ndarray,
) -> dict[str, dict[str, float]]:
    """``{method: {"fgd", "bc", "l1div"}}`` over ``clips`` (gesture_eval.evaluate, evaltools
    conventions; joints from the approximate skeleton, root at the origin). The ground truth's
    FGD against itself is 0 by definition: it is shown as 0, the computed value as
    ``fgd_raw``."""
    from gesture_apps.data.motion import joints_approx
    from gesture_eval import evaluate

    gt = [c.poses for c in clips]
    out = {}
    for name, poses in preds.items():
        r = evaluate(
            poses,
            gt,
            audios=[c.audio for c in clips],
            pred_joints=[joints_approx(p) for p in poses],
            fgd_encoder=encoder,
            mean_velocity=mean_velocity,
            variants=["evaltools"],
        )["variants"]["evaltools"]
        out[name] = {k: float(r[k]) for k in METRICS}
    if "ground_truth" in out:
        gt_row = out["ground_truth"]
        out["ground_truth"] = {**gt_row, "fgd": 0.0, "fgd_raw": gt_row["fgd"]}
    return out


def fgd_ratios(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{model: {baseline: FGD(model) / FGD(baseline)}}``: below 1 is a win."""
    return {
        m: {b: metrics[m]["fgd"] / metrics[b]["fgd"] for b in BASELINES}
        for m in MODELS
        if m in metrics
    }


def mean_speed(poses: list[np.ndarray], fps: int = 30) -> np.ndarray:
    """Per-joint mean speed (55,) of the training clips (BEAT2's ``mean_vel`` analogue)."""
    from gesture_apps.data.motion import joints_approx
    from gesture_eval import mean_joint_speed

    return mean_joint_speed([joints_approx(p) for p in poses], fps)


# ----- outputs -----------------------------------------------------------------------------


def render_side_by_side(
    path: Path, clip: Clip, motions: dict[str, tuple[np.ndarray, np.ndarray]]
) -> Path:
    """``{title: (poses (T, 165), root translation (T, 3))}`` side by side with the clip's
    speech; each figure moves along its own translation (a generated root drift shows)."""
    from gesture_apps.data.motion import joints_approx
    from gesture_data.render import render_motion

    joints = [joints_approx(p, t) for p, t in motions.values()]
    return render_motion(
        joints, path, fps=30, audio=clip.audio, sample_rate=16000, titles=list(motions)
    )


def _table(title: str, metrics: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("method")
    for name in ("FGD (lower is better)", "BC (not a ranking)", "L1div"):
        table.add_column(name, justify="right")
    for method, m in metrics.items():
        table.add_row(method, *(f"{m[k]:.4f}" for k in METRICS))
    Console().print(table)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


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

    from gesture_apps.data.motion import Motion, write_beat2_npz
    from gesture_apps.systems.gesturelsm.pipeline import load_lsm
    from gesture_eval import FGDEncoder, train_fgd_encoder

    start = time.perf_counter()
    if cfg.test_clips < 1 or cfg.val_clips < 1 or cfg.num_clips < 1:
        raise ValueError("num_clips, val_clips and test_clips must be at least 1")
    data = load_splits(cfg)  # raises before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    trained = train_generator(cfg, runs, progress=progress)

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    window = 64 if min(p.shape[0] for p in data.train) >= 64 else 32
    encoder = train_fgd_encoder(
        data.train, encoder=FGDEncoder.tiny(), steps=cfg.fgd_steps, window=window, seed=cfg.seed
    )
    encoder.save_pretrained(out / "fgd_encoder")
    mean_vel = mean_speed(data.train)
    mean_pose = np.concatenate(data.train).mean(axis=0, dtype=np.float64).astype(np.float32)
    t_fgd = time.perf_counter() - t0

    # the guidance scale, on the validation split only
    t0 = time.perf_counter()
    teacher = load_lsm(trained["teacher"])
    val_teacher = {
        g: generate_split(teacher, data.val, cfg.teacher_steps, g) for g in cfg.guidance_grid
    }
    val_oracle = [reconstruct(teacher, c) for c in data.val]
    sweep = {}
    for g, motions in val_teacher.items():
        poses, _ = assemble(data.val, data.val_other, {"teacher": motions}, val_oracle, mean_pose)
        fgd = evaluate_methods({"teacher": poses["teacher"]}, data.val, encoder, mean_vel)
        sweep[g] = fgd["teacher"]["fgd"]
    guidance = min(sweep, key=sweep.get)  # the first of equals: the grid's order breaks ties
    t_select = time.perf_counter() - t0

    student_run = train_student(cfg, runs, guidance, progress=progress)
    student = load_lsm(student_run["student"])

    t0 = time.perf_counter()
    val_gen = {
        "teacher": val_teacher[guidance],
        "student_1step": generate_split(student, data.val, 1, 1.0),
    }
    test_gen = {
        "teacher": generate_split(teacher, data.test, cfg.teacher_steps, guidance),
        "student_1step": generate_split(student, data.test, 1, 1.0),
    }
    test_oracle = [reconstruct(teacher, c) for c in data.test]
    val_preds, _ = assemble(data.val, data.val_other, val_gen, val_oracle, mean_pose)
    preds, trans = assemble(data.test, data.test_other, test_gen, test_oracle, mean_pose)
    for i, c in enumerate(data.test):
        T = preds["ground_truth"][i].shape[0]
        for m in METHODS:
            write_beat2_npz(
                out / "motion" / f"{c.clip_id}_{m}.npz",
                Motion(preds[m][i], trans[m][i], np.zeros((T, 100))),
            )
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    val_metrics = evaluate_methods(val_preds, data.val, encoder, mean_vel)
    metrics = evaluate_methods(preds, data.test, encoder, mean_vel)
    t_eval = time.perf_counter() - t0
    bad = [
        (split, m, k)
        for split, ms in (("validation", val_metrics), ("test", metrics))
        for m, v in ms.items()
        for k, x in v.items()
        if not np.isfinite(x)
    ]
    if bad:
        raise ValueError(f"non-finite metrics: {bad}")
    report = {
        "test": metrics,
        "validation": val_metrics,
        "selection": {
            "split": "validation",
            "guidance": guidance,
            "teacher_fgd_by_guidance": {str(g): v for g, v in sweep.items()},
        },
        "fgd_ratio": {"validation": fgd_ratios(val_metrics), "test": fgd_ratios(metrics)},
        "notes": NOTES,
    }
    _atomic_json(out / "metrics.json", report)

    t0 = time.perf_counter()
    history = {**trained["history"], **student_run["history"]}
    plot_curves(history, out / "training_curves.png")
    if cfg.render:
        shown = ("ground_truth", "teacher", "student_1step")
        render_side_by_side(
            out / "side_by_side.mp4",
            data.test[0],
            {m: (preds[m][0], trans[m][0]) for m in shown},
        )
    t_out = time.perf_counter() - t0
    seconds = {
        **trained["seconds"],
        **student_run["seconds"],
        "fgd_encoder": t_fgd,
        "select_guidance": t_select,
        "generate": t_gen,
        "evaluate": t_eval,
        "outputs": t_out,
        "total": time.perf_counter() - start,
    }
    info = {
        "config": dataclasses.asdict(cfg),
        "seconds": seconds,
        "distill_energy_distance": student_run["energy_distance"],
        "validation": [c.clip_id for c in data.val],
        "held_out": [c.clip_id for c in data.test],
        "other_recordings": {
            "validation": [c.clip_id for c in data.val_other],
            "test": [c.clip_id for c in data.test_other],
        },
        "fgd_encoder": "tiny FGDEncoder trained in this run on the training clips "
        f"({cfg.fgd_steps} steps); FGD is relative to it",
    }
    _atomic_json(out / "demo_info.json", info)
    if show:
        sweep_text = ", ".join(f"{g:g}: {v:.4f}" for g, v in sweep.items())
        print(f"guidance {guidance:g} chosen on the validation split (teacher FGD {sweep_text})")
        _table("gesture demo (held-out test clips, scored once)", metrics)
        print(
            "ground_truth FGD is 0 by definition (computed: "
            f"{metrics['ground_truth']['fgd_raw']:.2e}, the covariances' eps). "
            f"BC is not a ranking: {NOTES['bc']}"
        )
        val_r = fgd_ratios(val_metrics)
        for m, r in fgd_ratios(metrics).items():
            text = ", ".join(
                f"{b} {x:.2f} ({'win' if x < 1 else 'no win'}; validation {val_r[m][b]:.2f})"
                for b, x in r.items()
            )
            print(f"{m} FGD / baseline FGD on the test clips: {text}")
        print(f"demo: {seconds['total']:.1f} s; outputs in {out}")
    return {"metrics": metrics, "report": report, "seconds": seconds, "out": out}


# ----- `gesture demo` ------------------------------------------------------------------------
