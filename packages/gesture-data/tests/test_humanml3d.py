import numpy as np
import pytest
import torch

from gesture_data import DataError
from gesture_data.datasets import humanml3d as h


def test_recover_from_ric_matches_fixture(h3d_root):
    vecs = np.load(h3d_root / "new_joint_vecs" / "012314.npy")
    joints = np.load(h3d_root / "new_joints" / "012314.npy")
    assert vecs.shape == (170, 263) and joints.shape == (170, 22, 3)
    rec = h.recover_from_ric(torch.from_numpy(vecs))
    assert rec.shape == (170, 22, 3) and rec.dtype == torch.float32
    assert np.abs(rec.numpy() - joints).max() < 1e-4
    rec64 = h.recover_from_ric(vecs.astype(np.float64))
    assert np.abs(rec64 - joints).max() < 1e-4
    # batched input
    assert h.recover_from_ric(torch.from_numpy(vecs)[None].repeat(2, 1, 1)).shape == (2, 170, 22, 3)


def test_joints_features_round_trip(h3d_root):
    joints = np.load(h3d_root / "new_joints" / "012314.npy")
    vecs = np.load(h3d_root / "new_joint_vecs" / "012314.npy")
    f = h.joints_to_features(joints)
    assert f.shape == (169, 263)
    back = h.recover_from_ric(f.astype(np.float64))
    assert np.abs(back - joints[:-1]).max() < 1e-4
    # HumanML3D's own vector is reproduced, all 263 channels, away from the clip end (the
    # published one saw one more source frame, which shifts the end of the heading smoothing)
    np.testing.assert_allclose(f[:100], vecs[:100], atol=1e-4)
    assert np.abs(f - vecs[:-1]).max() < 0.05
    np.testing.assert_array_equal(f[:, 259:], vecs[:-1, 259:])  # foot contacts
    # the geometrically intended facing (hips not swapped) changes the root yaw channels
    # but still round-trips
    g = h.joints_to_features(joints, hips_swapped=False)
    assert np.abs(g[:100, 0] - vecs[:100, 0]).max() > 1e-2
    assert np.abs(h.recover_from_ric(g.astype(np.float64)) - joints[:-1]).max() < 1e-4


def test_canonicalisation_of_moved_motion(h3d_root):
    joints = np.load(h3d_root / "new_joints" / "012314.npy").astype(np.float64)
    # rotate about Y, shift and lift: the features do not change
    a = 0.7
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = joints @ R.T + np.array([1.5, 0.3, -2.0])
    np.testing.assert_allclose(h.joints_to_features(moved), h.joints_to_features(joints), atol=1e-4)


def test_mean_std_groups(h3d_root):
    vecs = np.load(h3d_root / "new_joint_vecs" / "012314.npy")
    m, s = h.mean_std([vecs[:80], vecs[80:]])
    np.testing.assert_allclose(m, vecs.mean(0), atol=1e-5)
    assert np.unique(s[4:67]).size == 1 and np.unique(s[259:]).size == 1
    # the published Std has the same group structure
    pub = np.load(h3d_root / "Std.npy")
    for a, b in [(0, 1), (1, 3), (3, 4), (4, 67), (67, 193), (193, 259), (259, 263)]:
        assert np.unique(pub[a:b]).size == 1


def test_dataset_files_round_trip(tmp_path, h3d_root):
    joints = np.load(h3d_root / "new_joints" / "012314.npy")
    caps = {"000001": [h.Caption("a man serves a ball.", ["a/DET", "man/NOUN"], 0.0, 0.0)]}
    h.write_dataset(
        tmp_path,
        {"000001": joints, "000002": joints[:60]},
        caps,
        {"train": ["000001"], "test": ["000002"]},
    )
    r = h.HumanML3DReader(tmp_path)
    assert r.ids("train") == ["000001"] and r.ids() == ["000001", "000002"]
    assert r.features("000002").shape == (59, 263) and r.mean.shape == (263,)
    assert r.joints("000001").shape == (169, 22, 3)
    assert r.texts("000001")[0].caption == "a man serves a ball."
    assert r.texts("000001")[0].tokens == ["a/DET", "man/NOUN"]
    (tmp_path / "texts" / "bad.txt").write_text("only#two\n")
    with pytest.raises(DataError, match=r"bad\.txt"):
        r.texts("bad")
    np.save(tmp_path / "new_joint_vecs" / "x.npy", np.zeros((5, 250), np.float32))
    with pytest.raises(DataError, match=r"x\.npy.*expected \('T', 263\)"):
        r.features("x")
    with pytest.raises(DataError, match="missing"):
        r.features("nope")
    with pytest.raises(DataError, match="joints"):
        h.joints_to_features(np.zeros((5, 21, 3)))
    bad = joints.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        h.joints_to_features(bad)


def test_splits_and_captions():
    ids = [f"{i:06d}" for i in range(40)]
    s = h.make_splits(ids, seed=1)
    assert len(s["test"]) == 6 and len(s["val"]) == 2 and len(s["train"]) == 32
    assert sorted(s["train"] + s["val"] + s["test"]) == ids
    assert s["train_val"] == sorted(s["train"] + s["val"]) and s == h.make_splits(ids, seed=1)
    c = h.make_caption("A man waves, then claps.")
    assert c.tokens == ["a/X", "man/X", "waves/X", "then/X", "claps/X"]
    assert h.parse_caption_line(c.line()) == c


def test_uniform_skeleton(h3d_root):
    joints = np.load(h3d_root / "new_joints" / "012314.npy").astype(np.float64)
    same = h.uniform_skeleton(joints, h.skeleton_offsets(joints[0]))
    assert np.abs(same - joints).max() < 1e-4  # HumanML3D joints are already uniform
    tgt = h.skeleton_offsets(joints[0]) * 1.5
    big = h.uniform_skeleton(joints, tgt)
    for j, p in enumerate(h.PARENTS):
        if p >= 0:
            b0, b1 = joints[:, j] - joints[:, p], big[:, j] - big[:, p]
            np.testing.assert_allclose(
                np.linalg.norm(b1, axis=-1), np.linalg.norm(tgt[j]), rtol=1e-6
            )
            cos = (b0 * b1).sum(-1) / np.linalg.norm(b0, axis=-1) / np.linalg.norm(b1, axis=-1)
            assert cos.min() > 1 - 1e-9  # directions kept
    np.testing.assert_allclose(big[:, 0], joints[:, 0] * 1.5, rtol=1e-9)
