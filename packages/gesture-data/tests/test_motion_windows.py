"""Motion npz I/O, window plans and the vocabulary file."""

import os
import stat

import numpy as np
import pytest
import torch

from gesture_data import DataError
from gesture_data.datasets.beat2 import Vocabulary
from gesture_data.datasets.windows import audio_window, stitch_windows, window_plan
from gesture_data.motion import (
    BEAT2_KEYS,
    Motion,
    MotionFileError,
    read_beat2_npz,
    write_beat2_npz,
)


def _motion(T=12, seed=0):
    rng = np.random.default_rng(seed)
    return Motion(
        poses=rng.normal(size=(T, 165)).astype(np.float32),
        trans=rng.normal(size=(T, 3)),
        expressions=rng.normal(size=(T, 100)),
    )


def test_write_read_round_trip_keeps_values_and_umask(tmp_path):
    m = _motion()
    old = os.umask(0o022)
    try:
        path = write_beat2_npz(tmp_path / "sub" / "a.npz", m)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temp file left
    back = read_beat2_npz(path, required=BEAT2_KEYS)
    np.testing.assert_array_equal(back.poses, m.poses)
    np.testing.assert_allclose(back.trans, m.trans, rtol=1e-6)  # stored f64, read as f32
    np.testing.assert_allclose(back.expressions, m.expressions, rtol=1e-6)
    assert back.fps == 30 and back.num_frames == 12
    np.testing.assert_array_equal(back.betas, np.zeros(300, np.float32))
    with np.load(path) as z:  # BEAT2's own key set and dtypes
        assert z["mocap_frame_rate"].dtype == np.int32 and str(z["model"]) == "smplx2020"
        assert z["trans"].dtype == np.float64


def test_poses_only_file_reads_with_zero_trans_and_face(tmp_path):
    np.savez(tmp_path / "p.npz", poses=np.ones((5, 165)), mocap_frame_rate=np.array(25.0))
    m = read_beat2_npz(tmp_path / "p.npz")
    assert m.fps == 25.0 and m.trans.shape == (5, 3) and not m.trans.any()
    assert m.expressions.shape == (5, 100) and m.poses.dtype == np.float32
    with pytest.raises(MotionFileError, match=r"p\.npz: key 'trans': key missing"):
        read_beat2_npz(tmp_path / "p.npz", required=("trans",))


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"trans": np.zeros((5, 3))}, r"key 'poses': key missing"),
        ({"poses": np.zeros((5, 162))}, r"key 'poses': wrong shape \(expected \(5, 165\)"),
        (
            {"poses": np.zeros((5, 165)), "trans": np.zeros((4, 3))},
            r"key 'trans': wrong shape \(expected \(5, 3\), found \(4, 3\)\)",
        ),
        ({"poses": np.zeros((0, 165))}, r"key 'poses': empty motion"),
        ({"poses": np.array([["a"] * 165])}, r"key 'poses': not real numbers"),
        (
            {"poses": np.zeros((3, 165)), "mocap_frame_rate": np.array(0)},
            r"key 'mocap_frame_rate': bad frame rate",
        ),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, arrays, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(MotionFileError, match=r"bad\.npz: " + pattern):
        read_beat2_npz(path)


def test_non_finite_names_the_first_bad_frame(tmp_path):
    poses = np.zeros((6, 165))
    poses[4, 7] = np.nan
    np.savez(tmp_path / "n.npz", poses=poses)
    with pytest.raises(MotionFileError, match=r"key 'poses': non-finite values \(first at frame 4"):
        read_beat2_npz(tmp_path / "n.npz")


def test_missing_truncated_and_folder_paths(tmp_path):
    with pytest.raises(MotionFileError, match=r"nope\.npz: motion file missing"):
        read_beat2_npz(tmp_path / "nope.npz")
    write_beat2_npz(tmp_path / "t.npz", _motion())
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(MotionFileError, match=r"t\.npz: corrupt or truncated npz"):
        read_beat2_npz(tmp_path / "t.npz")
    np.save(tmp_path / "x.npy", np.zeros(3))
    os.replace(tmp_path / "x.npy", tmp_path / "x.npz")
    with pytest.raises(MotionFileError, match="not an npz archive"):
        read_beat2_npz(tmp_path / "x.npz")
    with pytest.raises(MotionFileError, match="is a folder"):
        write_beat2_npz(tmp_path, _motion())
    assert issubclass(MotionFileError, DataError) and issubclass(MotionFileError, ValueError)


