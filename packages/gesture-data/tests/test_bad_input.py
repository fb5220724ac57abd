"""Bad-input campaign over every public reader of gesture_data, tried as a new user would.

Every case must end in :class:`DataError` whose message names the file (or argument) and the
field; a handful of "good" cases (stereo, 8-bit, 44.1 kHz, float32 and 16-bit PCM wavs) must
load and give the right numbers. A failure message starts with UNTYPED (another exception
escaped), SILENT (no error: a wrong result was returned) or MESSAGE (typed, but the message
does not say where), so a run on old code can be tallied by outcome.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gesture_data import DataError, Normalizer
from gesture_data.datasets import beat2, bvh, humanml3d, ktubeum, seg, textgrid
from gesture_data.features import audio as faudio

T = 30


def expect_error(fn, *names):
    """Run ``fn``; it must raise DataError whose one-line message contains every name."""
    try:
        out = fn()
    except DataError as e:
        msg = str(e)
        for n in names:
            assert str(n) in msg, f"MESSAGE: {msg!r} does not name {n!r}"
        assert "\n" not in msg.strip(), f"MESSAGE: not one line: {msg!r}"
        return
    except RecursionError as e:  # pragma: no cover - reported like any other escape
        pytest.fail(f"UNTYPED: RecursionError: {str(e)[:100]}")
    except Exception as e:
        pytest.fail(f"UNTYPED: {type(e).__name__}: {str(e)[:200]}")
    pytest.fail(f"SILENT: returned {type(out).__name__} instead of raising DataError")


# ---------------------------------------------------------------------------------------
# wav
def _tone(sr=16000, seconds=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * 220 * t)
    return np.repeat(x[:, None], channels, 1) if channels > 1 else x


def _wav(path, x, sr=16000, subtype="PCM_16"):
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def _wav_bad(kind, tmp: Path):
    p = tmp / "a.wav"
    good = _wav(tmp / "good.wav", _tone(), subtype="FLOAT").read_bytes()
    if kind == "missing":
        pass
    elif kind == "empty_file":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(b"\x00\x01garbage" * 100)
    elif kind == "text":
        p.write_text("this is not audio\n")
    elif kind == "header_only":
        p.write_bytes(good[:44])
    elif kind == "truncated_header":
        p.write_bytes(good[:20])
    elif kind == "truncated_data":
        p.write_bytes(good[: len(good) // 2 + 3])
    elif kind == "zero_samples":
        _wav(p, np.zeros(0), subtype="FLOAT")
    elif kind == "nan":
        x = _tone().astype(np.float32)
        x[100] = np.nan
        _wav(p, x, subtype="FLOAT")
    elif kind == "inf":
        x = _tone().astype(np.float32)
        x[5] = np.inf
        _wav(p, x, subtype="FLOAT")
    elif kind == "directory":
        p.mkdir()
    elif kind == "npz_named_wav":
        np.savez(p.with_suffix(".npz"), a=np.zeros(3))
        p.write_bytes(p.with_suffix(".npz").read_bytes())
    else:
        raise AssertionError(kind)
    return p


WAV_BAD = [
    "missing",
    "empty_file",
    "garbage",
    "text",
    "header_only",
    "truncated_header",
    "truncated_data",
    "zero_samples",
    "nan",
    "inf",
    "directory",
    "npz_named_wav",
]


@pytest.mark.parametrize("kind", WAV_BAD)
def test_wav_bad(kind, tmp_path):
    p = _wav_bad(kind, tmp_path)
    expect_error(lambda: beat2.load_audio(p), p.name)


@pytest.mark.parametrize(
    "subtype,sr,channels",
    [
        ("FLOAT", 16000, 1),
        ("PCM_16", 16000, 1),
        ("PCM_24", 16000, 1),
        ("PCM_U8", 16000, 1),
        ("PCM_16", 44100, 1),
        ("FLOAT", 48000, 1),
        ("PCM_16", 16000, 2),
        ("PCM_16", 8000, 1),
    ],
)
def test_wav_good_formats(subtype, sr, channels, tmp_path):
    x = _tone(sr, 0.5, channels)
    p = _wav(tmp_path / "a.wav", x, sr, subtype)
    a = beat2.load_audio(p)
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(a.size - 8000) <= 2, "WRONG: not resampled to 16 kHz"
    ref = _tone(16000, 0.5)
    # 8-bit PCM has ~1/128 steps; resampling adds a little ripple at the ends
    assert np.abs(a[200:-200] - ref[200:-200]).max() < 0.03, "WRONG: samples differ"


# ---------------------------------------------------------------------------------------
# BEAT2 npz
def _motion(t=T):
    rng = np.random.default_rng(0)
    return dict(
        poses=rng.normal(0, 0.1, (t, 165)).astype(np.float32),
        trans=np.zeros((t, 3), np.float32),
        expressions=np.zeros((t, 100), np.float32),
        betas=np.zeros(300, np.float32),
        mocap_frame_rate=np.int32(30),
    )


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _npz_case(kind, tmp: Path):
    p = tmp / "2_scott_0_1_1.npz"
    m = _motion()
    if kind == "missing":
        return p, ()
    if kind == "empty_file":
        p.write_bytes(b"")
        return p, ()
    if kind == "garbage":
        p.write_bytes(b"PK\x03\x04" + b"x" * 200)
        return p, ()
    if kind == "truncated":
        _npz(tmp / "full.npz", **m)
        p.write_bytes((tmp / "full.npz").read_bytes()[:3000])
        return p, ()
    if kind == "npy_not_npz":
        with open(p, "wb") as f:
            np.save(f, m["poses"])
        return p, ()
    if kind == "pickle_file":
        p.write_bytes(pickle.dumps(m))
        return p, ()
    if kind.startswith("no_"):
        key = kind[3:]
        del m[key]
        return _npz(p, **m), (key,)
    field, change = kind.split(":")
    a = m.get(field)
    if change == "wrong_width":
        m[field] = np.zeros((T, a.shape[1] - 1), np.float32)
    elif change == "1d":
        m[field] = np.zeros(T * a.shape[-1], np.float32)
    elif change == "3d":
        m[field] = np.zeros((T, a.shape[-1], 1), np.float32)
    elif change == "short":
        m[field] = a[:-5]
    elif change == "nan":
        a = a.astype(np.float32).copy()
        a.flat[7] = np.nan
        m[field] = a
    elif change == "inf":
        a = a.astype(np.float32).copy()
        a.flat[0] = -np.inf
        m[field] = a
    elif change == "string":
        m[field] = np.array(["x"] * a.size).reshape(a.shape)
    elif change == "object":
        m[field] = np.array([{"a": 1}] * 3, dtype=object)
    elif change == "complex":
        m[field] = a.astype(np.complex64) + 1j
    elif change == "empty":
        m[field] = np.zeros((0, *a.shape[1:]), np.float32)
    elif change == "scalar":
        m[field] = np.float32(1.0)
    elif change in ("zero", "negative", "nan_value", "array", "text"):
        m[field] = {
            "zero": np.int32(0),
            "negative": np.int32(-30),
            "nan_value": np.float32(np.nan),
            "array": np.array([30, 60]),
            "text": np.array("thirty"),
        }[change]
    else:
        raise AssertionError(kind)
    if field == "poses" and change in ("empty",):
        for k in ("trans", "expressions"):
            m[k] = m[k][:0]
    if change == "object":
        with open(p, "wb") as f:
            np.savez(f, **m)  # numpy pickles object members; the reader must refuse them
        return p, (field,)
    return _npz(p, **m), (field,)


NPZ_CASES = (
    [
        "missing",
        "empty_file",
        "garbage",
        "truncated",
        "npy_not_npz",
        "pickle_file",
        "no_poses",
        "no_trans",
        "no_expressions",
        "no_betas",
    ]
    + [
        f"{f}:{c}"
        for f in ("poses", "trans", "expressions")
        for c in ("wrong_width", "1d", "3d", "short", "nan", "inf", "string", "object", "complex")
    ]
    + [
        "poses:empty",
        "poses:scalar",
        "betas:nan",
        "betas:string",
        "betas:object",
        "betas:empty",
        "mocap_frame_rate:zero",
        "mocap_frame_rate:negative",
        "mocap_frame_rate:nan_value",
        "mocap_frame_rate:array",
        "mocap_frame_rate:text",
    ]
)


@pytest.mark.parametrize("kind", NPZ_CASES)
def test_beat2_npz_bad(kind, tmp_path):
    p, names = _npz_case(kind, tmp_path)
    if kind == "poses:short":
        names = ()  # the other arrays are the longer ones; any of them may be named
    expect_error(lambda: beat2.load_motion(p), p.name, *names)


def test_beat2_npz_good_int_poses(tmp_path):
    m = _motion()
    m["poses"] = np.zeros((T, 165), np.int64)
    out = beat2.load_motion(_npz(tmp_path / "x.npz", **m))
    assert out["poses"].dtype == np.float32 and out["fps"] == 30


# ---------------------------------------------------------------------------------------
# BEAT2 folder, clip loading and splits
def _beat2_root(tmp: Path, clip="2_scott_0_1_1", seconds=1.0):
    for d in ("smplxflame_30", "wave16k", "textgrid"):
        (tmp / d).mkdir(exist_ok=True)
    _npz(tmp / "smplxflame_30" / f"{clip}.npz", **_motion(int(30 * seconds)))
    _wav(tmp / "wave16k" / f"{clip}.wav", _tone(16000, seconds), subtype="FLOAT")
    textgrid.write_textgrid(tmp / "textgrid" / f"{clip}.TextGrid", {"words": [(0.1, 0.4, "hi")]})
    (tmp / "train_test_split.csv").write_text(f"id,type\n{clip},train\n")
    return tmp


def _root_case(kind, tmp: Path):
    root = _beat2_root(tmp)
    clip = "2_scott_0_1_1"
    split = root / "train_test_split.csv"
    if kind == "not_a_root":
        return lambda: beat2.load_clip(tmp / "nowhere", clip), ("smplxflame_30",)
    if kind == "bad_speaker":
        return lambda: beat2.load_clip(root, "99_x_0_1_1"), ("speaker",)
    if kind == "no_wav":
        (root / "wave16k" / f"{clip}.wav").unlink()
        return lambda: beat2.load_clip(root, clip), (f"{clip}.wav",)
    if kind == "no_textgrid":
        (root / "textgrid" / f"{clip}.TextGrid").unlink()
        return lambda: beat2.load_clip(root, clip), (f"{clip}.TextGrid",)
    if kind == "long_audio":
        _wav(root / "wave16k" / f"{clip}.wav", _tone(16000, 5.0))
        return lambda: beat2.load_clip(root, clip), (f"{clip}.wav", "duration")
    if kind == "words_past_end":
        textgrid.write_textgrid(
            root / "textgrid" / f"{clip}.TextGrid", {"words": [(0.1, 9.0, "hi")]}
        )
        return lambda: beat2.load_clip(root, clip), (f"{clip}.TextGrid", "words")
    if kind == "split_bad_header":
        split.write_text("name,kind\nx,train\n")
        return lambda: beat2.read_split(root), ("train_test_split.csv",)
    if kind == "split_missing_cell":
        split.write_text(f"id,type\n{clip}\n")
        return lambda: beat2.read_split(root), ("train_test_split.csv", "type")
    if kind == "split_unknown_type":
        split.write_text(f"id,type\n{clip},tarin\n")
        return lambda: beat2.read_split(root), ("train_test_split.csv", "tarin")
    if kind == "split_not_utf8":
        split.write_bytes(b"id,type\n\xff\xfe\xfa,train\n")
        return lambda: beat2.read_split(root), ("train_test_split.csv",)
    if kind == "split_binary":
        split.write_bytes(b"\x00\x01\x02" * 50)
        return lambda: beat2.read_split(root), ("train_test_split.csv",)
    if kind == "split_duplicate":
        split.write_text(f"id,type\n{clip},train\n{clip},test\n")
        return lambda: beat2.read_split(root), ("train_test_split.csv", clip)
    if kind == "list_unknown_split":
        return lambda: beat2.list_clips(root, split="tset"), ("split", "tset")
    if kind == "list_bad_speaker":
        return lambda: beat2.list_clips(root, speakers=[0]), ("speakers",)
    raise AssertionError(kind)


ROOT_CASES = [
    "not_a_root",
    "bad_speaker",
    "no_wav",
    "no_textgrid",
    "long_audio",
    "words_past_end",
    "split_bad_header",
    "split_missing_cell",
    "split_unknown_type",
    "split_not_utf8",
    "split_binary",
    "split_duplicate",
    "list_unknown_split",
    "list_bad_speaker",
]


@pytest.mark.parametrize("kind", ROOT_CASES)
def test_beat2_folder_bad(kind, tmp_path):
    fn, names = _root_case(kind, tmp_path)
    expect_error(fn, *names)


def test_beat2_folder_good(tmp_path):
    root = _beat2_root(tmp_path)
    c = beat2.load_clip(root, "2_scott_0_1_1")
    assert c.words == [(0.1, 0.4, "hi")] and c.num_frames == 30
    assert beat2.list_clips(root, split="train") == ["2_scott_0_1_1"]


# ---------------------------------------------------------------------------------------
# TextGrid
def _tg_text(tmp):
    p = tmp / "ok.TextGrid"
    textgrid.write_textgrid(p, {"words": [(0.5, 1.0, "hi"), (1.2, 1.5, "yo")]})
    return p.read_text(encoding="utf-8")


_SHORT_NEG = """File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
1
"IntervalTier"
"words"
0
1.5
2
-0.5
1
"hi"
1
1.5
"yo"
"""


def _tg_case(kind, tmp: Path):
    p = tmp / "a.TextGrid"
    text = _tg_text(tmp)
    if kind == "missing":
        return p, ()
    if kind == "empty":
        p.write_text("")
    elif kind == "garbage":
        p.write_bytes(b"\x00\x9f\x92garbage" * 20)
    elif kind == "truncated":
        p.write_text(text[: len(text) // 2])
    elif kind == "negative_time_long":
        p.write_text(text.replace("xmin = 0.5", "xmin = -0.5"))
        return p, ("words",)
    elif kind == "negative_time_short":
        p.write_text(_SHORT_NEG)
        return p, ("words",)
    elif kind == "no_words_tier":
        p.write_text(text.replace('name = "words"', 'name = "phones"'))
        return p, ("words",)
    elif kind == "end_before_start":
        p.write_text(text.replace('xmax = 1.5 \n            text = "yo"', "x"))
        p.write_text(text.replace("xmin = 1.2", "xmin = 1.7"))
    elif kind == "overlap":
        p.write_text(text.replace("xmin = 1.2", "xmin = 0.7"))
    elif kind == "nan_time":
        p.write_text(text.replace("xmin = 1.2", "xmin = nan"))
    elif kind == "text_not_number":
        p.write_text(text.replace("xmin = 1.2", "xmin = abc"))
    elif kind == "json":
        p.write_text(json.dumps({"words": [[0, 1, "hi"]]}))
    else:
        raise AssertionError(kind)
    return p, ()


TG_CASES = [
    "missing",
    "empty",
    "garbage",
    "truncated",
    "negative_time_long",
    "negative_time_short",
    "no_words_tier",
    "end_before_start",
    "overlap",
    "nan_time",
    "text_not_number",
    "json",
]


@pytest.mark.parametrize("kind", TG_CASES)
def test_textgrid_bad(kind, tmp_path):
    p, names = _tg_case(kind, tmp_path)
    expect_error(lambda: textgrid.read_textgrid(p), p.name, *names)


def test_textgrid_good_keeps_hyphenated_words(tmp_path):
    p = tmp_path / "a.TextGrid"
    textgrid.write_textgrid(p, {"words": [(0.5, 1.0, "well-known"), (1.2, 1.5, "-")]})
    assert textgrid.read_textgrid(p)["words"] == [(0.5, 1.0, "well-known"), (1.2, 1.5, "-")]


# ---------------------------------------------------------------------------------------
# BVH
def _bvh_text():
    sk = bvh.seg_skeleton()
    n = 4
    from dataclasses import replace

    m = replace(
        sk,
        root_positions=np.zeros((n, 3)),
        rotations=np.zeros((n, len(sk.names), 3)),
        positions=np.zeros((n, len(sk.names), 3)),
    )
    return bvh.format_bvh(m, "\n")


def _bvh_case(kind, tmp: Path):
    p = tmp / "HAND_CHOP-1.bvh"
    text = _bvh_text()
    if kind == "missing":
        return p, ()
    rep = {
        "empty": "",
        "no_hierarchy": text.replace("HIERARCHY", "HIER"),
        "truncated_hierarchy": text[: len(text) // 4],
        "truncated_motion": text[: len(text) - 40],
        "channels_4": text.replace("CHANNELS 3", "CHANNELS 4", 1),
        "channels_count_vs_list": text.replace(
            "CHANNELS 3 Zrotation Xrotation Yrotation", "CHANNELS 3 Zrotation Xrotation", 1
        ),
        "unknown_channel": text.replace("Xrotation", "Wrotation", 1),
        "duplicate_axis": text.replace(
            "Zrotation Xrotation Yrotation", "Zrotation Zrotation Yrotation", 1
        ),
        "frames_mismatch": text.replace("Frames: 4", "Frames: 5"),
        "frames_negative": text.replace("Frames: 4", "Frames: -4"),
        "frames_fraction": text.replace("Frames: 4", "Frames: 4.5"),
        "frame_time_zero": text.replace("Frame Time:   0.016667", "Frame Time:   0"),
        "frame_time_nan": text.replace("Frame Time:   0.016667", "Frame Time:   nan"),
        "nan_value": text[: text.rindex("0.000000")] + "nan",
        "text_value": text[: text.rindex("0.000000")] + "abc",
        "no_motion": text[: text.index("MOTION")],
        "root_without_position": text.replace(
            "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation",
            "CHANNELS 3 Zrotation Xrotation Yrotation",
        ),
        "duplicate_joint": text.replace("JOINT Chest2", "JOINT Chest"),
        "offset_missing_value": text.replace(
            "OFFSET 0.000000 10.500000 -1.000000", "OFFSET 0 10.5"
        ),
        "deep_nesting": "HIERARCHY\nROOT r\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition "
        "Zposition Zrotation Xrotation Yrotation\n"
        + "JOINT j\n{\nOFFSET 0 0 0\nCHANNELS 3 Zrotation Xrotation Yrotation\n" * 5000
        + "}\n" * 5001
        + "MOTION\nFrames: 0\nFrame Time: 0.1\n",
        "extra_brace": text.replace("MOTION", "}\nMOTION"),
    }
    if kind == "binary":
        p.write_bytes(b"\xff\xfe\x00garbage" * 30)
        return p, ()
    p.write_text(rep[kind], encoding="utf-8")
    return p, ()


BVH_CASES = [
    "missing",
    "binary",
    "empty",
    "no_hierarchy",
    "truncated_hierarchy",
    "truncated_motion",
    "channels_4",
    "channels_count_vs_list",
    "unknown_channel",
    "duplicate_axis",
    "frames_mismatch",
    "frames_negative",
    "frames_fraction",
    "frame_time_zero",
    "frame_time_nan",
    "nan_value",
    "text_value",
    "no_motion",
    "root_without_position",
    "duplicate_joint",
    "offset_missing_value",
    "deep_nesting",
    "extra_brace",
]


@pytest.mark.parametrize("kind", BVH_CASES)
def test_bvh_bad(kind, tmp_path):
    p, names = _bvh_case(kind, tmp_path)
    expect_error(lambda: bvh.read_bvh(p), p.name, *names)


@pytest.mark.parametrize("fps", [0.0, -30.0, float("nan"), float("inf")])
def test_bvh_resample_bad_fps(fps, tmp_path):
    p = tmp_path / "a.bvh"
    p.write_text(_bvh_text())
    m = bvh.read_bvh(p)
    expect_error(lambda: bvh.resample_bvh(m, fps), "fps")


def test_bvh_write_bad_order(tmp_path):
    m = bvh.read_bvh(_wtxt(tmp_path / "a.bvh", _bvh_text()))
    m.parents[2] = 3  # no longer depth-first
    expect_error(lambda: bvh.write_bvh(tmp_path / "b.bvh", m), "b.bvh", "parents")


def _wtxt(p, text):
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------
# SeG inventory (xlsx)
def _xlsx(path, rows, sheet="sg_list"):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return path


_NOTE = ("notes",)
_ROW = ("0001", "[1]", "HAND CHOP [1]", "d", "c", "e")


def _seg_case(kind, tmp: Path):
    p = tmp / "SeG_list.xlsx"
    bdir = tmp / "bvh"
    bdir.mkdir()
    if kind == "missing":
        return (lambda: seg.read_seg_inventory(p)), (p.name,)
    if kind == "garbage":
        p.write_bytes(b"not a workbook" * 10)
    elif kind == "csv_named_xlsx":
        p.write_text(",".join(seg.HEADER) + "\n")
    elif kind == "zip_not_xlsx":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.txt", "x")
    elif kind == "truncated":
        _xlsx(tmp / "full.xlsx", [_NOTE, _NOTE, seg.HEADER, _ROW])
        p.write_bytes((tmp / "full.xlsx").read_bytes()[:400])
    elif kind == "wrong_sheet":
        _xlsx(p, [_NOTE, _NOTE, seg.HEADER, _ROW], sheet="Sheet1")
        return (lambda: seg.read_seg_inventory(p)), (p.name, "sg_list")
    elif kind == "no_header":
        _xlsx(p, [_NOTE, _NOTE, _ROW])
    elif kind == "wrong_header":
        _xlsx(p, [_NOTE, _NOTE, (seg.HEADER[0], "Source", *seg.HEADER[2:]), _ROW])
    elif kind == "empty_sheet":
        _xlsx(p, [])
    elif kind == "no_rows":
        _xlsx(p, [_NOTE, _NOTE, seg.HEADER])
    elif kind == "duplicate_index":
        _xlsx(p, [_NOTE, _NOTE, seg.HEADER, _ROW, ("0001", "[1]", "HAND WAVE [1]", "", "", "")])
        return (lambda: seg.read_seg_inventory(p)), (p.name, "0001")
    elif kind == "bvh_dir_missing":
        _xlsx(p, [_NOTE, _NOTE, seg.HEADER, _ROW])
        return (lambda: seg.read_seg_inventory(p, tmp / "nope")), ("nope",)
    elif kind == "bvh_dir_is_file":
        _xlsx(p, [_NOTE, _NOTE, seg.HEADER, _ROW])
        return (lambda: seg.read_seg_inventory(p, p)), (p.name,)
    elif kind == "directory":
        p.mkdir()
    else:
        raise AssertionError(kind)
    return (lambda: seg.read_seg_inventory(p, bdir)), (p.name,)


SEG_CASES = [
    "missing",
    "garbage",
    "csv_named_xlsx",
    "zip_not_xlsx",
    "truncated",
    "wrong_sheet",
    "no_header",
    "wrong_header",
    "empty_sheet",
    "no_rows",
    "duplicate_index",
    "bvh_dir_missing",
    "bvh_dir_is_file",
    "directory",
]


@pytest.mark.parametrize("kind", SEG_CASES)
def test_seg_inventory_bad(kind, tmp_path):
    fn, names = _seg_case(kind, tmp_path)
    expect_error(fn, *names)


def test_seg_inventory_good(tmp_path):
    p = _xlsx(tmp_path / "SeG_list.xlsx", [_NOTE, _NOTE, seg.HEADER, _ROW])
    (tmp_path / "HAND_CHOP-2.bvh").write_text(_bvh_text())
    recs = seg.read_seg_inventory(p, tmp_path)
    assert [r.index for r in recs] == ["0001"] and [f.name for f in recs[0].files] == [
        "HAND_CHOP-2.bvh"
    ]


# ---------------------------------------------------------------------------------------
# KTubeUM per-frame pose json
def _pose(**changes):
    d = {k: [0.0] * n for k, n in ktubeum.KEYS.items()}
    d.update(changes)
    return d


def _json_case(kind, tmp: Path):
    d = tmp / "poses"
    d.mkdir()
    f = d / "frame_0001.json"
    good = json.dumps(_pose())
    if kind == "folder_missing":
        return (lambda: ktubeum.read_pose_jsons(tmp / "nope")), ("nope",)
    if kind == "folder_empty":
        return (lambda: ktubeum.read_pose_jsons(d)), ("poses",)
    if kind == "file_list_missing":
        return (lambda: ktubeum.read_pose_jsons([d / "x.json"])), ("x.json",)
    key = "smplx_body_pose"
    text = {
        "empty": "",
        "truncated": good[: len(good) // 2],
        "not_json": "frame: 1",
        "list_top": json.dumps([_pose()]),
        "key_missing": json.dumps({k: v for k, v in _pose().items() if k != key}),
        "wrong_size": json.dumps(_pose(smplx_body_pose=[0.0] * 62)),
        "string_values": json.dumps(_pose(smplx_body_pose=["a"] * 63)),
        "nan_values": json.dumps(_pose(smplx_body_pose=[float("nan")] * 63)),
        "null_value": json.dumps(_pose(smplx_body_pose=None)),
        "dict_value": json.dumps(_pose(smplx_body_pose={"a": 1})),
        "ragged": json.dumps(_pose(smplx_body_pose=[[0.0] * 3, [0.0] * 60])),
        "bool_values": json.dumps(_pose(smplx_body_pose=[True] * 63)),
        "huge_values": json.dumps(_pose(smplx_body_pose=[1e300] * 63)),
    }
    if kind == "not_utf8":
        f.write_bytes(b"\xff\xfe{" + b"\x00" * 10)
        return (lambda: ktubeum.read_pose_jsons(d)), (f.name,)
    f.write_text(text[kind])
    names = (
        (f.name, key) if kind not in ("empty", "truncated", "not_json", "list_top") else (f.name,)
    )
    return (lambda: ktubeum.read_pose_jsons(d)), names


JSON_CASES = [
    "folder_missing",
    "folder_empty",
    "file_list_missing",
    "empty",
    "truncated",
    "not_json",
    "list_top",
    "key_missing",
    "wrong_size",
    "string_values",
    "nan_values",
    "null_value",
    "dict_value",
    "ragged",
    "bool_values",
    "huge_values",
    "not_utf8",
]


@pytest.mark.parametrize("kind", JSON_CASES)
def test_pose_json_bad(kind, tmp_path):
    fn, names = _json_case(kind, tmp_path)
    expect_error(fn, *names)


# ---------------------------------------------------------------------------------------
# HumanML3D / KTubeUM dataset folders and arrays
def _h3d_root(tmp: Path):
    rng = np.random.default_rng(0)
    j = rng.normal(0, 0.3, (12, 22, 3)).cumsum(0) * 0.01 + np.linspace(0, 1, 22)[None, :, None]
    root = humanml3d.write_dataset(tmp / "h3d", {"000001": j}, splits={"train": ["000001"]})
    return root


def _h3d_case(kind, tmp: Path):
    root = _h3d_root(tmp)
    vec = root / "new_joint_vecs" / "000001.npy"
    jnt = root / "new_joints" / "000001.npy"
    feats = np.load(vec)

    def reader():
        return humanml3d.HumanML3DReader(root)

    def save(p, a):
        with open(p, "wb") as f:
            np.save(f, a)

    if kind == "mean_garbage":
        (root / "Mean.npy").write_bytes(b"garbage")
        return reader, ("Mean.npy",)
    if kind == "mean_wrong_dim":
        save(root / "Mean.npy", np.zeros(251, np.float32))
        return reader, ("Mean.npy", "Mean")
    if kind == "std_nan":
        s = np.ones(263, np.float32)
        s[3] = np.nan
        save(root / "Std.npy", s)
        return reader, ("Std.npy", "Std")
    if kind == "std_zero":
        s = np.ones(263, np.float32)
        s[10] = 0
        save(root / "Std.npy", s)
        return reader, ("Std.npy", "Std")
    if kind == "mean_pickle":
        save_obj = np.array([None, {"a": 1}], dtype=object)
        with open(root / "Mean.npy", "wb") as f:
            np.save(f, save_obj, allow_pickle=True)
        return reader, ("Mean.npy",)
    if kind == "std_only":
        (root / "Mean.npy").unlink()
        return reader, ("Mean.npy",)
    r = reader()
    if kind == "vec_missing":
        vec.unlink()
    elif kind == "vec_wrong_dim":
        save(vec, feats[:, :251])
    elif kind == "vec_1d":
        save(vec, feats[0])
    elif kind == "vec_nan":
        f2 = feats.copy()
        f2[2, 5] = np.nan
        save(vec, f2)
    elif kind == "vec_garbage":
        vec.write_bytes(b"\x93NUMPY garbage")
    elif kind == "vec_truncated":
        vec.write_bytes(vec.read_bytes()[:200])
    elif kind == "vec_string":
        save(vec, np.array([["a"] * 263]))
    elif kind == "vec_empty":
        save(vec, feats[:0])
    elif kind == "joints_wrong":
        save(jnt, np.zeros((5, 21, 3), np.float32))
        return (lambda: r.joints("000001")), ("000001.npy", "new_joints")
    elif kind == "joints_nan":
        save(jnt, np.full((5, 22, 3), np.nan, np.float32))
        return (lambda: r.joints("000001")), ("000001.npy", "new_joints")
    elif kind == "split_missing":
        return (lambda: r.ids("test")), ("test.txt",)
    elif kind == "split_not_utf8":
        (root / "train.txt").write_bytes(b"\xff\xfe\x00\x01")
        return (lambda: r.ids("train")), ("train.txt",)
    elif kind == "texts_missing":
        return (lambda: r.texts("000001")), ("000001.txt",)
    elif kind == "texts_bad_line":
        (root / "texts").mkdir(exist_ok=True)
        (root / "texts" / "000001.txt").write_text("a man walks#a/DET man/NOUN\n")
        return (lambda: r.texts("000001")), ("000001.txt",)
    elif kind == "texts_bad_time":
        (root / "texts").mkdir(exist_ok=True)
        (root / "texts" / "000001.txt").write_text("a man#a/DET#zero#1.0\n")
        return (lambda: r.texts("000001")), ("000001.txt",)
    elif kind == "texts_end_before_start":
        (root / "texts").mkdir(exist_ok=True)
        (root / "texts" / "000001.txt").write_text("a man#a/DET#3.0#1.0\n")
        return (lambda: r.texts("000001")), ("000001.txt",)
    elif kind == "texts_not_utf8":
        (root / "texts").mkdir(exist_ok=True)
        (root / "texts" / "000001.txt").write_bytes(b"\xff\xfe#a#0#0\n")
        return (lambda: r.texts("000001")), ("000001.txt",)
    else:
        raise AssertionError(kind)
    return (lambda: r.features("000001")), ("000001.npy", "new_joint_vecs")


H3D_CASES = [
    "mean_garbage",
    "mean_wrong_dim",
    "std_nan",
    "std_zero",
    "mean_pickle",
    "std_only",
    "vec_missing",
    "vec_wrong_dim",
    "vec_1d",
    "vec_nan",
    "vec_garbage",
    "vec_truncated",
    "vec_string",
    "vec_empty",
    "joints_wrong",
    "joints_nan",
    "split_missing",
    "split_not_utf8",
    "texts_missing",
    "texts_bad_line",
    "texts_bad_time",
    "texts_end_before_start",
    "texts_not_utf8",
]


@pytest.mark.parametrize("kind", H3D_CASES)
def test_humanml3d_reader_bad(kind, tmp_path):
    fn, names = _h3d_case(kind, tmp_path)
    expect_error(fn, *names)


_F = np.zeros((6, 263), np.float32)


@pytest.mark.parametrize(
    "kind,fn,names",
    [
        ("ric_wrong_dim", lambda: humanml3d.recover_from_ric(np.zeros((6, 251))), ("features",)),
        ("ric_nan", lambda: humanml3d.recover_from_ric(np.full((6, 263), np.nan)), ("features",)),
        ("ric_string", lambda: humanml3d.recover_from_ric(np.array([["a"] * 263])), ("features",)),
        ("ric_scalar", lambda: humanml3d.recover_from_ric(np.float32(1.0)), ("features",)),
        ("j2f_wrong", lambda: humanml3d.joints_to_features(np.zeros((5, 21, 3))), ("joints",)),
        ("j2f_one_frame", lambda: humanml3d.joints_to_features(np.zeros((1, 22, 3))), ("joints",)),
        ("j2f_nan", lambda: humanml3d.joints_to_features(np.full((5, 22, 3), np.nan)), ("joints",)),
        ("j2f_string", lambda: humanml3d.joints_to_features(np.array([["a"]])), ("joints",)),
        ("meanstd_empty", lambda: humanml3d.mean_std([]), ("features",)),
        ("meanstd_wrong", lambda: humanml3d.mean_std([np.zeros((4, 251))]), ("features",)),
        ("meanstd_nan", lambda: humanml3d.mean_std([np.full((4, 263), np.nan)]), ("features",)),
        ("caption_fields", lambda: humanml3d.parse_caption_line("a#b"), ("caption",)),
    ],
)
def test_humanml3d_arrays_bad(kind, fn, names):
    expect_error(fn, *names)


def _smplx_case(kind, tmp: Path):
    from gesture_data.datasets.smplx_model import smplx_joints

    root = tmp / "models"
    model = root / "smplx" / "SMPLX_NEUTRAL.npz"
    model.parent.mkdir(parents=True)
    poses = np.zeros((3, 165), np.float32)
    if kind == "model_missing":
        model.parent.rmdir()
    elif kind == "model_garbage":
        model.write_bytes(b"PK\x03\x04garbage")
    elif kind == "model_npy":
        with open(model, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "poses_nan":
        poses[1, 4] = np.nan
        return (lambda: smplx_joints(poses, root)), ("key 'poses'",)
    return (lambda: smplx_joints(poses, root)), ("models",)


@pytest.mark.parametrize("kind", ["model_missing", "model_garbage", "model_npy", "poses_nan"])
def test_smplx_model_bad(kind, tmp_path):
    fn, names = _smplx_case(kind, tmp_path)
    expect_error(fn, *names)


def test_humanml3d_arrays_good():
    # plain lists are array-likes: same answer as the array
    a = humanml3d.recover_from_ric([[0.0] * 263] * 3)
    assert a.shape == (3, 22, 3) and np.array_equal(
        a, humanml3d.recover_from_ric(np.zeros((3, 263)))
    )
    # a constant feature group (feet never move) must not give a zero std
    _, std = humanml3d.mean_std([np.zeros((4, 263))])
    assert (std > 0).all()


# ---------------------------------------------------------------------------------------
# normaliser files (Normalizer.load / from_beat2)
def _norm_case(kind, tmp: Path):
    p = tmp / "normalizer.npz"
    good = {"upper/mean": np.zeros(78, np.float32), "upper/std": np.ones(78, np.float32)}
    if kind == "missing":
        return (lambda: Normalizer.load(p)), (p.name,)
    if kind == "garbage":
        p.write_bytes(b"garbage")
        return (lambda: Normalizer.load(p)), (p.name,)
    if kind == "no_std":
        _npz(p, **{"upper/mean": good["upper/mean"]})
        return (lambda: Normalizer.load(p)), (p.name, "upper/std")
    bad = dict(good)
    if kind == "std_nan":
        bad["upper/std"] = np.full(78, np.nan, np.float32)
    elif kind == "std_zero":
        bad["upper/std"] = np.zeros(78, np.float32)
    elif kind == "std_negative":
        bad["upper/std"] = -np.ones(78, np.float32)
    elif kind == "mean_inf":
        bad["upper/mean"] = np.full(78, np.inf, np.float32)
    elif kind == "length_mismatch":
        bad["upper/std"] = np.ones(77, np.float32)
    elif kind == "mean_2d":
        bad["upper/mean"] = np.zeros((2, 78), np.float32)
    elif kind == "string_member":
        bad["upper/std"] = np.array(["a"] * 78)
    elif kind == "meta_garbage":
        bad["__meta__"] = np.array("{not json")
    elif kind == "eps_negative":
        bad["__meta__"] = np.array(json.dumps({"eps": -1.0}))
    elif kind == "beat2_std_zero" or kind == "beat2_std_nan" or kind == "beat2_garbage":
        d = tmp / "mean_std"
        d.mkdir()
        for name, n in (("330", 330), ("trans", 3)):
            np.save(d / f"beatx_2_{name}_mean.npy", np.zeros(n, np.float32))
            np.save(d / f"beatx_2_{name}_std.npy", np.ones(n, np.float32))
        bad_file = d / "beatx_2_330_std.npy"
        if kind == "beat2_garbage":
            bad_file.write_bytes(b"garbage")
        else:
            np.save(bad_file, np.full(330, 0.0 if kind == "beat2_std_zero" else np.nan, np.float32))
        return (lambda: Normalizer.from_beat2(d)), (bad_file.name,)
    else:
        raise AssertionError(kind)
    _npz(p, **bad)
    field = "__meta__" if kind in ("meta_garbage", "eps_negative") else "upper"
    return (lambda: Normalizer.load(p)), (p.name, field)


NORM_CASES = [
    "missing",
    "garbage",
    "no_std",
    "std_nan",
    "std_zero",
    "std_negative",
    "mean_inf",
    "length_mismatch",
    "mean_2d",
    "string_member",
    "meta_garbage",
    "eps_negative",
    "beat2_std_zero",
    "beat2_std_nan",
    "beat2_garbage",
]


@pytest.mark.parametrize("kind", NORM_CASES)
def test_normalizer_file_bad(kind, tmp_path):
    fn, names = _norm_case(kind, tmp_path)
    expect_error(fn, *names)


@pytest.mark.parametrize(
    "stats",
    [
        {"upper": (np.zeros(3), np.array([1.0, np.nan, 1.0]))},
        {"upper": (np.zeros(3), np.zeros(3))},
        {"upper": (np.zeros(3), np.ones(4))},
    ],
    ids=["nan_std", "zero_std", "length_mismatch"],
)
def test_normalizer_constructor_bad(stats):
    expect_error(lambda: Normalizer(stats), "upper")


# ---------------------------------------------------------------------------------------
# audio feature functions on bad arrays (the boundary between a reader and a model)
@pytest.mark.parametrize(
    "fn_name", ["onset_amplitude", "log_mel", "mfcc", "onset_strength", "resample"]
)
@pytest.mark.parametrize("kind", ["nan", "stereo", "empty", "bad_rate", "string"])
def test_audio_features_bad(fn_name, kind):
    x = _tone().astype(np.float32)
    sr = 16000
    if kind == "nan":
        x[3] = np.nan
    elif kind == "stereo":
        x = np.stack([x, x], 1)
    elif kind == "empty":
        x = x[:0]
    elif kind == "bad_rate":
        sr = 0
    elif kind == "string":
        x = np.array(["a"] * 10)
    if fn_name == "resample" and kind == "empty":
        assert faudio.resample(x, sr, 8000).shape == (0,)  # nothing in, nothing out: correct
        return
    fn = getattr(faudio, fn_name)
    call = (lambda: fn(x, sr, 8000)) if fn_name == "resample" else (lambda: fn(x, sr))
    expect_error(call, "audio" if kind != "bad_rate" else "sample")


def test_campaign_size():
    # the campaign was 424 library cases over four packages; this module is the
    # gesture_data share (kept honest here so a shrinking campaign is noticed)
    n = (
        len(WAV_BAD)
        + 8
        + len(NPZ_CASES)
        + len(ROOT_CASES)
        + len(TG_CASES)
        + len(BVH_CASES)
        + 4
        + len(SEG_CASES)
        + len(JSON_CASES)
        + len(H3D_CASES)
        + 12
        + len(NORM_CASES)
        + 3
        + 25
    )
    assert n >= 200, n
