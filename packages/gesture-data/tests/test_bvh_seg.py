import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gesture_data import DataError
from gesture_data.datasets import bvh, seg

_OK = [HealthCheck.function_scoped_fixture]


def _seg_motion(frames=12, seed=0):
    m = bvh.seg_skeleton()
    g = np.random.default_rng(seed)
    # values representable exactly as written (6 decimals), like SeG's files
    q = lambda a: np.array([float(f"{v:.6f}") for v in a.ravel()]).reshape(a.shape)  # noqa: E731
    m.rotations = q(g.uniform(-79, 77, (frames, 51, 3)))
    m.root_positions = q(
        np.c_[g.normal(0, 5, frames), g.uniform(89.79, 90.44, frames), g.normal(0, 5, frames)]
    )
    m.positions = np.zeros((frames, 51, 3))
    m.positions[:, 0] = m.root_positions
    m.frame_time = 0.016667
    return m


def test_seg_file_round_trip_bit_exact(tmp_path):
    m = _seg_motion()
    p = tmp_path / "HAND_CHOP-4.bvh"
    bvh.write_bvh(p, m)
    raw = p.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") and not raw.endswith(b"\n")
    text = raw.decode()
    assert "Frame Time:   0.016667\r\n" in text and "Frames: 12\r\n" in text
    assert text.count("JOINT ") == 50 and text.count("End Site") == 13
    assert "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" in text
    assert text.count("CHANNELS 3 Zrotation Xrotation Yrotation") == 50
    assert "    JOINT Chest\r\n" in text and "\t" not in text
    motion_lines = text.split("Frame Time:   0.016667\r\n")[1].split("\r\n")
    assert len(motion_lines) == 12 and all(ln[0] in " -" for ln in motion_lines)
    assert len(motion_lines[0].split()) == 156
    r = bvh.read_bvh(p)
    assert r.names == m.names and r.parents == m.parents and len(r.end_sites) == 13
    assert r.rotation_orders == ["ZXY"] * 51 and r.fps == pytest.approx(60, rel=1e-4)
    np.testing.assert_array_equal(r.rotations, m.rotations)
    np.testing.assert_array_equal(r.root_positions, m.root_positions)
    np.testing.assert_array_equal(
        r.offsets, np.array([float(f"{v:.6f}") for v in m.offsets.ravel()]).reshape(51, 3)
    )
    bvh.write_bvh(tmp_path / "again.bvh", r)
    assert (tmp_path / "again.bvh").read_bytes() == raw
    # LF and tab-indented variants parse to the same numbers
    lf = bvh.parse_bvh(text.replace("\r\n", "\n").replace("    ", "\t"))
    np.testing.assert_array_equal(lf.rotations, m.rotations)


