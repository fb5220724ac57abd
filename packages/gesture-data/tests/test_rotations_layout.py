import numpy as np
import pytest
import torch

from gesture_data import BodyPartLayout, Normalizer, trans_to_velocity, velocity_to_trans
from gesture_data import rotations as R


def test_6d_is_first_two_rows_known_value():
    # 90 degrees about z: R = [[0,-1,0],[1,0,0],[0,0,1]] -> rows 0 and 1.
    aa = torch.tensor([0.0, 0.0, np.pi / 2])
    d6 = R.axis_angle_to_6d(aa)
    np.testing.assert_allclose(d6.numpy(), [0, -1, 0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(R.axis_angle_to_6d(torch.zeros(3)).numpy(), [1, 0, 0, 0, 1, 0])


def test_round_trips():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(50, 55, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(50, 55, 1, generator=g).double() * 3
    flat = aa.reshape(50, 165)
    d6 = R.axis_angle_to_6d(flat)
    assert d6.shape == (50, 330)
    np.testing.assert_allclose(R.rot6d_to_axis_angle(d6).numpy(), flat.numpy(), atol=1e-9)
    m = R.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R.rot6d_to_matrix(R.matrix_to_6d(m)).numpy(), m.numpy(), atol=1e-12)
    # per-joint contiguous layout: joint 7 lives at channels 42..47
    np.testing.assert_allclose(d6[:, 42:48].numpy(), R.axis_angle_to_6d(aa[:, 7]).numpy())


def test_6d_convention_matches_beat2_mean(beat2_clip, beat2_root):
    """The published GestureLSM normaliser mean is reproduced by the row layout only."""
    pub = np.load(beat2_root / "mean_std" / "beatx_2_330_mean.npy").reshape(55, 6)
    aa = torch.from_numpy(beat2_clip.poses).double()
    ours = R.axis_angle_to_6d(aa).reshape(-1, 55, 6).mean(0).numpy()
    # recorded value for this take, joint 0 (pelvis)
    np.testing.assert_allclose(ours[0], [0.982, 0.046, 0.067, -0.065, 0.951, 0.286], atol=2e-3)
    m = R.axis_angle_to_matrix(aa.reshape(-1, 55, 3))
    cols = m[..., :, :2].transpose(-1, -2).reshape(-1, 55, 6).mean(0).numpy()
    err_rows, err_cols = np.abs(ours - pub).mean(), np.abs(cols - pub).mean()
    assert err_rows < 0.05 < 0.15 < err_cols, (err_rows, err_cols)


def test_beat2_layout_split_merge():
    lay = BodyPartLayout.beat2()
    assert lay.dims == {"upper": 78, "hands": 180, "lower": 57, "face": 100}
    g = torch.Generator().manual_seed(1)
    rot = R.axis_angle_to_6d(torch.randn(2, 8, 165, generator=g))
    tv, face = torch.randn(2, 8, 3, generator=g), torch.randn(2, 8, 100, generator=g)
    parts = lay.split(rot, trans_v=tv, face=face)
    assert {k: v.shape[-1] for k, v in parts.items()} == lay.dims
    np.testing.assert_array_equal(parts["upper"][..., :6].numpy(), rot[..., 18:24].numpy())
    merged = lay.merge(parts, base=rot)
    torch.testing.assert_close(merged.rot, rot)
    torch.testing.assert_close(merged.trans_v, tv)
    torch.testing.assert_close(merged.face, face)
    # without base: jaw/eyes (22-24) get identity
    m2 = lay.merge(parts)
    np.testing.assert_allclose(m2.rot[0, 0, 22 * 6 : 23 * 6].numpy(), [1, 0, 0, 0, 1, 0])
    assert BodyPartLayout.seg().dims == {"body": 21 * 6, "hands": 30 * 6}


def test_trans_velocity_round_trip(beat2_clip):
    trans = torch.from_numpy(beat2_clip.trans).double()
    v = trans_to_velocity(trans)
    torch.testing.assert_close(v[:, 1], trans[:, 1])
    torch.testing.assert_close(v[5, 0], trans[5, 0] - trans[4, 0])
    torch.testing.assert_close(v[0], torch.stack([v[1, 0], trans[0, 1], v[1, 2]]))
    back = velocity_to_trans(v, init_xz=trans[0, [0, 2]])
    torch.testing.assert_close(back, trans, atol=1e-9, rtol=0)


def test_normalizer_beat2_and_fit(tmp_path, beat2_root):
    n = Normalizer.from_beat2(beat2_root / "mean_std")
    pub_m = np.load(beat2_root / "mean_std" / "beatx_2_330_mean.npy")
    tm = np.load(beat2_root / "mean_std" / "beatx_2_trans_mean.npy")
    assert n.stats["upper"][0].shape == (78,) and n.stats["lower"][0].shape == (57,)
    np.testing.assert_allclose(n.stats["upper"][0][:6], pub_m[18:24])
    np.testing.assert_allclose(n.stats["lower"][0][-3:], tm, rtol=1e-6)
    assert "face" not in n.stats  # GestureLSM: face unnormalised
    x = {"upper": torch.randn(4, 78), "face": torch.randn(4, 100)}
    back = n.denormalize(n.normalize(x))
    torch.testing.assert_close(back["upper"], x["upper"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back["face"], x["face"])
    g = np.random.default_rng(0)
    data = {"a": g.normal(3.0, 2.0, (1000, 5)), "b": np.ones((10, 2))}
    f = Normalizer.fit(data)
    np.testing.assert_allclose(f.stats["a"][0], 3.0, atol=0.2)
    assert f.stats["b"][1].min() >= 1e-4
    f.save(tmp_path / "norm.npz")
    g2 = Normalizer.load(tmp_path / "norm.npz")
    np.testing.assert_array_equal(g2.stats["a"][1], f.stats["a"][1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_normalizer_errors(tmp_path):
    from gesture_data import DataError

    np.save(tmp_path / "beatx_2_330_mean.npy", np.zeros(10, np.float32))
    with pytest.raises(DataError, match=r"beatx_2_330_mean.npy.*expected \(330,\)"):
        Normalizer.from_beat2(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match=r"bad\.npz"):
        Normalizer.load(tmp_path / "bad.npz")
