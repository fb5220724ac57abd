import json

import numpy as np
import pytest
import torch

from gesture_data import DataError
from gesture_data.datasets import humanml3d, ktubeum, synthetic
from gesture_data.datasets.smplx_model import smplx_joints, write_synthetic_smplx_model
from gesture_data.rotations import axis_angle_to_6d
from gesture_data.skeleton import smplx_joints_approx


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bodymodels")
    write_synthetic_smplx_model(root)
    return root


@pytest.fixture(scope="module")
def clean_clip():
    return synthetic.make_clip(0, seconds=4.0, seed=11)


def _write_jsons(d, poses, seed=0, noise=0.03):
    g = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    noisy = poses + g.normal(0, noise, poses.shape).astype(np.float32)
    for t, p in enumerate(noisy):
        frame = {
            "smplx_root_pose": [p[0:3].tolist()],
            "smplx_body_pose": p[3:66].tolist(),
            "smplx_lhand_pose": p[75:120].tolist(),
            "smplx_rhand_pose": p[120:165].tolist(),
            "smplx_jaw_pose": p[66:69].tolist(),
            "smplx_shape": [0.1] * 10,
            "smplx_expr": [0.0] * 10,
            "cam_trans": [0.1 * t, 0.2, 5.0 + g.normal()],
        }
        (d / f"frame_{t:05d}.json").write_text(json.dumps(frame))
    return noisy


def test_synthetic_model_drives_smplx(model_root, clean_clip):
    npz = np.load(model_root / "smplx" / "SMPLX_NEUTRAL.npz")
    assert npz["shapedirs"].shape == (10475, 3, 400) and npz["posedirs"].shape == (10475, 3, 486)
    assert npz["J_regressor"].shape == (55, 10475) and npz["kintree_table"].shape == (2, 55)
    poses, trans = clean_clip.poses[:40], clean_clip.trans[:40]
    j = smplx_joints(poses, model_root, trans=trans, betas=np.zeros(10))
    assert j.shape == (40, 55, 3)
    approx = smplx_joints_approx(
        torch.from_numpy(poses).double(), torch.from_numpy(trans).double()
    ).numpy()
    assert np.abs(j - approx).max() < 1e-5  # our FK and smplx agree on the same skeleton
    with pytest.raises(DataError, match="SMPL-X model"):
        smplx_joints(poses, model_root / "nowhere")


def test_pose_json_to_npz_filters_and_fixes_root(tmp_path, clean_clip):
    clean = clean_clip.poses
    noisy = _write_jsons(tmp_path / "json", clean)
    out = ktubeum.pose_json_to_npz(tmp_path / "json", tmp_path / "clip.npz", cutoff_hz=6.0)
    z = np.load(tmp_path / "clip.npz")
    assert z["poses"].shape == (120, 165) and int(z["mocap_frame_rate"]) == 30
    np.testing.assert_array_equal(z["poses"], out["poses"])
    assert np.ptp(z["poses"][:, :3], axis=0).max() == 0 and np.ptp(z["trans"], axis=0).max() == 0
    np.testing.assert_allclose(z["betas"][:10], 0.1, rtol=1e-6)

    def err(p):  # body+hands error vs the clean motion, in 6D
        a = axis_angle_to_6d(torch.from_numpy(p[:, 3:]).double())
        b = axis_angle_to_6d(torch.from_numpy(clean[:, 3:]).double())
        return float((a - b).abs().mean())

    assert err(z["poses"]) < 0.6 * err(noisy)


def test_ktubeum_to_humanml3d(tmp_path, model_root, clean_clip):
    _write_jsons(tmp_path / "j", clean_clip.poses, noise=0.0)
    z = ktubeum.pose_json_to_npz(tmp_path / "j", tmp_path / "c.npz")
    joints = ktubeum.npz_to_humanml3d_joints(z["poses"], model_root, z["betas"])
    assert joints.shape == (int(np.floor(119 / 30 * 20)) + 1, 22, 3)
    humanml3d.write_dataset(tmp_path / "KTubeUM", {"000000": joints}, splits={"train": ["000000"]})
    r = humanml3d.HumanML3DReader(tmp_path / "KTubeUM")
    f = r.features("000000")
    assert f.shape == (joints.shape[0] - 1, 263)
    rec = humanml3d.recover_from_ric(f.astype(np.float64))
    canon = humanml3d.canonicalize(joints)[:-1]
    assert np.abs(rec - canon).max() < 1e-4


def test_pose_json_errors(tmp_path):
    d = tmp_path / "j"
    _write_jsons(d, np.zeros((3, 165), np.float32))
    f1 = d / "frame_00001.json"
    f1.write_text(f1.read_text()[:50])
    with pytest.raises(DataError, match=r"frame_00001\.json.*corrupt"):
        ktubeum.read_pose_jsons(d)
    _write_jsons(d, np.zeros((3, 165), np.float32))
    data = json.loads(f1.read_text())
    del data["smplx_body_pose"]
    f1.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"frame_00001\.json: key 'smplx_body_pose'.*missing"):
        ktubeum.read_pose_jsons(d)
    data["smplx_body_pose"] = [0.0] * 60
    f1.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"expected 63, found 60"):
        ktubeum.read_pose_jsons(d)
    data["smplx_body_pose"] = [float("nan")] * 63
    f1.write_text(json.dumps(data))
    with pytest.raises(DataError, match="non-finite"):
        ktubeum.read_pose_jsons(d)
    with pytest.raises(DataError, match="no pose json"):
        ktubeum.read_pose_jsons(tmp_path / "empty_dir_that_is_missing")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OK = [HealthCheck.function_scoped_fixture]
_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200), doc=_json_values, key=st.sampled_from(sorted(ktubeum.KEYS)))
def test_random_json_only_data_errors(tmp_path, raw, doc, key):
    p = tmp_path / "f_0.json"
    p.write_bytes(raw)
    with pytest.raises(DataError):
        ktubeum.read_pose_jsons([p])
    # well-formed json with one odd field among otherwise valid ones
    good = {k: [0.0] * n for k, n in ktubeum.KEYS.items()}
    good[key] = doc
    p.write_text(json.dumps(good))
    try:
        out = ktubeum.read_pose_jsons([p])
    except DataError:
        return
    assert out[key].shape == (1, ktubeum.KEYS[key])