def test_forward_kinematics_hand_computed():
    text = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT Arm
    {
      OFFSET 5 0 0
      CHANNELS 3 Xrotation Yrotation Zrotation
      End Site
      {
        OFFSET 0 0 2
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.033333
1 90 2 90 0 0 0 0 0 0 0 0
0 90 0 90 90 0 0 0 90 0 0 0
"""
    m = bvh.parse_bvh(text)
    p = bvh.bvh_forward_kinematics(m, with_end_sites=True)
    # frame 0: root Rz(90) maps Spine (0,10,0) to (-10,0,0) and Arm (5,0,0) to (0,5,0)
    np.testing.assert_allclose(p[0], [[1, 90, 2], [-9, 90, 2], [-9, 95, 2], [-9, 95, 4]], atol=1e-9)
    # frame 1: root Rz(90) Rx(90) (ZXY order) maps (0,10,0) -> (0,0,10); Spine's Y=90
    # maps Arm (5,0,0) -> (0,0,-5), which the root turns into (-5,0,0)
    Rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
    Rx = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)
    Ry = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], float)
    spine = np.array([0, 90, 0]) + Rz @ Rx @ [0, 10, 0]
    arm = spine + Rz @ Rx @ Ry @ [5, 0, 0]
    np.testing.assert_allclose(spine, [0, 90, 10], atol=1e-12)
    np.testing.assert_allclose(arm, [-5, 90, 10], atol=1e-12)
    np.testing.assert_allclose(p[1, 1], spine, atol=1e-9)
    np.testing.assert_allclose(p[1, 2], arm, atol=1e-9)
    # Arm's own XYZ order: 90 about Y (channel 2) sends the end site (0,0,2) along +x
    m.rotations[0, 2] = [0, 90, 0]
    p0 = bvh.bvh_forward_kinematics(m, with_end_sites=True)[0]
    np.testing.assert_allclose(p0[3] - p0[2], Rz @ [2, 0, 0], atol=1e-9)


def test_seg_rest_pose_fk():
    m = _seg_motion(frames=2)
    m.rotations[:] = 0
    p = bvh.bvh_forward_kinematics(m)
    lw = m.names.index("LeftWrist")
    np.testing.assert_allclose(p[:, lw, 0] - p[:, 0, 0], 3 + 13 + 27 + 25)
    neck = m.names.index("Neck")
    np.testing.assert_allclose(p[:, neck, 1] - p[:, 0, 1], 10.5 + 14 + 23.25)


def test_resample_60_to_30_and_25():
    m = _seg_motion(frames=11)
    h = bvh.resample_bvh(m, 30)
    assert h.num_frames == 6 and h.frame_time == pytest.approx(0.033334)
    np.testing.assert_array_equal(h.rotations, m.rotations[::2])
    m2 = _seg_motion(frames=13)
    m2.rotations[:] = np.linspace(0, 12, 13)[:, None, None]  # smooth ramp, 1 deg per frame
    m2.frame_time = 1 / 60
    q = bvh.resample_bvh(m2, 25)
    assert q.num_frames == 6  # 0 .. 0.2 s
    # slerp is not linear in each Euler angle, but close for small steps
    np.testing.assert_allclose(q.rotations[:, 5, 0], np.arange(6) * 60 / 25, atol=0.01)


def test_bvh_errors(tmp_path):
    m = _seg_motion(frames=3)
    p = tmp_path / "x.bvh"
    bvh.write_bvh(p, m)
    text = p.read_text()
    (tmp_path / "t.bvh").write_text(text[: len(text) - 40])
    with pytest.raises(DataError, match=r"t\.bvh.*MOTION.*expected 3 frames x 156"):
        bvh.read_bvh(tmp_path / "t.bvh")
    (tmp_path / "h.bvh").write_text(text[:2000])
    with pytest.raises(DataError, match=r"h\.bvh"):
        bvh.read_bvh(tmp_path / "h.bvh")
    (tmp_path / "n.bvh").write_text(text.replace("OFFSET 0.000000", "OFFSET abc", 1))
    with pytest.raises(DataError, match=r"not a number.*abc"):
        bvh.read_bvh(tmp_path / "n.bvh")
    (tmp_path / "c.bvh").write_text(text.replace("CHANNELS 3", "CHANNELS 4", 1))
    with pytest.raises(DataError, match="CHANNELS"):
        bvh.read_bvh(tmp_path / "c.bvh")
    with pytest.raises(DataError, match="missing"):
        bvh.read_bvh(tmp_path / "nope.bvh")


@settings(max_examples=60, deadline=None, suppress_health_check=_OK)
@given(data=st.binary(max_size=300))
def test_bvh_random_bytes(tmp_path, data):
    p = tmp_path / "r.bvh"
    p.write_bytes(data)
    with pytest.raises(DataError):
        bvh.read_bvh(p)


_TOKENS = [
    "HIERARCHY",
    "ROOT",
    "JOINT",
    "End",
    "Site",
    "{",
    "}",
    "OFFSET",
    "CHANNELS",
    "6",
    "3",
    "0",
    "1.5",
    "-2",
    "nan",
    "inf",
    "Xposition",
    "Yposition",
    "Zposition",
    "Zrotation",
    "Xrotation",
    "Yrotation",
    "MOTION",
    "Frames:",
    "Frame",
    "Time:",
    "A",
]


@settings(max_examples=80, deadline=None)
@given(
    toks=st.lists(st.sampled_from(_TOKENS), max_size=60),
    cut=st.integers(0, 400),
    sep=st.sampled_from([" ", "\n", "\r\n", "\t"]),
)
def test_bvh_odd_text_only_data_errors(toks, cut, sep):
    valid = bvh.format_bvh(_seg_motion(frames=1))
    for text in (sep.join(toks), valid[: cut * 20] + sep.join(toks)):
        with contextlib.suppress(DataError):
            bvh.parse_bvh(text)


def test_seg_label_rules():
    assert seg.label_to_stem("HAND CHOP [1]") == "HAND_CHOP"
    assert seg.label_to_stem("THUMB, FOREFINGER AND LITTLE-FINGER RAISE [1]") == (
        "THUMB_FOREFINGER_AND_LITTLE_FINGER_RAISE"
    )
    assert seg.label_to_stem("FOREFINGER-AND-MIDDLE-FINGER'SMOKE' [1]") == (
        "FOREFINGER_AND_MIDDLE_FINGERSMOKE"
    )
    assert seg.label_to_stem("EYE 'TELESCOPE' [1]") == "EYE_'TELESCOPE'"
    assert seg.label_to_stem("THROAT 'CUT'") == "THROAT_'CUT'"
    assert seg.label_to_stem("ARMS  -  FOLD") == "ARMS_FOLD"


def test_seg_inventory(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "sg_list"
    ws.append(["Notes: semantic gesture list"])
    ws.append(["Sources: [1] ... [5] ..."])
    ws.merge_cells("A1:F1")
    ws.merge_cells("A2:F2")
    ws.append(seg.HEADER)
    ws.append(["0020", "[1]", "HAND CHOP [1]", "The hand chops down. [1]", "decisive", "Cut it."])
    ws.append(["3131", "[5]", "FOREFINGER RAISE", "Raise the index finger.", "attention", "Wait!"])
    ws.append(["2210", "[3]", "EYE 'TELESCOPE'", "Look through the hand.", "seeing", "Look."])
    ws.append(
        [
            "0007",
            "[5]",
            "ARMS FOLD",
            "Fold arms.",
            "closed",
            "Hmm.",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            " ",
        ]
    )
    wb.save(tmp_path / "SeG_list.xlsx")
    d = tmp_path / "bvh"
    d.mkdir()
    m = _seg_motion(frames=2)
    for name in (
        "HAND_CHOP-4",
        "HAND_CHOP-1",
        "HAND_CHOP-10",
        "FOREFINGER_RAISE",
        "EYE_'TELESCOPE'-1",
    ):
        bvh.write_bvh(d / f"{name}.bvh", m)
    recs = seg.read_seg_inventory(tmp_path / "SeG_list.xlsx", d)
    assert [r.index for r in recs] == ["0020", "3131", "2210", "0007"]
    chop = recs[0]
    assert chop.source == "[1]" and seg.strip_citation(chop.label) == "HAND CHOP"
    assert [p.name for p in chop.files] == [
        "HAND_CHOP-1.bvh",
        "HAND_CHOP-4.bvh",
        "HAND_CHOP-10.bvh",
    ]
    assert [p.name for p in recs[1].files] == ["FOREFINGER_RAISE.bvh"]
    assert [p.name for p in recs[2].files] == ["EYE_'TELESCOPE'-1.bvh"]
    assert recs[3].files == [] and recs[3].example == "Hmm."
    (tmp_path / "bad.xlsx").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"bad\.xlsx"):
        seg.read_seg_inventory(tmp_path / "bad.xlsx")
