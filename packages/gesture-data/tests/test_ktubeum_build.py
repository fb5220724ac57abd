"""KTubeUM build: the synthetic estimator corpus, build_dataset against the library functions
called by hand, bad frames, reruns, and the video renderers."""

import json
import shutil

import numpy as np
import pytest

from gesture_data.datasets import humanml3d, ktubeum
from gesture_data.datasets.smplx_model import write_synthetic_smplx_model
from gesture_data.render import render_joints_video
from gesture_data.render_smpl import rasterize, render_smpl_video
from gesture_data.video import read_video

SECONDS = 2.0  # 60 frames at 30 fps -> 40 HumanML3D frames at 20 fps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ktubeum_raw")
    ids = ktubeum.write_synthetic_pose_jsons(root, num_clips=3, seconds=SECONDS, seed=3)
    return root, ids


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("ktubeum_out")
    seen = []
    report = ktubeum.build_dataset(
        root / "json", out, progress=lambda d, n, c: seen.append((d, n, c))
    )
    return out, report, seen


@pytest.fixture(scope="module")
def body_model(tmp_path_factory):
    return write_synthetic_smplx_model(tmp_path_factory.mktemp("bm"))


def _by_hand(folder, work, cid, text, files=None):
    """The construction done with the library functions one by one."""
    z = ktubeum.pose_json_to_npz(files or folder, work / "npz" / f"{cid}.npz")
    joints = ktubeum.npz_to_humanml3d_joints(z["poses"], None, z["betas"])
    cap = humanml3d.make_caption(text, "ko")
    return z, joints, cap


def _same_tree(a, b, skip=(".build",)):
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    fa = [p for p in fa if p.parts[0] not in skip]
    fb = [p for p in fb if p.parts[0] not in skip]
    assert fa == fb
    for rel in fa:
        if rel.suffix == ".npz":  # zip members carry timestamps: compare the arrays
            za, zb = np.load(a / rel), np.load(b / rel)
            assert za.files == zb.files
            for k in za.files:
                np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{rel}:{k}")
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_synthetic_corpus_is_estimator_like_and_deterministic(corpus, tmp_path):
    root, ids = corpus
    assert len(ids) == 3 and all((root / "texts" / f"{c}.txt").read_text().strip() for c in ids)
    assert all((root / "wav" / f"{c}.wav").stat().st_size > 0 for c in ids)
    files = sorted((root / "json" / ids[0]).glob("*.json"))
    assert len(files) == int(SECONDS * 30) and files[0].name == "000000.json"
    frame = json.loads(files[0].read_text())
    assert set(frame) == set(ktubeum.KEYS)
    assert np.asarray(frame["smplx_root_pose"]).shape == (1, 3)  # nested, as OSX writes it
    assert np.asarray(frame["smplx_body_pose"]).shape == (21, 3)
    raw = ktubeum.read_pose_jsons(files)
    # the root fix and the filter have work to do: the raw root and camera move
    assert np.ptp(raw["smplx_root_pose"], axis=0).min() > 0.05
    assert np.ptp(raw["cam_trans"][:, 2]) > 0.01
    again = tmp_path / "again"
    assert ktubeum.write_synthetic_pose_jsons(again, num_clips=1, seconds=SECONDS, seed=3) == [
        ids[0]
    ]
    for f in files[::7]:
        assert (again / "json" / ids[0] / f.name).read_bytes() == f.read_bytes()


def test_build_reproduces_library_functions(corpus, built, tmp_path):
    root, ids = corpus
    out, report, seen = built
    assert report.ids("built") == ids and not report.bad_frame_lines()
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    joints, caps = {}, {}
    for cid in ids:
        text = (root / "texts" / f"{cid}.txt").read_text(encoding="utf-8").strip()
        _, joints[cid], cap = _by_hand(root / "json" / cid, tmp_path, cid, text)
        caps[cid] = [cap]
        assert joints[cid].shape == (int(np.floor((SECONDS * 30 - 1) / 30 * 20)) + 1, 22, 3)
    humanml3d.write_dataset(tmp_path, joints, caps, splits=humanml3d.make_splits(ids))
    _same_tree(out, tmp_path)  # every file equal, bit for bit
    for name in ("new_joint_vecs", "new_joints", "texts", "npz"):
        assert (out / name).is_dir()
    for name in ("Mean", "Std"):
        assert (out / f"{name}.npy").is_file()
    for split in ("train", "val", "test", "train_val", "all"):
        assert (out / f"{split}.txt").is_file()
    line = (out / "texts" / f"{ids[0]}.txt").read_text(encoding="utf-8").splitlines()[0]
    _caption, tokens, start, end = line.split("#")
    assert all("/" in t for t in tokens.split()) and (start, end) == ("0.0", "0.0")
    r = humanml3d.HumanML3DReader(out)
    assert r.ids() == ids and r.features(ids[0]).shape == (joints[ids[0]].shape[0] - 1, 263)


