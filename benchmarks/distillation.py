"""One-step distillation of the ``gesture demo`` GestureLSM teacher, four ways; prints a table.

    uv run python benchmarks/distillation.py [--size tiny|default] [--out DIR] [--reuse DIR]
        [--set KEY=VALUE ...] [--distill KEY=VALUE ...]

The teacher is trained exactly as ``gesture demo`` trains it (``gesture_apps.systems.demo``:
``load_splits``, ``train_generator``, the tiny FGD encoder trained in the run, the guidance
scale chosen from ``guidance_grid`` by the teacher's FGD on the validation split), at the demo
size ``--size`` (``default``: the demo's; ``tiny``: the test-suite size, a smoke run) with
``--set`` demo settings on top. ``--reuse DIR`` takes the tokenizer, teacher and FGD encoder
from an earlier run of this script or of ``gesture demo --out DIR`` (same size and settings;
checked against its ``demo_info.json`` / ``distillation.json``) and writes into ``DIR``.

Then the teacher is distilled four times with the apps distill system, each run the demo's
``train_student`` (``distill/gesturelsm`` with the demo's pairs, steps and learning rates, the
chosen guidance; its ``runs/distill`` renamed ``runs/bench_<variant>`` after the run, a demo's
own kept as ``runs/distill.<time>``), differing only in ``stage1`` and ``apt.steps``:

* ``endpoint``: regression of the teacher's guided ``teacher_steps``-step endpoint (Luhman &
  Luhman 2021), ``apt.steps=0``;
* ``endpoint+APT``: the same, then Seaweed-APT adversarial post-training (the demo's student);
* ``consistency``: consistency distillation with an EMA target, ``apt.steps=0``;
* ``consistency+APT``: the same, then APT.

``--distill`` overrides go to all four runs. Rows, on the held-out TEST clips (scored once;
every model sees the same noise per clip): the teacher at ``teacher_steps`` guided Euler steps,
the teacher at 1 guided step (no distillation), the four students at 1 step, the demo's
baselines (the motion of another real recording, the mean training pose) and the ground truth
through the tokenizer (the FGD floor of any generator on these latents). Columns: FGD (the
in-run encoder, comparable within one run only), FGD over the other-recording baseline's,
the validation FGD, BC (reported, not a ranking: see the demo's notes), L1div, and the energy
distance of 1-step latent samples to the teacher's ``teacher_steps``-step samples (the distill
system's own report: ``eval_samples`` fresh noises and training-window conditions; the
teacher row shows a second teacher sample set, the noise floor). Results also go to
``DIR/distillation.json``.

At the default size the whole run takes about 21 min on 2 CPU cores (tokenizer 6, teacher 4,
FGD encoder 2, each endpoint run 1, each consistency run 2); ``--reuse`` skips the first 12.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from gesture_apps.systems import demo

VARIANTS = {  # row -> (stage1, APT on)
    "endpoint": ("endpoint", False),
    "endpoint+APT": ("endpoint", True),
    "consistency": ("consistency", False),
    "consistency+APT": ("consistency", True),
}
# settings a reused teacher must have been trained with
TRAINED = (
    "data",
    "train_split",
    "val_split",
    "test_split",
    "num_clips",
    "val_clips",
    "test_clips",
    "seconds",
    "test_seconds",
    "seed",
    "pose_length",
    "stride",
    "tokenizer_steps",
    "lsm_steps",
    "lsm_batch",
    "lsm_lr",
    "fgd_steps",
)


def check_reuse(root: Path, cfg: demo.DemoConfig) -> None:
    if not (root / "runs" / "lsm" / "lsm").is_dir():
        raise SystemExit(f"--reuse {root}: no runs/lsm/lsm (a gesture demo or benchmark run)")
    for name in ("distillation.json", "demo_info.json"):
        if (root / name).is_file():
            old = json.loads((root / name).read_text(encoding="utf-8"))["config"]
            new = dataclasses.asdict(cfg)
            diff = {k: (old.get(k), new[k]) for k in TRAINED if old.get(k) != new[k]}
            if diff:
                raise SystemExit(f"--reuse {root}: trained with other settings {diff}")
            return
    raise SystemExit(f"--reuse {root}: no demo_info.json or distillation.json to check")


def assemble(clips, others, generated: dict, oracle, mean_pose) -> dict[str, list]:
    """:func:`demo.assemble` for any number of generated rows (it takes a teacher and a
    student): each row with the first as the teacher, all cut to the same frames."""
    rows = list(generated)
    out = {}
    for row in rows:
        pair = {"teacher": generated[rows[0]], "student_1step": generated[row]}
        poses, _ = demo.assemble(clips, others, pair, oracle, mean_pose)
        if out:
            cut = [p.shape for p in poses["teacher"]]
            assert cut == [p.shape for p in out[rows[0]]], (row, cut)  # the same frames
        else:
            out = {m: v for m, v in poses.items() if m not in ("teacher", "student_1step")}
            out[rows[0]] = poses["teacher"]
        out[row] = poses["student_1step"]
    return out


def ed_of(metrics: dict[str, float]) -> float:
    return metrics.get("student_apt", metrics["student_stage1"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", default="default", choices=sorted(demo.SIZES))
    ap.add_argument("--out", default="distillation_out", help="run folder")
    ap.add_argument("--reuse", default=None, help="folder of an earlier run: skip training")
    ap.add_argument("--set", nargs="*", default=[], help="demo settings, KEY=VALUE")
    ap.add_argument("--distill", nargs="*", default=[], help="distill overrides, all runs")
    args = ap.parse_args()

    from gesture_apps.systems.gesturelsm.pipeline import load_lsm
    from gesture_eval import FGDEncoder, train_fgd_encoder

    torch.set_num_threads(1)  # as the demo: tiny models lose time to thread hand-offs
    start = time.perf_counter()
    cfg = demo.demo_config(args.size, render=False, **demo.parse_overrides(args.set))
    cfg.extra = {"distill": list(args.distill)}
    data = demo.load_splits(cfg)
    root = Path(args.reuse or args.out)
    runs = root / "runs"
    secs: dict[str, float] = {}
    if args.reuse:
        check_reuse(root, cfg)
    else:
        root.mkdir(parents=True, exist_ok=True)
        secs.update(demo.train_generator(cfg, runs)["seconds"])
        # the settings first, so that a later --reuse of this folder can check them
        config = {"config": dataclasses.asdict(cfg)}
        (root / "distillation.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    t0 = time.perf_counter()
    if args.reuse and (root / "fgd_encoder").is_dir():
        encoder = FGDEncoder.from_pretrained(root / "fgd_encoder")
    else:
        torch.manual_seed(cfg.seed)
        window = 64 if min(p.shape[0] for p in data.train) >= 64 else 32
        encoder = train_fgd_encoder(
            data.train, encoder=FGDEncoder.tiny(), steps=cfg.fgd_steps, window=window, seed=cfg.seed
        )
        encoder.save_pretrained(root / "fgd_encoder")
    mean_vel = demo.mean_speed(data.train)
    mean_pose = np.concatenate(data.train).mean(axis=0, dtype=np.float64).astype(np.float32)
    secs["fgd_encoder"] = time.perf_counter() - t0

    # the guidance scale, on the validation split only (as the demo)
    t0 = time.perf_counter()
    teacher = load_lsm(runs / "lsm" / "lsm")
    val_teacher = {
        g: demo.generate_split(teacher, data.val, cfg.teacher_steps, g) for g in cfg.guidance_grid
    }
    val_oracle = [demo.reconstruct(teacher, c) for c in data.val]
    sweep = {}
    for g, motions in val_teacher.items():
        poses, _ = demo.assemble(
            data.val, data.val_other, {"teacher": motions}, val_oracle, mean_pose
        )
        m = demo.evaluate_methods({"teacher": poses["teacher"]}, data.val, encoder, mean_vel)
        sweep[g] = m["teacher"]["fgd"]
    guidance = min(sweep, key=sweep.get)
    secs["select_guidance"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    teacher_row = f"teacher {cfg.teacher_steps} steps"
    val_gen = {
        teacher_row: val_teacher[guidance],
        "teacher 1 step": demo.generate_split(teacher, data.val, 1, guidance),
    }
    test_gen = {
        teacher_row: demo.generate_split(teacher, data.test, cfg.teacher_steps, guidance),
        "teacher 1 step": demo.generate_split(teacher, data.test, 1, guidance),
    }
    secs["teacher_generate"] = time.perf_counter() - t0

    energy: dict[str, float] = {}
    if (runs / "distill").exists():  # a gesture demo's student: kept, under another name
        (runs / "distill").rename(runs / f"distill.{time.strftime('%Y%m%d-%H%M%S')}")
    for row, (stage1, apt) in VARIANTS.items():
        name = "bench_" + row.replace("+", "_").lower()
        shutil.rmtree(runs / name, ignore_errors=True)  # this script's own folder only
        over = [f"stage1={stage1}", *([] if apt else ["apt.steps=0"])]
        # the demo's own student run (into runs/distill), stage1 / APT set on top
        variant = dataclasses.replace(cfg, extra={"distill": [*args.distill, *over]})
        run = demo.train_student(variant, runs, guidance)
        secs[f"distill {row}"] = run["seconds"]["distill"]
        dist = run["energy_distance"]
        energy[row] = ed_of(dist)
        energy[teacher_row] = dist["teacher_resample"]  # the same teacher samples every run
        energy["teacher 1 step"] = dist["teacher_1step"]
        t0 = time.perf_counter()
        student = load_lsm(run["student"])
        val_gen[row] = demo.generate_split(student, data.val, 1, 1.0)
        test_gen[row] = demo.generate_split(student, data.test, 1, 1.0)
        secs[f"generate {row}"] = time.perf_counter() - t0
        (runs / "distill").rename(runs / name)

    t0 = time.perf_counter()
    shown = [*test_gen, *demo.BASELINES, demo.ORACLE]
    test_oracle = [demo.reconstruct(teacher, c) for c in data.test]
    val_preds = assemble(data.val, data.val_other, val_gen, val_oracle, mean_pose)
    preds = assemble(data.test, data.test_other, test_gen, test_oracle, mean_pose)
    val = demo.evaluate_methods({m: val_preds[m] for m in shown}, data.val, encoder, mean_vel)
    test = demo.evaluate_methods({m: preds[m] for m in shown}, data.test, encoder, mean_vel)
    secs["evaluate"] = time.perf_counter() - t0
    secs["total"] = time.perf_counter() - start

    settings = {
        k: getattr(cfg, k)
        for k in (
            "size",
            "num_clips",
            "val_clips",
            "test_clips",
            "tokenizer_steps",
            "lsm_steps",
            "distill_pairs",
            "distill_steps",
            "apt_steps",
            "teacher_steps",
            "fgd_steps",
        )
    }
    print(
        "Distillation of the gesture demo's GestureLSM teacher, held-out test clips "
        f"({len(data.test)} x {cfg.test_seconds:g} s); "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + f"; guidance {guidance:g} chosen on validation (teacher FGD "
        + ", ".join(f"{g:g}: {v:.4f}" for g, v in sweep.items())
        + f"); distill overrides {args.distill or 'none'}; torch threads 1"
    )
    other = test["baseline_other_clip"]["fgd"]
    print("| method | steps | FGD | FGD / other rec. | val FGD | BC | L1div | ED to teacher |")
    print("|---|---|---|---|---|---|---|---|")
    steps = {teacher_row: cfg.teacher_steps, "teacher 1 step": 1, **dict.fromkeys(VARIANTS, 1)}
    for m in shown:
        r, ed = test[m], energy.get(m)
        print(
            f"| {m} | {steps.get(m, '-')} | {r['fgd']:.4f} | {r['fgd'] / other:.2f} | "
            f"{val[m]['fgd']:.4f} | {r['bc']:.4f} | {r['l1div']:.4f} | "
            + (f"{ed:.4f} |" if ed is not None else "- |")
        )
    print(
        "\nED: energy distance of 1-step latent samples to the teacher's "
        f"{cfg.teacher_steps}-step samples (teacher row: a second teacher sample set, the floor)."
        " BC is reported, not a ranking."
    )
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))
    info = {
        "config": dataclasses.asdict(cfg),
        "guidance": guidance,
        "teacher_fgd_by_guidance": {str(g): v for g, v in sweep.items()},
        "test": test,
        "validation": val,
        "energy_distance": energy,
        "seconds": secs,
    }
    (root / "distillation.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