def test_motion_checks_shapes_in_memory():
    with pytest.raises(MotionFileError, match=r"<memory>: key 'trans': wrong shape"):
        Motion(np.zeros((4, 165)), trans=np.zeros((3, 3)))
    with pytest.raises(MotionFileError, match=r"key 'poses'"):
        Motion(np.zeros((4, 55, 3)))


# ----- windows ---------------------------------------------------------------------------


def test_window_plan_numbers():
    # pose_length 32, factor 4 -> 8 latent frames a window, 2 seed frames -> hop 6
    assert window_plan(32, 32, 4, 2) == (1, 6, 8)
    assert window_plan(33, 32, 4, 2) == (2, 6, 14)  # 9 latent frames needed
    assert window_plan(300, 128, 4, 8) == (3, 24, 80)  # GestureLSM-sized, 10 s
    for frames in range(1, 200):
        plan = window_plan(frames, 32, 4, 2)
        assert plan.latent_frames * 4 >= frames  # the tail is covered
        assert plan.windows == 1 or (plan.latent_frames - plan.hop) * 4 < frames  # not one more
    assert window_plan(100, 32, 4, 2).starts(4) == [0, 24, 48, 72]
    with pytest.raises(ValueError, match="seed_frames"):
        window_plan(100, 32, 4, 8)


def test_stitch_windows_drops_the_seeded_overlap():
    plan = window_plan(100, 32, 4, 2)
    pieces = [torch.full((1, 8, 3), float(i)) for i in range(plan.windows)]
    out = stitch_windows(pieces, seed_frames=2)
    assert out.shape == (1, plan.latent_frames, 3)
    assert out[0, :, 0].tolist() == [0.0] * 8 + [1.0] * 6 + [2.0] * 6 + [3.0] * 6


def test_audio_window_offsets_and_pads():
    audio = np.arange(10_000, dtype=np.float32)[:, None].repeat(2, axis=1)  # (N, 2)
    w = audio_window(audio, 3, 6, fps=30, sample_rate=16000)
    assert w.shape == (3200, 2) and w[0, 0] == 1600 and w[-1, 0] == 4799
    tail = audio_window(audio, 15, 6, fps=30, sample_rate=16000)  # starts at sample 8000
    assert tail[1999, 0] == 9999 and not tail[2000:].any()
    # GestureLSM's test loop: 16000 // 30 = 533 samples per frame, not 533.33
    ref = audio_window(audio, 12, 6, samples_per_frame=533)
    assert ref.shape == (3198, 2) and ref[0, 0] == 12 * 533


# ----- vocabulary ------------------------------------------------------------------------


def test_vocabulary_round_trip_and_apps_layout(tmp_path):
    v = Vocabulary(["hello", "wörld", "안녕"])
    path = v.save(tmp_path / "vocab.txt")
    assert path.read_bytes() == "<pad>\n<unk>\nhello\nwörld\n안녕\n".encode()
    back = Vocabulary.load(path)
    assert back.itos == v.itos and back["안녕"] == 4 and back["unseen"] == Vocabulary.UNK
    # what apps exports wrote by hand, and a Windows-edited copy without the final newline
    (tmp_path / "apps.txt").write_text("\n".join(v.itos) + "\n", encoding="utf-8")
    assert Vocabulary.load(tmp_path / "apps.txt").itos == v.itos
    (tmp_path / "crlf.txt").write_bytes(b"<pad>\r\n<unk>\r\nhello")
    assert Vocabulary.load(tmp_path / "crlf.txt").itos == ["<pad>", "<unk>", "hello"]


def test_vocabulary_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"v\.txt: vocabulary file missing"):
        Vocabulary.load(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("hello\nworld\n")
    with pytest.raises(DataError, match=r"v\.txt: key 'line 1-2': bad header"):
        Vocabulary.load(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("<pad>\n<unk>\na\nb\na\n")
    with pytest.raises(DataError, match=r"key 'line 5': word 'a' listed twice"):
        Vocabulary.load(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_bytes(b"<pad>\n<unk>\n\xff\n")
    with pytest.raises(DataError, match="not UTF-8"):
        Vocabulary.load(tmp_path / "v.txt")
    with pytest.raises(ValueError, match="line break"):
        Vocabulary(["two\nwords"]).save(tmp_path / "w.txt")