def test_rerun_skips_finished_clips_and_redoes_changed_ones(corpus, built, tmp_path):
    root, ids = corpus
    out, *_ = built
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    work = tmp_path / "out"
    shutil.copytree(out, work)
    stamps = {p: p.stat().st_mtime_ns for p in (work / "new_joint_vecs").iterdir()}
    again = ktubeum.build_dataset(raw / "json", work)
    assert again.ids("up to date") == ids
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # not recomputed
    # a changed input frame makes only its clip rebuild
    f = raw / "json" / ids[1] / "000010.json"
    d = json.loads(f.read_text())
    d["smplx_jaw_pose"] = [0.3, 0.0, 0.0]
    f.write_text(json.dumps(d))
    # a damaged output is noticed too (its hash no longer matches the manifest)
    (work / "new_joints" / f"{ids[2]}.npy").write_bytes(b"junk")
    third = ktubeum.build_dataset(raw / "json", work)
    assert third.ids("up to date") == [ids[0]] and third.ids("built") == ids[1:]
    assert np.load(work / "new_joints" / f"{ids[2]}.npy").shape[1:] == (22, 3)


def test_bad_frames_are_reported_and_dropped(corpus, tmp_path):
    root, ids = corpus
    cid = ids[0]
    raw = tmp_path / "json"
    shutil.copytree(root / "json" / cid, raw / cid)
    folder = raw / cid
    frame = lambda i: folder / f"{i:06d}.json"  # noqa: E731
    frame(5).write_text(frame(5).read_text()[:40])  # truncated
    d = json.loads(frame(12).read_text())
    del d["smplx_lhand_pose"]
    frame(12).write_text(json.dumps(d))
    d = json.loads(frame(20).read_text())
    d["smplx_body_pose"][3][1] = float("nan")
    frame(20).write_text(json.dumps(d))  # json.dumps writes NaN, as Python estimators do
    d = json.loads(frame(33).read_text())
    d["cam_trans"] = [0.0, 1.0]
    frame(33).write_text(json.dumps(d))
    frame(40).unlink()  # the estimator lost the speaker: an absent frame
    # a second clip with almost nothing usable is skipped whole
    short = raw / "too_short"
    short.mkdir()
    for i in range(10):
        shutil.copy(root / "json" / ids[1] / f"{i:06d}.json", short / f"{i:06d}.json")
    report = ktubeum.build_dataset(raw, tmp_path / "out", texts=root / "texts")
    lines = "\n".join(report.bad_frame_lines())
    assert "000005.json: corrupt or truncated json" in lines
    assert "000012.json: key 'smplx_lhand_pose': key missing" in lines
    assert "000020.json: key 'smplx_body_pose': non-finite" in lines
    assert "000033.json: key 'cam_trans': wrong size (expected 3, found 2)" in lines
    assert f"{cid}: gap of 1 frame(s) from frame 40" in lines
    assert "too_short: clip skipped" in lines
    (c,) = [c for c in report.clips if c.clip_id == cid]
    n = int(SECONDS * 30)
    assert (c.frames_in, c.frames_kept) == (n - 1, n - 5)
    assert c.gaps == [(5, 1), (12, 1), (20, 1), (33, 1), (40, 1)]
    assert report.dataset_ids == [cid] and humanml3d.read_split(tmp_path / "out", "all") == [cid]
    # what was kept is exactly the library run on the good frames alone: nothing averaged in
    good = [frame(i) for i in range(n) if i not in (5, 12, 20, 33, 40)]
    text = (root / "texts" / f"{cid}.txt").read_text(encoding="utf-8").strip()
    z, joints, _ = _by_hand(None, tmp_path / "hand", cid, text, files=good)
    assert z["poses"].shape == (n - 5, 165)
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "npz" / f"{cid}.npz")["poses"], z["poses"]
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "new_joint_vecs" / f"{cid}.npy"),
        humanml3d.joints_to_features(joints),
    )


def test_build_with_a_body_model_file(corpus, built, body_model, tmp_path):
    root, ids = corpus
    shutil.copytree(root / "json" / ids[0], tmp_path / "json" / ids[0])
    report = ktubeum.build_dataset(tmp_path / "json", tmp_path / "out", smplx_model=body_model)
    assert report.ids("built") == [ids[0]]
    z = ktubeum.pose_json_to_npz(tmp_path / "json" / ids[0], tmp_path / "hand.npz")
    joints = ktubeum.npz_to_humanml3d_joints(z["poses"], body_model, z["betas"])
    feats = np.load(tmp_path / "out" / "new_joint_vecs" / f"{ids[0]}.npy")
    np.testing.assert_array_equal(feats, humanml3d.joints_to_features(joints))
    # the stand-in model's rest joints are the approximate skeleton's, so both paths agree up
    # to smplx's float32 arithmetic: measured max |diff| 8.0e-7 on features of size ~1.5
    approx = np.load(built[0] / "new_joint_vecs" / f"{ids[0]}.npy")
    np.testing.assert_allclose(feats, approx, rtol=0, atol=1e-5)
    # another joint source (the approximate skeleton) is another build: redone, not reused
    again = ktubeum.build_dataset(tmp_path / "json", tmp_path / "out")
    assert again.ids("built") == [ids[0]]


