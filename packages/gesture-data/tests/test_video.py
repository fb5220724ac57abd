"""gesture_data.video: rendered synthetic video, keypoint heatmaps, mp4 I/O, folder loader."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import stat

import numpy as np
import pytest
import roma
import torch

from gesture_data import DataError
from gesture_data.datasets.synthetic import make_clip
from gesture_data.video import (
    HAND_KEYPOINTS,
    KEYPOINT_NAMES,
    VideoClip,
    keypoint_heatmaps,
    load_video_folder,
    read_video,
    render_video_clip,
    speaker_palette,
    synthetic_video_corpus,
    write_video,
)

SECONDS = 3.0


@pytest.fixture(scope="module")
def corpus() -> list[VideoClip]:
    # two clips = two speakers (1 and 2), 37 frames each at 12.5 fps
    return synthetic_video_corpus(2, SECONDS, seed=0)


@pytest.fixture(scope="module")
def mp4_roundtrip(corpus, tmp_path_factory):
    c = corpus[0]
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    out = write_video(path, c.frames, c.fps, audio=c.audio, sample_rate=c.sample_rate)
    return c, out, read_video(out)


def test_shapes_dtypes_and_caption(corpus):
    T = int(SECONDS * 12.5)
    for c in corpus:
        assert c.frames.shape == (T, 64, 64, 3) and c.frames.dtype == np.uint8
        assert c.reference.shape == (64, 64, 3) and c.reference.dtype == np.uint8
        assert c.keypoints.shape == (T, len(KEYPOINT_NAMES), 2)
        assert c.keypoints.dtype == np.float32 and c.confidence.dtype == np.float32
        assert c.confidence.shape == (T, len(KEYPOINT_NAMES))
        assert c.audio.dtype == np.float32 and c.audio.shape == (int(SECONDS * 16000),)
        assert c.fps == 12.5 and c.sample_rate == 16000
        assert c.caption == " ".join(w for _, _, w in c.meta["words"]) and c.caption
    assert [c.speaker for c in corpus] == [1, 2]
    assert len(HAND_KEYPOINTS) == 14
    assert all(KEYPOINT_NAMES[i].endswith(("_wrist", "_middle1", "_tip")) for i in HAND_KEYPOINTS)


def test_deterministic(corpus):
    again = synthetic_video_corpus(1, SECONDS, seed=0)[0]
    assert again.frames.tobytes() == corpus[0].frames.tobytes()
    assert again.reference.tobytes() == corpus[0].reference.tobytes()
    assert again.keypoints.tobytes() == corpus[0].keypoints.tobytes()


def test_confidence_marks_points_inside_the_frame(corpus):
    for c in corpus:
        inside = ((c.keypoints >= 0) & (c.keypoints < 1)).all(-1)
        np.testing.assert_array_equal(c.confidence, inside.astype(np.float32))
        # the default framing (hips to above the head) shows every upper-body point
        upper = [i for i, n in enumerate(KEYPOINT_NAMES) if "knee" not in n]
        assert c.confidence[:, upper].min() == 1.0


def test_frames_change_with_motion(corpus):
    # Mean absolute frame difference against mean keypoint speed (pixels per frame).
    # Measured Pearson r: 0.84 (clip 0) and 0.97 (clip 1); a static or shuffled renderer
    # gives about 0. Bound 0.6.
    for c in corpus:
        diff = np.abs(np.diff(c.frames.astype(np.float32), axis=0)).mean((1, 2, 3))
        speed = np.linalg.norm(np.diff(c.keypoints * 64, axis=0), axis=-1).mean(1)
        assert np.corrcoef(diff, speed)[0, 1] > 0.6


def test_keypoints_land_on_the_drawn_figure(corpus):
    # the pixel under every visible keypoint (wrists, fingertips, face, ...) is not
    # background: colour distance (sum over RGB, of 765) measured >= 59 for every visible
    # point of both clips; bound 30
    for c in corpus:
        bg = np.round(speaker_palette(c.speaker)["background"] * 255)
        ix = np.floor(c.keypoints * 64).astype(int)
        vis = c.confidence > 0
        t, k = np.nonzero(vis)
        pix = c.frames[t, ix[t, k, 1], ix[t, k, 0]].astype(float)
        assert (np.abs(pix - bg).sum(-1) > 30).all()
        wrists = [KEYPOINT_NAMES.index("left_wrist"), KEYPOINT_NAMES.index("right_wrist")]
        assert vis[:, wrists].all()


def test_mouth_follows_the_jaw(corpus):
    # mouth-coloured area in a 9x9 box around the mouth keypoint against the jaw angle
    # (resampled to 12.5 fps by nearest frame); measured r = 0.97 / 0.95, bound 0.6
    for c in corpus:
        src = make_clip(c.speaker - 1, SECONDS, 0)
        jaw = src.poses[np.round(np.arange(c.num_frames) * 2.4).astype(int), 66]
        m = speaker_palette(c.speaker)["mouth"] * 255
        mk = KEYPOINT_NAMES.index("mouth")
        area = []
        for t in range(c.num_frames):
            x, y = np.floor(c.keypoints[t, mk] * 64).astype(int)
            box = c.frames[t, y - 4 : y + 5, x - 4 : x + 5].astype(float)
            area.append(np.clip(1 - np.abs(box - m).sum(-1) / 150, 0, 1).sum())
        assert np.corrcoef(area, jaw)[0, 1] > 0.6


def test_reference_is_a_neutral_pose_with_the_speaker_palette(corpus):
    a, b = corpus
    # appearance differs between speakers (mean abs difference measured 36 of 255)
    assert np.abs(a.reference.astype(int) - b.reference).mean() > 10
    # the rest pose is not any frame of the clip, but it stands where the clip does: the
    # background pixel share differs from the first frame's by little (measured 0.69 vs
    # 0.70; bound 0.1)
    bg = np.round(speaker_palette(a.speaker)["background"] * 255)
    share = lambda img: (np.abs(img.astype(float) - bg).sum(-1) < 1).mean()  # noqa: E731
    assert not any((a.reference == f).all() for f in a.frames)
    assert abs(share(a.reference) - share(a.frames[0])) < 0.1
    first = render_video_clip(make_clip(0, 1.0, 0), reference="first")
    np.testing.assert_array_equal(first.reference, first.frames[0])


def test_render_is_thread_count_independent_and_faces_the_camera():
    clip = make_clip(0, 1.0, 0)
    ref = render_video_clip(clip)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = render_video_clip(clip)
    finally:
        torch.set_num_threads(n)
    assert single.frames.tobytes() == ref.frames.tobytes()
    # front view: the person's left is on the image's right
    ls, rs = KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_shoulder")
    assert (ref.keypoints[:, ls, 0] > ref.keypoints[:, rs, 0] + 0.1).all()
    # the same take turned 90 degrees about the vertical (root rotation and translation)
    # renders the same picture: the mean heading is turned to the camera. Measured: max
    # keypoint difference 6e-8 (float32 rounding), identical frames (clips 0 and 1); bounds
    # 1e-4 of the width and one grey level (a float64 rounding flip at x.5)
    turned = copy.deepcopy(clip)
    yaw = torch.tensor([0.0, np.pi / 2, 0.0], dtype=torch.float64)
    root = torch.from_numpy(clip.poses[:, :3].astype(np.float64))
    r = roma.rotvec_composition([yaw.expand_as(root), root])
    turned.poses[:, :3] = r.numpy()
    turned.trans = (roma.rotvec_to_rotmat(yaw).numpy() @ clip.trans.T).T.astype(np.float32)
    other = render_video_clip(turned)
    np.testing.assert_allclose(other.keypoints, ref.keypoints, rtol=0, atol=1e-4)
    assert np.abs(other.frames.astype(int) - ref.frames).max() <= 1
    assert abs(other.meta["heading_rad"] - ref.meta["heading_rad"]) == pytest.approx(np.pi / 2)


def test_render_beat2_take(beat2_clip):
    # the first 4 s of a real BEAT2 take (skipped without the fixture)
    take = dataclasses.replace(
        beat2_clip,
        poses=beat2_clip.poses[:120],
        trans=beat2_clip.trans[:120],
        expressions=beat2_clip.expressions[:120],
        audio=beat2_clip.audio[: 4 * beat2_clip.sample_rate],
        words=[w for w in beat2_clip.words if w[1] <= 4.0],
    )
    v = render_video_clip(take, size=64, fps=25.0)
    assert v.frames.shape == (100, 64, 64, 3) and v.audio.size == 64000
    assert v.caption and v.speaker == 2
    head = [KEYPOINT_NAMES.index(n) for n in ("head", "neck", "left_shoulder", "mouth")]
    assert v.confidence[:, head].min() == 1.0
    bg = np.round(speaker_palette(2)["background"] * 255)
    ix = np.floor(v.keypoints * 64).astype(int)
    t, k = np.nonzero(v.confidence > 0)
    pix = v.frames[t, ix[t, k, 1], ix[t, k, 0]].astype(float)
    assert (np.abs(pix - bg).sum(-1) > 30).all()


def test_video_clip_checks_its_fields(corpus):
    good = dataclasses.asdict(corpus[0])
    cases = {
        "frames": good["frames"].astype(np.float32),
        "reference": good["reference"][:32],
        "keypoints": good["keypoints"][:-1],
        "confidence": good["confidence"][:, :3],
        "audio": np.stack([good["audio"], good["audio"]]),
    }
    for key, bad in cases.items():
        with pytest.raises(DataError, match=f"key '{key}'"):
            VideoClip(**{**good, key: bad})
    kp = good["keypoints"].copy()
    kp[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        VideoClip(**{**good, "keypoints": kp})


def test_render_rejects_bad_poses():
    clip = make_clip(0, 1.0, 0)
    clip.poses = clip.poses[:, :100]
    with pytest.raises(DataError, match="poses"):
        render_video_clip(clip)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_heatmap_peaks_at_the_keypoints(corpus, backend):
    kp = corpus[0].keypoints[:5]
    conf = corpus[0].confidence[:5]
    x = torch.from_numpy(kp) if backend == "torch" else kp
    maps = keypoint_heatmaps(x, (32, 48), sigma=1.5, confidence=conf)
    assert isinstance(maps, torch.Tensor if backend == "torch" else np.ndarray)
    maps = np.asarray(maps)
    assert maps.shape == (5, len(KEYPOINT_NAMES), 32, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    t, k = np.nonzero(conf > 0)
    flat = maps[t, k].reshape(len(t), -1).argmax(-1)
    py, px = np.unravel_index(flat, (32, 48))
    # pixel quantisation: the argmax is the pixel centre nearest the keypoint, so it is
    # within half a pixel of (x * w - 0.5, y * h - 0.5) (pixel i's centre is (i + 0.5) / w)
    assert np.abs(px - (kp[t, k, 0] * 48 - 0.5)).max() <= 0.5 + 1e-4
    assert np.abs(py - (kp[t, k, 1] * 32 - 0.5)).max() <= 0.5 + 1e-4
    # a sampled Gaussian's max is within half a pixel of the centre: >= exp(-0.25/sigma^2)
    assert maps[t, k].max((-1, -2)).min() >= np.exp(-2 * 0.25 / (2 * 1.5**2)) - 1e-6
    t0, k0 = np.nonzero(conf == 0)
    assert (maps[t0, k0] == 0).all()


def test_heatmaps_numpy_equals_torch_and_checks_input():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1, (3, 4, 2)).astype(np.float32)
    a = keypoint_heatmaps(kp, 16, sigma=2.0)
    b = keypoint_heatmaps(torch.from_numpy(kp), 16, sigma=2.0)
    np.testing.assert_array_equal(a, b.numpy())  # the numpy path runs the torch code
    # any leading dims: (B, T, K, 2) -> (B, T, K, h, w), each map as computed alone
    batch = keypoint_heatmaps(torch.from_numpy(np.stack([kp, kp[::-1]])), (8, 12), sigma=2.0)
    assert batch.shape == (2, 3, 4, 8, 12)
    np.testing.assert_array_equal(batch[1, 0].numpy(), keypoint_heatmaps(kp[2], (8, 12), sigma=2.0))
    with pytest.raises(DataError, match="keypoints"):
        keypoint_heatmaps(np.zeros((3, 4, 3)), 16)
    kp[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        keypoint_heatmaps(kp, 16)


def test_mp4_roundtrip_frames_and_audio(mp4_roundtrip):
    c, _, (frames, fps, audio, sr) = mp4_roundtrip
    assert frames.shape == c.frames.shape and frames.dtype == np.uint8
    assert fps == pytest.approx(12.5)
    # H.264 at crf 18 on flat cartoon frames: mean abs error measured 3.3 / 3.6 of 255 (the
    # error sits on the thin anti-aliased edges and colour subsampling); bound 6
    err = np.abs(frames.astype(float) - c.frames).mean()
    assert err < 6.0
    assert sr == c.sample_rate
    # AAC: length measured equal (the encoder's priming is trimmed on decode); allow one
    # 1024-sample AAC frame. Correlation measured 0.9999 / 0.9988;
    # bound 0.99
    assert abs(audio.size - c.audio.size) <= 1024
    n = min(audio.size, c.audio.size)
    assert np.corrcoef(audio[:n], c.audio[:n])[0, 1] > 0.99


def test_write_video_is_atomic_keeps_umask_and_pads_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    # flat 4x4-ish blocks of a few levels, so H.264 reproduces them closely
    blocks = rng.integers(0, 4, (1, 9, 9, 3), dtype=np.uint8) * 80
    frames = np.repeat(np.kron(blocks, np.ones((1, 4, 4, 1), np.uint8))[:, :33, :35], 4, axis=0)
    old = os.umask(0o022)
    try:
        out = write_video(tmp_path / "odd.mp4", frames, 10.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]  # no temp left
    got, fps, audio, sr = read_video(out)
    assert got.shape == (4, 34, 36, 3) and audio is None and sr is None and fps == 10.0
    # random 4-pixel colour blocks: mean abs error measured 5.3 of 255 (a shifted or
    # rescaled picture gives tens); bound 10. The padding repeats the last row: rows 32 and
    # 33 decode within 3 levels (measured); bound 20
    assert np.abs(got[:, :33, :35].astype(float) - frames).mean() < 10.0
    assert np.abs(got[:, 33, :35].astype(int) - got[:, 32, :35]).max() <= 20
    with pytest.raises(DataError, match="frames"):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), 10.0)
    with pytest.raises(DataError, match="sample_rate"):
        write_video(tmp_path / "bad.mp4", frames, 10.0, audio=np.zeros(100, np.float32))
    with pytest.raises(DataError, match="not an mp4 file name"):
        write_video(tmp_path / "bad.gif", frames, 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def _user_folder(root, corpus, *, names=("a", "b")):
    """A folder as a user would give it: a.mp4 with audio + json (+ txt); b.mp4 silent +
    b.wav + json with [x, y] pairs and a caption field."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    for name, c in zip(names, corpus, strict=True):
        with_audio = name == names[0]
        write_video(
            root / f"{name}.mp4",
            c.frames,
            c.fps,
            audio=c.audio if with_audio else None,
            sample_rate=c.sample_rate if with_audio else None,
        )
        px = c.keypoints * 64
        if with_audio:
            kp = np.concatenate([px, c.confidence[..., None]], -1)
            (root / f"{name}.txt").write_text(c.caption + "\n")
            body = {"keypoints": kp.tolist()}
        else:
            sf.write(str(root / f"{name}.wav"), c.audio, c.sample_rate, subtype="FLOAT")
            body = {"keypoints": px.tolist(), "caption": c.caption, "speaker": 7}
        (root / f"{name}.json").write_text(json.dumps(body))
    return root


