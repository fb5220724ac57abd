"""Bad-input campaign over gesture_eval's loaders and metric functions.

Every case must raise :class:`EvalError` whose message names the file or argument. Failure
messages start with UNTYPED (another exception escaped), SILENT (a number came back) or
MESSAGE (typed, but does not say where) so a run on old code can be tallied by outcome.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import gesture_eval as ge
from gesture_eval import EvalError, FGDEncoder
from gesture_eval import audio as ge_audio
from gesture_eval import text as ge_text


def expect_error(fn, *names):
    try:
        out = fn()
    except EvalError as e:
        msg = str(e)
        for n in names:
            assert str(n) in msg, f"MESSAGE: {msg[:300]!r} does not name {n!r}"
        return
    except Exception as e:
        pytest.fail(f"UNTYPED: {type(e).__name__}: {str(e)[:200]}")
    pytest.fail(f"SILENT: returned {out!r:.80}")


class Evil:
    """Unpickling this runs code: a checkpoint holding it must be refused unread."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/_gesture_eval_bad_input_pwned",))


class Custom:
    def __init__(self):
        self.w = torch.zeros(2)


@pytest.fixture(scope="module")
def emage_state():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in FGDEncoder().state_dict().items()}


# cases that fail before the key layout is compared use a small state: saving the full
# encoder for each case would dominate this module's run time
_FULL = {"missing_key", "unexpected_key", "wrong_shape"}


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in FGDEncoder.tiny().state_dict().items()}


EMAGE_CASES = [
    "missing",
    "directory",
    "empty",
    "garbage",
    "truncated",
    "legacy_pickle_evil",
    "zip_evil",
    "custom_class",
    "list",
    "no_model_state",
    "model_state_list",
    "non_tensor_value",
    "int_keys",
    "missing_key",
    "unexpected_key",
    "wrong_shape",
    "tensor_nan",
    "tensor_inf",
]


def _emage_case(kind: str, tmp: Path, state: dict):
    p = tmp / "AESKConv_240_100.bin"
    s = dict(state)
    k0 = sorted(k for k in s if s[k].is_floating_point())[0]
    names: tuple = ()
    if kind == "missing":
        return p, ()
    if kind == "directory":
        p.mkdir()
        return p, ()
    if kind == "empty":
        p.write_bytes(b"")
        return p, ()
    if kind == "garbage":
        p.write_bytes(b"\x80\x04garbage" * 10)
        return p, ()
    if kind == "truncated":
        torch.save({"model_state": s}, p)
        p.write_bytes(p.read_bytes()[:2000])
        return p, ()
    if kind == "legacy_pickle_evil":
        p.write_bytes(pickle.dumps({"model_state": Evil()}))
        return p, ()
    if kind == "zip_evil":
        torch.save({"model_state": s, "x": Evil()}, p)
        return p, ()
    if kind == "custom_class":
        torch.save({"model_state": Custom()}, p)
        return p, ("weights-only",)  # refused before anything is built
    if kind == "list":
        torch.save([1, 2], p)
        return p, ("model_state",)
    if kind == "no_model_state":
        torch.save({"state_dict": s}, p)
        return p, ("model_state",)
    if kind == "model_state_list":
        torch.save({"model_state": [1, 2]}, p)
        return p, ("model_state",)
    if kind == "non_tensor_value":
        s[k0] = [1.0, 2.0]
        names = (k0,)
    elif kind == "int_keys":
        s = {0: torch.zeros(2)}
    elif kind == "missing_key":
        del s[k0]
        names = (k0,)
    elif kind == "unexpected_key":
        s["module.extra.weight"] = torch.zeros(2)
        names = ("extra.weight",)
    elif kind == "wrong_shape":
        s[k0] = torch.zeros(*s[k0].shape, 2)
        names = (k0,)
    elif kind in ("tensor_nan", "tensor_inf"):
        s[k0] = s[k0].clone()
        s[k0].view(-1)[0] = float("nan") if kind == "tensor_nan" else float("inf")
        names = (k0,)
    torch.save({"model_state": s}, p)
    return p, names