def test_build_input_errors(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(ktubeum.DataError, match="pose json folder missing"):
        ktubeum.build_dataset(tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(ktubeum.DataError, match="SMPL-X model file missing"):
        ktubeum.build_dataset(root / "json", tmp_path / "o", smplx_model=tmp_path / "no_model")
    with pytest.raises(ktubeum.DataError, match="transcript folder missing"):
        ktubeum.build_dataset(root / "json", tmp_path / "o", texts=tmp_path / "no_texts")


def test_render_joints_video_side_by_side(built, tmp_path):
    out, report, _ = built
    a, b = (np.load(out / "new_joints" / f"{c}.npy") for c in report.ids()[:2])
    path = render_joints_video([a[:12], b], tmp_path / "v.mp4", titles=["gen", "gt"])
    frames, fps, audio, _ = read_video(path)
    assert frames.shape == (12, 320, 640, 3) and fps == 20 and audio is None
    # both panels draw a figure: dark (bone) pixels on each half of a frame
    dark = frames[10].mean(-1) < 200
    assert dark[:, :320].sum() > 100 and dark[:, 320:].sum() > 100
    with pytest.raises(ktubeum.DataError, match="motion 1: wrong shape"):
        render_joints_video([a, np.zeros((5, 21, 3))], tmp_path / "bad.mp4")
    assert not (tmp_path / "bad.mp4").exists()


def test_rasterizer_coverage_and_occlusion():
    # a unit square filling a quarter of a 2x2 window at 100 px: pixel centres inside it
    # are exactly 50 x 50 (edges fall between centres, so no tolerance is needed)
    sq = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    img = rasterize(sq, f, (100, 100), center=np.array([1.0, 1.0]), radius=1.0)
    assert (img != 255).any(-1).sum() == 2500
    # a nearer (z=+1), tilted square over it hides it where they overlap, whatever the order
    near = sq * [1, 1, 0] + [0.5, 0.5, 1.0]
    near[:, 2] += near[:, 0] * 0.5
    both = np.concatenate([sq, near])
    for faces in (np.concatenate([f, f + 4]), np.concatenate([f + 4, f])):
        im = rasterize(both, faces, (100, 100), center=np.array([1.0, 1.0]), radius=1.0)
        assert (im != 255).any(-1).sum() == 2500 + 2500 - 625
        assert (im[30, 80] != im[70, 30]).any()  # tilted near face shades differently
        np.testing.assert_array_equal(im[30, 80], im[40, 80])  # flat shading per face


def test_render_smpl_video_with_a_model_file(built, body_model, tmp_path):
    out, report, _ = built
    model = body_model
    poses = np.load(out / "npz" / f"{report.ids()[0]}.npz")["poses"][:3]
    path = render_smpl_video([poses, poses[::-1]], model, tmp_path / "m.mp4", size=(96, 96))
    frames, fps, *_ = read_video(path)
    assert frames.shape == (3, 96, 192, 3) and fps == 30
    assert (frames[0].mean(-1) < 240).sum() > 200  # the mesh covers part of each frame


def test_render_smpl_video_follow_keeps_a_travelling_body_large(built, body_model, tmp_path):
    out, report, _ = built
    poses = np.load(out / "npz" / f"{report.ids()[0]}.npz")["poses"][:4]
    trans = np.zeros((4, 3), np.float32)
    trans[:, 0] = np.linspace(0.0, 3.0, 4)  # walks 3 m sideways: 2x the body's height
    covered, centre = {}, {}
    for follow in (False, True):
        path = render_smpl_video([poses], body_model, tmp_path / f"{follow}.mp4", size=(96, 96),
                                 trans=[trans], follow=follow)  # fmt: skip
        frames, *_ = read_video(path)
        ink = frames.mean(-1) < 240  # (T, H, W) mesh pixels
        covered[follow] = ink.sum((1, 2)).mean()
        centre[follow] = [np.flatnonzero(m.any(0)).mean() for m in ink]  # columns of ink
    # a fixed framing spans the whole 3 m walk: the body is a small part of it and crosses
    # the image; following, it is drawn larger and stays centred. Measured with the
    # stand-in model: 7.3x the pixels (3605 vs 497 per frame); ink centres at columns
    # 20-75 fixed vs 47.5 in every frame following, of 96
    assert covered[True] > 4 * covered[False]
    assert np.ptp(centre[False]) > 40 and np.ptp(centre[True]) < 8
