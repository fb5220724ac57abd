"""``gesture eval`` and ``gesture render`` on synthetic BEAT2 clips (npz + 16 kHz wav)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from gesture_apps import main
from gesture_apps.data.motion import Motion, write_beat2_npz
from gesture_data.datasets.synthetic import make_clip

SECONDS = 5.0  # BC trims 2 s at each end


def _write_clip(clip, path, poses=None):
    poses = clip.poses if poses is None else poses
    t = len(poses)
    write_beat2_npz(path, Motion(poses, clip.trans[:t], clip.expressions[:t]))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """gt/{a,b}.npz (clips 0, 1), pred/{a,b}.npz (clips 2, 3), audio/{a,b}.wav, a tiny encoder."""
    from gesture_eval import FGDEncoder

    root = tmp_path_factory.mktemp("eval")
    clips = [make_clip(i, SECONDS, seed=0) for i in range(4)]
    for name, gt, pred in (("a", clips[0], clips[2]), ("b", clips[1], clips[3])):
        _write_clip(gt, root / "gt" / f"{name}.npz")
        _write_clip(pred, root / "pred" / f"{name}.npz")
        (root / "audio").mkdir(exist_ok=True)
        sf.write(str(root / "audio" / f"{name}.wav"), gt.audio, 16000, subtype="FLOAT")
    torch.manual_seed(0)
    FGDEncoder.tiny().save_pretrained(root / "encoder")
    return root, clips


def _direct(pred, gt, audios, encoder_dir):
    """gesture_eval.evaluate called the way the CLI documents it (approximate SMPL-X joints,
    BC normalised by the ground truth's mean joint speed)."""
    from gesture_apps.systems.demo import mean_speed
    from gesture_data.skeleton import smplx_joints_approx
    from gesture_eval import FGDEncoder, evaluate

    return evaluate(
        pred,
        gt,
        audios=audios,
        pred_joints=[smplx_joints_approx(torch.from_numpy(p).double()).numpy() for p in pred],
        fgd_encoder=FGDEncoder.from_pretrained(encoder_dir).eval(),
        mean_velocity=mean_speed(gt),
    )["variants"]


def _eval(root, *args):
    return [
        "eval",
        "--gt",
        str(root / "gt"),
        "--audio",
        str(root / "audio"),
        "--fgd-encoder",
        str(root / "encoder"),
        *args,
    ]


def test_eval_of_ground_truth_against_itself(data, tmp_path, capsys):
    root, clips = data
    out = tmp_path / "new" / "metrics.json"  # the folder is created
    assert main(_eval(root, "--pred", str(root / "gt"), "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["num_sequences"] == 2 and result["inputs"]["sequences"] == ["a", "b"]
    gt = [clips[0].poses, clips[1].poses]
    direct = _direct(gt, gt, [clips[0].audio, clips[1].audio], root / "encoder")
    for variant in ("evaltools", "cvpr24"):
        got = result["variants"][variant]
        assert abs(got["fgd"]) < 1e-3  # the references add eps * I before the matrix sqrt
        assert got == pytest.approx(direct[variant], rel=1e-6, abs=1e-9)
        assert 0 <= got["bc"] <= 1
    shown = capsys.readouterr().out
    assert "fgd" in shown and "evaltools" in shown and str(out) in shown
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.json"]  # no temp file


def test_eval_of_other_clips_matches_gesture_eval(data, tmp_path):
    root, clips = data
    out = tmp_path / "m.json"
    args = _eval(root, "--pred", str(root / "pred"), "--variant", "evaltools", "--out", str(out))
    assert main(args) == 0
    got = json.loads(out.read_text())["variants"]
    assert list(got) == ["evaltools"]
    pred = [clips[2].poses, clips[3].poses]
    gt = [clips[0].poses, clips[1].poses]
    direct = _direct(pred, gt, [clips[0].audio, clips[1].audio], root / "encoder")
    assert got["evaltools"]["fgd"] > 1e-3
    assert 0 <= got["evaltools"]["bc"] <= 1 and got["evaltools"]["l1div"] > 0
    assert got["evaltools"] == pytest.approx(direct["evaltools"], rel=1e-6, abs=1e-9)


def test_eval_single_files_cut_to_the_shorter_and_skips_without_audio_or_encoder(
    data, tmp_path, capsys
):
    root, clips = data
    short = _write_clip(clips[2], tmp_path / "pred_other_name.npz", clips[2].poses[:100])
    out = tmp_path / "m.json"
    args = ["eval", "--pred", str(short), "--gt", str(root / "gt" / "a.npz"), "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["num_frames"] == 100
    assert set(result["variants"]["evaltools"]) == {"l1div"}
    assert result["skipped"]["bc"] == "needs --audio"
    assert result["skipped"]["fgd"] == "needs --fgd-encoder"
    shown = capsys.readouterr().out
    assert "skipped bc: needs --audio" in shown and "skipped fgd" in shown


def test_eval_with_smplx_model_and_mean_velocity_file(data, tmp_path):
    from gesture_eval import evaluate, synthetic

    root, clips = data
    model = synthetic.write_synthetic_smplx(tmp_path / "SMPLX_NEUTRAL_2020.npz", num_vertices=100)
    mv = np.linspace(0.5, 1.5, 55)
    np.save(tmp_path / "mean_vel.npy", mv)
    out = tmp_path / "m.json"
    args = ["--pred", str(root / "pred"), "--smplx-model", str(model), "--out", str(out)]
    assert main([*_eval(root, *args), "--mean-velocity", str(tmp_path / "mean_vel.npy")]) == 0
    result = json.loads(out.read_text())
    assert result["inputs"]["joints"] == str(model)
    direct = evaluate(
        [clips[2].poses, clips[3].poses],
        [clips[0].poses, clips[1].poses],
        audios=[clips[0].audio, clips[1].audio],
        smplx_model=model,
        mean_velocity=mv,
    )["variants"]
    for variant in ("evaltools", "cvpr24"):
        assert 0 <= result["variants"][variant]["bc"] <= 1
        got = {k: v for k, v in result["variants"][variant].items() if k != "fgd"}
        assert got == pytest.approx(direct[variant], rel=1e-6, abs=1e-9)


def _bad_npz(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _make_pred(root, tmp_path, case):
    """A --pred folder (copy of pred/) broken in one way; returns (args, text in the error)."""
    pred = tmp_path / "pred"
    shutil.copytree(root / "pred", pred)
    a = pred / "a.npz"
    poses = np.zeros((150, 165), np.float32)
    if case == "missing":
        return ["--pred", str(tmp_path / "nope.npz")], "nope.npz"
    if case == "unpaired":
        shutil.copy(a, pred / "c.npz")
        return ["--pred", str(pred)], "c.npz"
    if case == "no_poses":
        _bad_npz(a, trans=np.zeros((150, 3)))
        return ["--pred", str(pred)], "'poses'"
    if case == "nan":
        poses[7, 3] = np.nan
        _bad_npz(a, poses=poses)
        return ["--pred", str(pred)], "non-finite"
    if case == "shape":
        _bad_npz(a, poses=np.zeros((150, 55, 3), np.float32))
        return ["--pred", str(pred)], "(T, 165)"
    if case == "trans_shape":
        _bad_npz(a, poses=poses, trans=np.zeros((149, 3)))
        return ["--pred", str(pred)], "'trans'"
    if case == "corrupt":
        a.write_bytes(b"PK\x03\x04 not really a zip file")
        return ["--pred", str(pred)], "a.npz"
    if case == "variant":
        return ["--pred", str(pred), "--variant", "cvpr23"], "cvpr23"
    if case == "no_audio_for_stem":
        (tmp_path / "audio").mkdir()
        shutil.copy(root / "audio" / "a.wav", tmp_path / "audio" / "a.wav")
        return ["--pred", str(pred), "--audio", str(tmp_path / "audio")], "b.wav"
    if case == "mean_velocity":
        np.save(tmp_path / "mv.npy", np.ones(22))
        return ["--pred", str(pred), "--mean-velocity", str(tmp_path / "mv.npy")], "55"
    if case == "encoder":
        (tmp_path / "enc").mkdir()
        return ["--pred", str(pred), "--fgd-encoder", str(tmp_path / "enc")], "config.json"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "unpaired",
        "no_poses",
        "nan",
        "shape",
        "trans_shape",
        "corrupt",
        "variant",
        "no_audio_for_stem",
        "mean_velocity",
        "encoder",
    ],
)
def test_eval_bad_input_is_one_line_exit_2_and_no_output(data, tmp_path, capsys, case):
    root, _ = data
    args, expected = _make_pred(root, tmp_path, case)
    out = tmp_path / "out" / "metrics.json"
    assert main([*_eval(root), *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gesture: error: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_eval_and_render_have_help(capsys):
    for command in ("eval", "render"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
    assert "MOTION.npz" in capsys.readouterr().out


# ----- render ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    clip = make_clip(5, 2.0, seed=0)
    npz = _write_clip(clip, root / "clip.npz")
    wav = root / "clip.wav"
    sf.write(str(wav), clip.audio, 16000, subtype="FLOAT")
    return npz, wav


def test_render_mp4_with_audio_and_gif(short_clip, tmp_path, capsys):
    npz, wav = short_clip
    mp4 = tmp_path / "video" / "clip.mp4"
    assert main(["render", str(npz), "--out", str(mp4), "--audio", str(wav), "--size", "160"]) == 0
    data = mp4.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000
    gif = tmp_path / "clip.gif"
    assert main(["render", str(npz), "--out", str(gif), "--size", "96"]) == 0
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert "60 frames" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["clip.gif", "clip.mp4"]


@pytest.mark.parametrize("case", ["missing", "nan", "no_poses", "suffix", "audio_rate", "size"])
def test_render_bad_input_is_one_line_exit_2_and_no_output(short_clip, tmp_path, capsys, case):
    npz, _ = short_clip
    out = tmp_path / "clip.mp4"
    args = ["render", str(npz), "--out", str(out)]
    if case == "missing":
        args[1] = str(tmp_path / "nope.npz")
    elif case == "nan":
        poses = np.zeros((60, 165), np.float32)
        poses[3] = np.inf
        _bad_npz(tmp_path / "bad.npz", poses=poses)
        args[1] = str(tmp_path / "bad.npz")
    elif case == "no_poses":
        _bad_npz(tmp_path / "bad.npz", trans=np.zeros((60, 3)))
        args[1] = str(tmp_path / "bad.npz")
    elif case == "suffix":
        out = tmp_path / "clip.avi"
        args[3] = str(out)
    elif case == "audio_rate":
        sf.write(str(tmp_path / "8k.wav"), np.zeros(16000, np.float32), 8000)
        args += ["--audio", str(tmp_path / "8k.wav")]
    elif case == "size":
        args += ["--size", "8"]
    before = {p.name for p in tmp_path.iterdir()}
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gesture: error: ")
    assert not out.exists() and {p.name for p in tmp_path.iterdir()} == before