@pytest.mark.parametrize("kind", EMAGE_CASES)
def test_emage_checkpoint_bad(kind, tmp_path, request):
    marker = Path("/tmp/_gesture_eval_bad_input_pwned")
    marker.unlink(missing_ok=True)
    state = request.getfixturevalue("emage_state" if kind in _FULL else "tiny_state")
    p, names = _emage_case(kind, tmp_path, state)
    expect_error(lambda: FGDEncoder.from_emage_checkpoint(p), p.name, *names)
    assert not marker.exists(), "a checkpoint ran code while loading"


def test_emage_checkpoint_good(tmp_path, emage_state):
    torch.save({"model_state": {"module." + k: v for k, v in emage_state.items()}}, tmp_path / "a")
    assert isinstance(FGDEncoder.from_emage_checkpoint(tmp_path / "a"), FGDEncoder)


SYNC_CASES = ["missing", "garbage", "legacy_pickle_evil", "zip_evil", "list", "non_tensor"]


@pytest.mark.parametrize("kind", SYNC_CASES)
def test_syncnet_checkpoint_bad(kind, tmp_path):
    p = tmp_path / "syncnet_v2.model"
    if kind == "garbage":
        p.write_bytes(b"garbage" * 10)
    elif kind == "legacy_pickle_evil":
        p.write_bytes(pickle.dumps({"__S__.x": Evil()}))
    elif kind == "zip_evil":
        torch.save({"__S__.x": Evil()}, p)
    elif kind == "list":
        torch.save([torch.zeros(2)], p)
    elif kind == "non_tensor":
        torch.save({"__S__.netcnnaud.0.weight": "x"}, p)
    expect_error(lambda: ge.SyncNet.from_syncnet_checkpoint(p), p.name)


# ---------------------------------------------------------------------------------------
# SMPL-X model files
SMPLX_CASES = [
    "missing",
    "garbage",
    "npy_not_npz",
    "missing_keys",
    "object_member",
    "regressor_rows",
    "v_template_nan",
    "shapedirs_wrong",
    "string_member",
]


def _small_smplx() -> dict:
    # the keys and layout SmplxRest reads, at 100 vertices and 10 shape components
    V = 100
    g = np.random.default_rng(0)
    parents = np.array(ge.SMPLX_PARENTS, np.int64)
    return dict(
        v_template=g.normal(0, 0.3, (V, 3)).astype(np.float32),
        shapedirs=np.zeros((V, 3, 10), np.float32),
        J_regressor=np.full((55, V), 1.0 / V, np.float32),
        kintree_table=np.stack([parents, np.arange(55)]),
        f=np.zeros((10, 3), np.int32),
    )


def _smplx_case(kind: str, tmp: Path):
    p = tmp / "SMPLX_NEUTRAL_2020.npz"
    if kind == "missing":
        return p, ()
    if kind == "garbage":
        p.write_bytes(b"PK\x03\x04garbage")
        return p, ()
    if kind == "npy_not_npz":
        with open(p, "wb") as f:
            np.save(f, np.zeros(3))
        return p, ()
    d = _small_smplx()
    key = None
    if kind == "missing_keys":
        del d["J_regressor"]
        key = "J_regressor"
    elif kind == "object_member":
        d["v_template"] = np.array([{"a": 1}], dtype=object)
        key = "v_template"
    elif kind == "regressor_rows":
        d["J_regressor"] = d["J_regressor"][:20]
        key = "J_regressor"
    elif kind == "v_template_nan":
        d["v_template"][0, 0] = np.nan
        key = "v_template"
    elif kind == "shapedirs_wrong":
        d["shapedirs"] = d["shapedirs"][:, :2]
        key = "shapedirs"
    elif kind == "string_member":
        d["v_template"] = np.array(["x"] * 3)
        key = "v_template"
    with open(p, "wb") as f:
        np.savez(f, **d)
    return p, (key,)


