"""Fitting SMPL-X to 22 body joints (``fit_smpl.fit_smplx_to_joints``), with stand-in model
files: round trips through ``smplx``, shape recovery, the HumanML3D feature path, bad input.

Bounds were measured over 10 seeds on one thread (``OMP_NUM_THREADS=1``); each is about
twice the worst measured value (the fit is deterministic for given joints, but float sums
may order differently with other thread counts).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from gesture_data.datasets.humanml3d import PARENTS, joints_to_features, recover_from_ric
from gesture_data.datasets.smplx_model import smplx_joints, write_synthetic_smplx_model
from gesture_data.errors import DataError
from gesture_data.render_smpl import FitResult, fit_smplx_to_joints

T = 40  # frames per round trip: enough for the temporal term, cheap on CPU
ITERS = 150  # the default


def stand_in(folder, shape_std: float = 0.0):
    """The stand-in SMPL-X model, saved uncompressed (each ``smplx`` load then costs a third
    of the time); ``shape_std > 0``: random shapedirs of that std (m per unit beta) on the
    joint vertices (the ones its J_regressor picks), so its joints move with the shape."""
    path = write_synthetic_smplx_model(folder)
    with np.load(path) as z:
        arrays = dict(z)
    rng = np.random.default_rng(0)
    arrays["shapedirs"][:55, :, :10] = rng.normal(0, shape_std, (55, 3, 10))
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return stand_in(tmp_path_factory.mktemp("bm"))


@pytest.fixture(scope="module")
def shaped_model(tmp_path_factory):
    return stand_in(tmp_path_factory.mktemp("bm_shaped"), shape_std=0.01)


def plausible_motion(seed: int, frames: int = T, yaw: float | None = None):
    """Smooth random body rotations (std 0.3 rad per axis), a wandering global rotation
    about a random heading (or ``yaw``) and a drifting translation: ``(poses (T, 165), trans
    (T, 3))``."""
    rng = np.random.default_rng(seed)
    poses = np.zeros((frames, 165), np.float32)
    body = gaussian_filter1d(rng.normal(0, 1, (frames, 63)), 8, axis=0)
    poses[:, 3:66] = body / body.std() * 0.3
    wander = gaussian_filter1d(rng.normal(0, 1, (frames, 3)), 15, axis=0)
    heading = rng.uniform(-np.pi, np.pi) if yaw is None else yaw
    poses[:, :3] = wander / wander.std() * 0.4 + np.array([0.0, heading, 0.0])
    trans = np.cumsum(rng.normal(0, 0.01, (frames, 3)), 0).astype(np.float32)
    return poses, trans


def bone_angle_deg(a, b) -> float:
    """Mean angle (degrees) between the 21 bones of joints ``a`` and ``b`` ``(T, 22, 3)``."""
    ba = a[:, 1:] - a[:, PARENTS[1:]]
    bb = b[:, 1:] - b[:, PARENTS[1:]]
    cos = (ba * bb).sum(-1) / np.linalg.norm(ba, axis=-1) / np.linalg.norm(bb, axis=-1)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def fitted_joints(fit: FitResult, model_path):
    return smplx_joints(fit.poses, model_path, betas=fit.betas, trans=fit.trans)[:, :22]


def test_round_trip_reproduces_the_joints(model):
    """Facing away from the rest pose's +Z (heading pi, the hardest start); random headings
    are in test_humanml3d_features_fit."""
    poses, trans = plausible_motion(2, yaw=np.pi)
    joints = smplx_joints(poses, model, trans=trans)[:, :22]
    fit = fit_smplx_to_joints(joints, model, iters=ITERS)
    assert fit.poses.shape == (T, 165) and fit.trans.shape == (T, 3)
    assert fit.betas.shape == (10,) and fit.joints_error.shape == (T,)
    assert not fit.poses[:, 66:].any()  # jaw, eyes, hands stay zero
    back = fitted_joints(fit, model)
    # measured over 10 seeds x (random heading, pi): mean bone angle 0.09-0.32 deg (the
    # start, iters=0, is 23-35 deg off), mean joint error 0.4-1.9 mm, worst joint 9.5 mm
    assert bone_angle_deg(back, joints) < 0.6
    err = np.linalg.norm(back - joints, axis=-1)  # (T, 22) m
    assert err.mean() < 0.004 and err.max() < 0.02
    # the reported error is the smplx body's error (the fit's own forward kinematics agree)
    np.testing.assert_allclose(fit.joints_error, err.mean(-1), atol=1e-5)


def test_fit_recovers_the_shape(shaped_model):
    poses, trans = plausible_motion(3)
    betas = np.random.default_rng(3).normal(0, 1, 10).astype(np.float32)
    joints = smplx_joints(poses, shaped_model, betas=betas, trans=trans)[:, :22]
    shaped = fit_smplx_to_joints(joints, shaped_model)
    flat = fit_smplx_to_joints(joints, shaped_model, fit_betas=False)
    assert not flat.betas.any()
    # measured over 10 seeds: betas within 0.0027 of the truth; mean joint error 0.7-10 mm
    # with the shape fitted vs 42-122 mm with betas fixed at 0 (ratio <= 0.12)
    np.testing.assert_allclose(shaped.betas, betas, atol=0.01)
    assert shaped.joints_error.mean() < 0.25 * flat.joints_error.mean()
    assert shaped.joints_error.mean() < 0.02


def test_humanml3d_features_fit(model):
    """Generated motion arrives as 263-d features: features -> recover_from_ric -> fit."""
    poses, trans = plausible_motion(4, frames=T + 1)
    feats = joints_to_features(smplx_joints(poses, model, trans=trans)[:, :22])
    joints = recover_from_ric(feats.astype(np.float64)).astype(np.float32)  # (T, 22, 3)
    fit = fit_smplx_to_joints(joints, model)
    # measured over 10 seeds: 0.10-0.41 deg, mean joint error 0.4-2.1 mm
    assert bone_angle_deg(fitted_joints(fit, model), joints) < 0.8
    assert fit.joints_error.mean() < 0.004


def test_humanml3d_fixture_fit(h3d_root, model):
    """Real HumanML3D motion (re-targeted to another skeleton): directions still match; the
    positions cannot (other bone lengths, and the stand-in has no shape space)."""
    feats = np.load(h3d_root / "new_joint_vecs" / "012314.npy")
    joints = recover_from_ric(feats.astype(np.float64)).astype(np.float32)
    fit = fit_smplx_to_joints(joints[:T], model)
    # measured (frames 0-39, 1 thread): 0.93 deg, 2.5 cm mean (3.0 cm worst frame)
    assert bone_angle_deg(fitted_joints(fit, model), joints[:T]) < 1.5
    assert fit.joints_error.mean() < 0.035


def test_fit_reports_progress(model):
    poses, _ = plausible_motion(5, frames=4)
    seen = []
    fit_smplx_to_joints(
        smplx_joints(poses, model)[:, :22], model, iters=5, progress=lambda d, n: seen.append(d)
    )
    assert seen == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "joints, needle",
    [
        (np.zeros((0, 22, 3)), "wrong joints shape"),
        (np.zeros((5, 24, 3)), "(T>=1, 22, 3)"),
        (np.zeros((5, 66)), "wrong joints shape"),
        (np.full((5, 22, 3), np.nan), "non-finite"),
        ([["a"]], "not real numbers"),
    ],
)
def test_bad_joints_raise_data_error(model, joints, needle):
    with pytest.raises(DataError, match="key 'joints'") as e:
        fit_smplx_to_joints(joints, model, iters=1)
    assert needle in str(e.value)


def test_bad_model_path_raises_data_error(model, tmp_path):
    joints = np.zeros((3, 22, 3))
    with pytest.raises(DataError, match="SMPL-X model file not found") as e:
        fit_smplx_to_joints(joints, tmp_path / "nowhere", iters=1)
    assert "nowhere" in str(e.value)
    bad = tmp_path / "bad" / "smplx" / "SMPLX_NEUTRAL.npz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read SMPL-X model") as e:
        fit_smplx_to_joints(joints, bad, iters=1)
    assert "SMPLX_NEUTRAL.npz" in str(e.value)
    partial = tmp_path / "partial" / "smplx" / "SMPLX_NEUTRAL.npz"
    partial.parent.mkdir(parents=True)
    np.savez(partial, v_template=np.zeros((10, 3)))
    with pytest.raises(DataError, match="J_regressor"):
        fit_smplx_to_joints(joints, partial, iters=1)
