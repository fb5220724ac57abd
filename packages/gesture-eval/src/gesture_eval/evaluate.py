"""One call for a whole test set: every applicable metric, per variant, as a JSON-ready dict."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from gesture_eval import __version__
from gesture_eval._checks import VARIANTS, check_finite, check_fps, check_variant, to_numpy
from gesture_eval.beat import BeatConsistency
from gesture_eval.body import SmplxRest, face_vertices, smplx_joints
from gesture_eval.diversity import L1Diversity
from gesture_eval.encoder import FGDEncoder, fgd_features_batch
from gesture_eval.errors import EvalError
from gesture_eval.face import FaceLVD, FaceMSE
from gesture_eval.fgd import frechet_distance

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]


def _seq_list(x, name: str, n: int | None) -> list | None:
    if x is None:
        return None
    items = list(x)
    if n is not None and len(items) != n:
        raise EvalError(f"{name} has {len(items)} sequences, expected {n} (one per test sequence)")
    return items


def evaluate(
    pred_poses: Sequence | None = None,
    gt_poses: Sequence | None = None,
    *,
    audios: Sequence | None = None,
    pred_joints: Sequence | None = None,
    smplx_model: str | os.PathLike | None = None,
    betas: Sequence | None = None,
    pred_expressions: Sequence | None = None,
    gt_expressions: Sequence | None = None,
    fgd_encoder: FGDEncoder | None = None,
    mean_velocity=None,
    variants: Sequence[str] = VARIANTS,
    sample_rate: int = 16000,
    fps: int = 30,
) -> dict:
    """Evaluate a test set like the references' evaluation loops.

    Per sequence ``i``: ``pred_poses[i]`` / ``gt_poses[i]`` axis-angle (T, 165) are cut to a
    common length; joints for BC and L1div come from ``smplx_model`` in each variant's
    convention (or from ``pred_joints[i]`` (T, 55, 3) for every variant if given);
    ``audios[i]`` (N,) at 16 kHz enables BC; ``fgd_encoder`` enables FGD (latents pooled over
    the set); ``pred_expressions`` / ``gt_expressions`` (T, 100) with ``smplx_model`` enable
    face MSE / LVD. Returns ``{"gesture_eval": version, "num_sequences", "num_frames",
    "variants": {variant: {metric: float}}, "skipped": {metric: reason}}``.
    """
    variants = [check_variant(v) for v in variants]
    n = None
    for seqs in (pred_poses, pred_joints):
        if seqs is not None:
            n = len(list(seqs))
            break
    if not n:
        raise EvalError("evaluate needs pred_poses (T, 165) or pred_joints (T, 55, 3) sequences")
    pred_poses = _seq_list(pred_poses, "pred_poses", n)
    gt_poses = _seq_list(gt_poses, "gt_poses", n)
    audios = _seq_list(audios, "audios", n)
    pred_joints = _seq_list(pred_joints, "pred_joints", n)
    betas = _seq_list(betas, "betas", n)
    pred_expressions = _seq_list(pred_expressions, "pred_expressions", n)
    gt_expressions = _seq_list(gt_expressions, "gt_expressions", n)
    check_fps(fps)
    # check every sequence up front, under its own name: a NaN found later deep inside a
    # metric would be reported against an internal argument name ("joints", "axis_angle[1]")
    for name, seqs in (
        ("pred_poses", pred_poses),
        ("gt_poses", gt_poses),
        ("audios", audios),
        ("pred_joints", pred_joints),
        ("pred_expressions", pred_expressions),
        ("gt_expressions", gt_expressions),
    ):
        for i, x in enumerate(seqs or ()):
            check_finite(to_numpy(x, f"{name}[{i}]"), f"{name}[{i}]")

    skipped: dict[str, str] = {}
    want_fgd = fgd_encoder is not None and pred_poses is not None and gt_poses is not None
    if not want_fgd:
        skipped["fgd"] = "needs fgd_encoder, pred_poses and gt_poses"
    have_joints = pred_joints is not None or (smplx_model is not None and pred_poses is not None)
    if not have_joints:
        skipped["bc"] = skipped["l1div"] = "needs pred_joints, or smplx_model with pred_poses"
    elif audios is None:
        skipped["bc"] = "needs audios"
    want_face = (
        smplx_model is not None
        and pred_expressions is not None
        and gt_expressions is not None
        and pred_poses is not None
        and gt_poses is not None
    )
    if not want_face:
        skipped["face_mse"] = skipped["face_lvd"] = (
            "needs smplx_model, pred/gt poses and pred/gt expressions"
        )

    bc = {}
    if "bc" not in skipped:
        bc = {
            v: BeatConsistency(
                mean_velocity=mean_velocity, variant=v, fps=fps, sample_rate=sample_rate
            )
            for v in variants
        }
    l1 = {v: L1Diversity(variant=v) for v in variants} if have_joints else {}
    mse = {v: FaceMSE(variant=v) for v in variants} if want_face else {}
    lvd = {v: FaceLVD(variant=v) for v in variants} if want_face else {}
    feats: dict[str, tuple[list, list]] = {v: ([], []) for v in variants}
    total = 0
    rests: dict[bytes | None, SmplxRest] = {}
    for i in range(n):
        lengths = [len(s[i]) for s in (pred_poses, gt_poses, pred_joints) if s is not None]
        t = min(lengths)
        total += t
        pose = to_numpy(pred_poses[i], f"pred_poses[{i}]")[:t] if pred_poses is not None else None
        gt = to_numpy(gt_poses[i], f"gt_poses[{i}]")[:t] if gt_poses is not None else None
        b = betas[i] if betas is not None else None
        rest = None
        if smplx_model is not None and pred_joints is None:
            key = None if b is None else np.asarray(b, dtype=np.float64).tobytes()
            if key not in rests:  # one rest skeleton per distinct shape
                rests[key] = SmplxRest(smplx_model, b)
            rest = rests[key]
        for v in variants:
            if have_joints:
                joints = (
                    to_numpy(pred_joints[i], f"pred_joints[{i}]")[:t]
                    if pred_joints is not None
                    else smplx_joints(pose, rest, variant=v)
                )
                l1[v].update(joints)
                if v in bc:
                    bc[v].update(joints, audios[i])
            if want_fgd:
                fp, fg = fgd_features_batch([pose, gt], fgd_encoder, variant=v)
                feats[v][0].append(fp)
                feats[v][1].append(fg)
        if want_face:
            pv = face_vertices(
                pose, to_numpy(pred_expressions[i], "pred_expressions")[:t], smplx_model, betas=b
            )
            gv = face_vertices(
                gt, to_numpy(gt_expressions[i], "gt_expressions")[:t], smplx_model, betas=b
            )
            for v in variants:
                mse[v].update(pv, gv)
                lvd[v].update(pv, gv)

    results: dict[str, dict[str, float]] = {}
    for v in variants:
        r: dict[str, float] = {}
        if want_fgd:
            r["fgd"] = frechet_distance(
                np.concatenate(feats[v][0]), np.concatenate(feats[v][1]), variant=v
            )
        if v in bc:
            r["bc"] = float(bc[v].compute())
        if v in l1:
            r["l1div"] = float(l1[v].compute())
        if want_face:
            r["face_mse"] = float(mse[v].compute())
            r["face_lvd"] = float(lvd[v].compute())
        results[v] = r
    return {
        "gesture_eval": __version__,
        "num_sequences": n,
        "num_frames": total,
        "variants": results,
        "skipped": skipped,
    }