@pytest.fixture(scope="module")
def user_folder(corpus, tmp_path_factory):
    return _user_folder(tmp_path_factory.mktemp("user") / "videos", corpus)


def test_load_video_folder(user_folder, corpus):
    clips = load_video_folder(user_folder)
    assert [c.clip_id for c in clips] == ["a", "b"]
    a, b = clips
    for got, src in zip(clips, corpus, strict=True):
        assert got.frames.shape == src.frames.shape
        np.testing.assert_array_equal(got.reference, got.frames[0])
        assert got.caption == src.caption
        # json pixels -> [0, 1]: float32 round trip through json text is exact
        np.testing.assert_allclose(got.keypoints, src.keypoints, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.confidence, corpus[0].confidence)
    assert (b.confidence == 1).all() and b.speaker == 7 and a.speaker == 0
    # b's audio comes from the wav exactly; a's from the mp4's AAC track
    np.testing.assert_array_equal(b.audio, corpus[1].audio)
    assert a.sample_rate == 16000 and abs(a.audio.size - corpus[0].audio.size) <= 1024


def _copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing_json", r"b\.json.*missing keypoint file"),
        ("no_field", r"a\.json: key 'keypoints': missing field"),
        ("length", r"a\.json: key 'keypoints'.*expected 37 frames, found 36 frames"),
        ("corrupt_mp4", r"a\.mp4: key 'video': cannot decode video"),
        ("no_audio", r"b\.wav: key 'audio'"),
        ("bad_conf", r"a\.json: key 'keypoints': confidence outside"),
        ("bad_json", r"b\.json: cannot read keypoint json"),
        ("missing_root", r"nowhere: no such video folder"),
    ],
)
def test_load_video_folder_bad_input(user_folder, tmp_path, case, match):
    root = _copy_folder(user_folder, tmp_path / "v")
    if case == "missing_json":
        (root / "b.json").unlink()
    elif case == "no_field":
        (root / "a.json").write_text(json.dumps({"points": []}))
    elif case in ("length", "bad_conf"):
        kp = json.loads((root / "a.json").read_text())["keypoints"]
        if case == "length":
            kp = kp[:-1]
        else:
            kp[3][2][2] = 1.5
        (root / "a.json").write_text(json.dumps({"keypoints": kp}))
    elif case == "corrupt_mp4":
        data = (root / "a.mp4").read_bytes()
        (root / "a.mp4").write_bytes(data[:64] + b"\0" * 512)
    elif case == "no_audio":
        (root / "b.wav").unlink()
    elif case == "bad_json":
        (root / "b.json").write_text("{not json")
    elif case == "missing_root":
        root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=match):
        load_video_folder(root)
