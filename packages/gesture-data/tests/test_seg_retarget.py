"""SeG BVH -> SMPL-X retargeting, and SG's code inventory npz.

SeG files may not be redistributed: the tests write BVH files in SeG's exact skeleton
(``seg_skeleton()``: names, hierarchy, channels, 60 fps, CRLF) with seeded rotations.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gesture_data.datasets import read_sg_code_inventory, retarget_seg_to_smplx
from gesture_data.datasets.bvh import (
    BvhMotion,
    bvh_forward_kinematics,
    read_bvh,
    resample_bvh,
    seg_skeleton,
    write_bvh,
)
from gesture_data.errors import DataError
from gesture_data.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from gesture_data.skeleton import SMPLX_NAMES, smplx_joints_approx

SX = {n: i for i, n in enumerate(SMPLX_NAMES)}
FINGERS = ("thumb", "index", "middle", "ring", "pinky")


def _bones() -> dict[str, list[tuple[str, str, str, str]]]:
    """Group -> (SMPL-X from, to, SeG from, to) bones whose world directions must agree."""
    g: dict[str, list] = {k: [] for k in ("upper arm", "forearm", "hand", "finger")}
    g.update(
        {"spine": [("spine1", "spine3", "Chest", "Chest2"), ("spine3", "neck", "Chest2", "Neck")]}
    )
    g.update({"thigh": [], "shin": []})
    for S, s in (("Left", "left"), ("Right", "right")):
        g["upper arm"].append((f"{s}_shoulder", f"{s}_elbow", f"{S}Shoulder", f"{S}Elbow"))
        g["forearm"].append((f"{s}_elbow", f"{s}_wrist", f"{S}Elbow", f"{S}Wrist"))
        g["hand"].append((f"{s}_wrist", f"{s}_middle1", f"{S}Wrist", f"{S}Finger2"))
        for n, f in enumerate(FINGERS):
            g["finger"].append((f"{s}_{f}1", f"{s}_{f}2", f"{S}Finger{n}", f"{S}Finger{n}1"))
            g["finger"].append((f"{s}_{f}2", f"{s}_{f}3", f"{S}Finger{n}1", f"{S}Finger{n}2"))
        g["thigh"].append((f"{s}_hip", f"{s}_knee", f"{S}Hip", f"{S}Knee"))
        g["shin"].append((f"{s}_knee", f"{s}_ankle", f"{S}Knee", f"{S}Ankle"))
    return g


BONES = _bones()
SECONDARY = {
    "secondary": [
        ("pelvis", "left_hip", "Hips", "LeftHip"),
        ("pelvis", "right_hip", "Hips", "RightHip"),
        ("spine3", "left_collar", "Chest2", "LeftCollar"),
        ("spine3", "right_collar", "Chest2", "RightCollar"),
    ]
    + [
        (f"{s}_wrist", f"{s}_{f}1", f"{S}Wrist", f"{S}Finger{n}")
        for S, s in (("Left", "left"), ("Right", "right"))
        for n, f in enumerate(FINGERS)
        if f != "middle"
    ]
}


def _a_pose(sk: BvhMotion) -> BvhMotion:
    """SeG's hierarchy with a different rest: arms 35 deg down (A-pose), chest leaning 10 deg
    forward, so the SMPL-X template's T-pose is not SeG's rest."""
    off = sk.offsets.copy()
    ends = {k: v.copy() for k, v in sk.end_sites.items()}
    idx = {n: i for i, n in enumerate(sk.names)}
    for side, sign in (("Left", -1.0), ("Right", 1.0)):
        down = Rotation.from_euler("z", sign * 35, degrees=True).as_matrix()
        arm = [j for j, n in enumerate(sk.names) if n.startswith(side) and "Collar" not in n]
        arm = [j for j in arm if not any(k in sk.names[j] for k in ("Hip", "Knee", "Ankle", "Toe"))]
        for j in arm:
            off[j] = down @ off[j]
            if j in ends:
                ends[j] = down @ ends[j]
    lean = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    off[idx["Chest2"]] = lean @ off[idx["Chest2"]]
    return replace(sk, offsets=off, end_sites=ends)


def _gesture(sk: BvhMotion, kind: str, seed: int, frames: int = 61) -> BvhMotion:
    """Seeded plausible motion: small smooth motion on every joint, hips swaying at ~90 cm,
    plus a right-hand raise or a right index point (the other fingers curled)."""
    rng = np.random.default_rng(seed)
    J = len(sk.names)
    idx = {n: i for i, n in enumerate(sk.names)}
    s = np.linspace(0.0, 1.0, frames)[:, None]
    base = rng.normal(scale=0.1, size=(1, J, 3))
    wobble = rng.normal(scale=0.08, size=(1, J, 3)) * np.sin(2 * np.pi * s)[:, :, None]
    rv = base + wobble
    if kind == "raise":
        rv[:, idx["RightShoulder"]] = np.c_[0 * s, 0.3 * s, -1.3 * s]  # arm up and a bit forward
        rv[:, idx["RightElbow"]] = np.c_[0 * s, 1.2 * s, 0 * s]
    else:
        rv[:, idx["RightShoulder"]] = np.c_[0 * s, 1.4 * s, 0 * s]  # arm forward
        rv[:, idx["RightElbow"]] = np.c_[0 * s, 0.2 * s, 0 * s]
        for n in (0, 2, 3, 4):  # curl all but the index finger
            for k in ("", "1", "2"):
                rv[:, idx[f"RightFinger{n}{k}"]] = np.c_[0 * s, 0 * s, 1.2 * s]
        for k in ("", "1", "2"):
            rv[:, idx[f"RightFinger1{k}"]] = 0.0
    rot = Rotation.from_rotvec(rv.reshape(-1, 3)).as_euler("ZXY", degrees=True)
    root = np.c_[np.linspace(0, 8, frames), 90 + 2 * np.sin(3 * s[:, 0]), 3 * s[:, 0]]
    return replace(
        sk,
        rotations=rot.reshape(frames, J, 3),
        root_positions=root,
        positions=np.zeros((frames, J, 3)),
    )


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    """(name, BVH read back from a file written in SeG's exact layout)."""
    d = tmp_path_factory.mktemp("seg_bvh")
    out = []
    for rest_name, sk in (("tpose", seg_skeleton()), ("apose", _a_pose(seg_skeleton()))):
        for seed, kind in enumerate(("raise", "point")):
            p = d / f"{kind.upper()}-{seed + 1}_{rest_name}.bvh"
            write_bvh(p, _gesture(sk, kind, seed))
            out.append((p.stem, read_bvh(p)))
    return out


def _angles(smplx_joints: np.ndarray, seg_joints: np.ndarray, names: dict, groups=None) -> dict:
    out = {}
    for group, bones in (groups or BONES).items():
        errs = []
        for a, b, c, d in bones:
            u = smplx_joints[:, SX[b]] - smplx_joints[:, SX[a]]
            v = seg_joints[:, names[d]] - seg_joints[:, names[c]]
            cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
            errs.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        out[group] = float(np.mean(errs))
    return out


def _joints(poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
    # float64 FK: float32 arccos near 1 alone has a floor of ~0.03 deg
    return smplx_joints_approx(poses.astype(np.float64), trans.astype(np.float64)).numpy()


def _naive(bvh: BvhMotion) -> np.ndarray:
    """Baseline: SeG local rotations copied onto the mapped SMPL-X joints (no rest alignment)."""
    from gesture_data.datasets.bvh import local_matrices
    from gesture_data.datasets.seg import SMPLX_FROM_SEG

    m = resample_bvh(bvh, 30)
    loc = local_matrices(m)
    idx = {n: i for i, n in enumerate(m.names)}
    poses = np.zeros((m.num_frames, 55, 3))
    for k, name in enumerate(SMPLX_NAMES):
        if name in SMPLX_FROM_SEG and name != "spine2":
            poses[:, k] = matrix_to_axis_angle(torch.from_numpy(loc[:, idx[SMPLX_FROM_SEG[name]]]))
    return poses.reshape(len(poses), -1)


def test_world_bone_directions_follow_seg(takes):
    # Measured mean angles (deg) on the 4 takes: every group (upper arm, forearm, hand =
    # wrist->middle1, finger, spine, thigh, shin) <= 1.9e-6, the float32 storage of the
    # poses (6e-8 rad = 3.4e-6 deg per rotation, times a chain depth <= 10: the 1e-4 bound).
    # The secondary bones of multi-child joints (hips, collars, the other finger bases) get
    # only a fitted twist; their rest angles differ between the skeletons: measured 15.87 on
    # every take (bound 17), vs 21.9 (T-pose) / 39.7 (A-pose) when copying local rotations.
    for name, bvh in takes:
        motion = retarget_seg_to_smplx(bvh, fps=30.0)
        m30 = resample_bvh(bvh, 30)
        seg = bvh_forward_kinematics(m30)
        names = {n: i for i, n in enumerate(m30.names)}
        ours = _angles(_joints(motion.poses, motion.trans), seg, names)
        for group, err in ours.items():
            assert err < 1e-4, (name, group, err)
        secondary = _angles(_joints(motion.poses, motion.trans), seg, names, SECONDARY)
        assert secondary["secondary"] < 17.0, (name, secondary)
        # translation: the SMPL-X pelvis is SeG's Hips, in metres (SeG is in centimetres);
        # float32 storage of ~1 m values: 6e-8 m
        pelvis = _joints(motion.poses, motion.trans)[:, 0]
        assert np.abs(pelvis - seg[:, 0] / 100.0).max() < 1e-6
        assert 0.85 < motion.trans[:, 1].mean() < 0.95
        if name.endswith("apose"):
            # copying local rotations ignores the rest difference: measured 30.7 (upper arm)
            # and 37.3 deg (forearm) here, vs 6.5 / 2.3 on the T-pose takes
            naive = _angles(_joints(_naive(bvh), motion.trans), seg, names)
            assert naive["upper arm"] > 20 and naive["forearm"] > 20, naive
            naive = _angles(_joints(_naive(bvh), motion.trans), seg, names, SECONDARY)
            assert naive["secondary"] > secondary["secondary"] + 10, (naive, secondary)


def test_length_fps_and_unmapped_joints(takes):
    _, bvh = takes[0]
    assert bvh.num_frames == 61 and abs(bvh.fps - 60) < 0.01
    m = retarget_seg_to_smplx(bvh)
    assert m.fps == 30.0 and m.poses.shape == (31, 165) and m.trans.shape == (31, 3)
    m20 = retarget_seg_to_smplx(bvh, fps=20.0)  # non-integer ratio: slerp resampling
    assert m20.fps == 20.0 and m20.poses.shape == (21, 165)
    # jaw and eyes have no SeG joint: rest pose
    assert np.abs(m.poses[:, 22 * 3 : 25 * 3]).max() == 0
    # spine2 shares SeG's Chest with spine1: it stays at its (constant) rest offset
    sp2 = m.poses[:, SX["spine2"] * 3 : SX["spine2"] * 3 + 3]
    assert np.abs(sp2 - sp2[:1]).max() < 1e-6


def test_extra_and_missing_joints(takes, tmp_path):
    _, bvh = takes[1]
    ref = retarget_seg_to_smplx(bvh)
    # an extra leaf joint (a prop on the right wrist) has no SMPL-X counterpart: skipped;
    # SeG's joints must stay in depth-first order, so it is appended after RightWrist's subtree
    names, parents = list(bvh.names), list(bvh.parents)
    wrist = names.index("RightWrist")
    last = max(j for j in range(len(names)) if _descends(parents, j, wrist))
    at = last + 1
    names.insert(at, "RightProp")
    parents = [p + (p >= at) for p in parents]
    parents.insert(at, wrist)
    ins = lambda a, v: np.insert(a, at, v, axis=-2 if a.ndim == 3 else 0)  # noqa: E731
    ends = {(k + (k >= at)): v for k, v in bvh.end_sites.items()}
    rng = np.random.default_rng(5)
    extra = replace(
        bvh,
        names=names,
        parents=parents,
        offsets=ins(bvh.offsets, [0.0, 0.0, 5.0]),
        channels=[*bvh.channels[:at], ["Zrotation", "Xrotation", "Yrotation"], *bvh.channels[at:]],
        rotations=np.insert(bvh.rotations, at, rng.uniform(-40, 40, (bvh.num_frames, 3)), axis=1),
        positions=np.insert(bvh.positions, at, 0.0, axis=1),
        end_sites=ends,
    )
    write_bvh(tmp_path / "extra.bvh", extra)
    out = retarget_seg_to_smplx(read_bvh(tmp_path / "extra.bvh"))
    assert np.array_equal(out.poses, ref.poses) and np.array_equal(out.trans, ref.trans)
    # a missing SeG joint is named
    broken = replace(bvh, names=[("LeftElbowX" if n == "LeftElbow" else n) for n in bvh.names])
    with pytest.raises(DataError, match="LeftElbow"):
        retarget_seg_to_smplx(broken)
    nan = replace(bvh, rotations=bvh.rotations.copy())
    nan.rotations[3, 7, 1] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        retarget_seg_to_smplx(nan)


def _descends(parents, j, root) -> bool:
    while j >= 0:
        if j == root:
            return True
        j = parents[j]
    return False


def test_retarget_is_rotation_consistent(takes):
    # the retargeted poses are valid rotations: axis-angle -> matrix -> axis-angle round trip
    # (principal range; float64 conversions of the float32 values: measured 4.4e-16 rad)
    m = retarget_seg_to_smplx(takes[2][1])
    aa = torch.from_numpy(m.poses.reshape(-1, 55, 3).astype(np.float64))
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.allclose(back, aa, atol=1e-10, rtol=0)


# --- SG's code inventory -----------------------------------------------------------------
def test_code_inventory(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "rebuild_2210-4_chr00": rng.integers(0, 512, (2, 4, 1, 7)),
        "rebuild_3131-1_chr00": rng.integers(0, 512, (2, 4, 1, 7)),
        "rebuild_0020-12_chr00": rng.integers(0, 512, (2, 4, 1, 9)),
    }
    p = tmp_path / "all_mocap_extracted_new.npz"
    np.savez(p, **arrays)
    inv = read_sg_code_inventory(p)
    assert set(inv) == {("2210", 4), ("3131", 1), ("0020", 12)}
    for (idx, var), codes in inv.items():
        src = arrays[f"rebuild_{idx}-{var}_chr00"]
        assert codes.shape == (2, 4, src.shape[-1]) and codes.dtype == np.int64
        assert np.array_equal(codes, src[:, :, 0])
    bad = tmp_path / "bad_key.npz"
    np.savez(bad, **{"rebuild_2210_chr00": arrays["rebuild_2210-4_chr00"]})
    with pytest.raises(DataError, match=r"bad_key\.npz.*rebuild_2210_chr00"):
        read_sg_code_inventory(bad)
    bad = tmp_path / "bad_shape.npz"
    np.savez(bad, **{"rebuild_2210-4_chr00": np.zeros((2, 4, 7), np.int64)})
    with pytest.raises(DataError, match=r"bad_shape\.npz.*rebuild_2210-4_chr00.*\(2, 4, 7\)"):
        read_sg_code_inventory(bad)
    bad = tmp_path / "floats.npz"
    np.savez(bad, **{"rebuild_2210-4_chr00": np.zeros((2, 4, 1, 7))})
    with pytest.raises(DataError, match="integers"):
        read_sg_code_inventory(bad)
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"trunc\.npz"):
        read_sg_code_inventory(bad)
    with pytest.raises(DataError, match="missing"):
        read_sg_code_inventory(tmp_path / "nope.npz")