@pytest.mark.parametrize("kind", SMPLX_CASES)
def test_smplx_file_bad(kind, tmp_path):
    ge.body._load_rest_arrays.cache_clear()
    p, names = _smplx_case(kind, tmp_path)
    expect_error(lambda: ge.SmplxRest(p), p.name, *names)


def test_smplx_file_good(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, **_small_smplx())
    assert ge.SmplxRest(p) is not None


# ---------------------------------------------------------------------------------------
# metric functions
def _joints(T=200, J=55, seed=0):
    g = np.random.default_rng(seed)
    return np.cumsum(g.normal(0, 0.01, (T, J, 3)), 0).astype(np.float32)


def _audio(seconds=200 / 30, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 3 * t) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _nan(a, idx=3):
    a = np.array(a, dtype=np.float32, copy=True)
    a.reshape(-1)[idx] = np.nan
    return a


_F = np.random.default_rng(0).normal(size=(20, 8))
MV = np.full(55, 0.01)

METRIC_CASES = {
    "fd_nan": (lambda: ge.frechet_distance(_nan(_F), _F), "feats_a"),
    "fd_wrong_dim": (lambda: ge.frechet_distance(_F, _F[:, :7]), "feats_b"),
    "fd_one_sample": (lambda: ge.frechet_distance(_F[:1], _F), "feats_a"),
    "fd_3d": (lambda: ge.frechet_distance(_F[None], _F), "feats_a"),
    "fd_strings": (lambda: ge.frechet_distance(np.array([["a"] * 8] * 3), _F), "feats_a"),
    "fd_variant": (lambda: ge.frechet_distance(_F, _F, variant="cvpr25"), "variant"),
    "fd_eps_negative": (lambda: ge.frechet_distance(_F, _F, eps=-1.0), "eps"),
    "fds_dims": (
        lambda: ge.frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)),
        "mu",
    ),
    "fds_nan": (
        lambda: ge.frechet_distance_from_stats(
            _nan(np.zeros(3), 0), np.eye(3), np.zeros(3), np.eye(3)
        ),
        "mu_a",
    ),
    "fds_not_square": (
        lambda: ge.frechet_distance_from_stats(
            np.zeros(3), np.ones((3, 2)), np.zeros(3), np.eye(3)
        ),
        "sigma_a",
    ),
    "bc_nan_joints": (
        lambda: ge.beat_consistency(_nan(_joints()), _audio(), mean_velocity=MV),
        "joints",
    ),
    "bc_nan_audio": (
        lambda: ge.beat_consistency(_joints(), _nan(_audio()), mean_velocity=MV),
        "audio",
    ),
    "bc_stereo": (
        lambda: ge.beat_consistency(_joints(), np.stack([_audio()] * 2), mean_velocity=MV),
        "audio",
    ),
    "bc_rate_44k": (
        lambda: ge.beat_consistency(_joints(), _audio(), sample_rate=44100, mean_velocity=MV),
        "sample_rate",
    ),
    "bc_fps_zero": (
        lambda: ge.beat_consistency(_joints(), _audio(), fps=0, mean_velocity=MV),
        "fps",
    ),
    "bc_fps_negative": (
        lambda: ge.beat_consistency(_joints(), _audio(), fps=-30, mean_velocity=MV),
        "fps",
    ),
    "bc_22_joints": (
        lambda: ge.beat_consistency(_joints(J=22), _audio(), mean_velocity=MV),
        "joints",
    ),
    "bc_short": (lambda: ge.beat_consistency(_joints(T=40), _audio(), mean_velocity=MV), "joints"),
    "bc_mv_nan": (
        lambda: ge.beat_consistency(_joints(), _audio(), mean_velocity=_nan(MV)),
        "mean_velocity",
    ),
    "bc_mv_shape": (
        lambda: ge.beat_consistency(_joints(), _audio(), mean_velocity=MV[:10]),
        "mean_velocity",
    ),
    "bc_short_audio": (
        lambda: ge.beat_consistency(_joints(), _audio(1.0), mean_velocity=MV),
        "audio",
    ),
    "l1_nan": (lambda: ge.l1_diversity(_nan(_joints())), "joints"),
    "l1_empty": (lambda: ge.l1_diversity(np.zeros((0, 55, 3))), "joints"),
    "l1_1d": (lambda: ge.l1_diversity(np.zeros(10)), "joints"),
    "l1_strings": (lambda: ge.l1_diversity(np.array([["a", "b", "c"]])), "joints"),
    "face_shape": (lambda: ge.face_mse(np.zeros((5, 10, 3)), np.zeros((5, 11, 3))), "vertices"),
    "face_nan": (
        lambda: ge.face_lvd(_nan(np.zeros((5, 10, 3))), np.zeros((5, 10, 3))),
        "pred_vertices",
    ),
    "srgr_nan": (lambda: ge.srgr(_nan(_joints(T=10)), _joints(T=10)), "pred_joints"),
    "srgr_threshold": (lambda: ge.srgr(_joints(T=10), _joints(T=10), threshold=-1.0), "threshold"),
    "srgr_semantic_nan": (
        lambda: ge.srgr(_joints(T=10), _joints(T=10), semantic=_nan(np.ones(10), 0)),
        "semantic",
    ),
    "fgdfeat_nan": (
        lambda: ge.fgd_features(_nan(np.zeros((64, 165))), FGDEncoder.tiny()),
        "axis_angle",
    ),
    "fgdfeat_short": (
        lambda: ge.fgd_features(np.zeros((10, 165)), FGDEncoder.tiny()),
        "axis_angle",
    ),
    "fgdfeat_shape": (lambda: ge.fgd_features(np.zeros((64, 66)), FGDEncoder.tiny()), "axis_angle"),
    "encode_nan": (
        lambda: FGDEncoder.tiny().encode(torch.full((1, 32, 330), float("nan"))),
        "rot6d",
    ),
    "encode_shape": (lambda: FGDEncoder.tiny().encode(torch.zeros(1, 32, 329)), "rot6d"),
    "bleu_string": (lambda: ge_text.bleu("a b", ["a b"]), "hypotheses"),
    "bleu_lengths": (lambda: ge_text.bleu(["a b"], ["a b", "c"]), "references"),
    "bleu_non_string": (lambda: ge_text.bleu([3], ["a b"]), "hypotheses"),
    "lsd_nan": (lambda: ge_audio.log_spectral_distance(_nan(_audio()), _audio()), "pred_audio"),
    "lsd_short": (lambda: ge_audio.log_spectral_distance(_audio(0.01), _audio(0.01)), "audio"),
    "mcd_align": (lambda: ge_audio.mel_cepstral_distortion(_audio(), _audio(), align="x"), "align"),
    "eval_nan_pred": (
        lambda: ge.evaluate(pred_joints=[_nan(_joints())], audios=[_audio()], mean_velocity=MV),
        "pred_joints",
    ),
    "eval_count_mismatch": (
        lambda: ge.evaluate(pred_joints=[_joints()], audios=[_audio(), _audio()]),
        "audios",
    ),
    "eval_nothing": (lambda: ge.evaluate(), "pred_poses"),
    "eval_gt_nan": (
        lambda: ge.evaluate(
            pred_poses=[np.zeros((64, 165))],
            gt_poses=[_nan(np.zeros((64, 165)))],
            fgd_encoder=FGDEncoder.tiny(),
        ),
        "gt_poses",
    ),
    "eval_fps_zero": (
        lambda: ge.evaluate(pred_joints=[_joints()], audios=[_audio()], mean_velocity=MV, fps=0),
        "fps",
    ),
    "bc_class_compute_empty": (lambda: ge.BeatConsistency(mean_velocity=MV).compute(), "update"),
}


@pytest.mark.parametrize("kind", sorted(METRIC_CASES))
def test_metric_bad(kind):
    fn, name = METRIC_CASES[kind]
    expect_error(fn, name)
