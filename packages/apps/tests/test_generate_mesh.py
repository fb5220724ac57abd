"""`gesture generate --bundle T2M --smplx-model PATH --out x.mp4`: SMPL-X meshes fitted to the
generated joints (and the ground truth's). Training a T2M-GPT bundle costs more than this
file's budget, so the bundle is a manifest whose pipeline is replaced by one returning known
HumanML3D features: everything from the flags to the mp4 is the real CLI path.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from gesture_apps.cli import main
from gesture_apps.runtime.bundle import write_bundle
from gesture_data.datasets.humanml3d import joints_to_features
from gesture_data.datasets.smplx_model import smplx_joints, write_synthetic_smplx_model

FRAMES = 4  # generated motion length (features), 20 fps: each frame costs two 320 x 320 meshes


def _features(model, seed: int, frames: int) -> np.ndarray:
    """HumanML3D features ``(frames, 263)`` of smooth random SMPL-X body motion."""
    rng = np.random.default_rng(seed)
    poses = np.zeros((frames + 1, 165), np.float32)
    poses[:, 3:66] = gaussian_filter1d(rng.normal(0, 0.3, (frames + 1, 63)), 3, axis=0)
    return joints_to_features(smplx_joints(poses, model)[:, :22])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The stand-in SMPL-X model, saved uncompressed (loads in a third of the time)."""
    path = write_synthetic_smplx_model(tmp_path_factory.mktemp("bm"))
    with np.load(path) as z:
        arrays = dict(z)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def generated(model):
    return _features(model, 0, FRAMES)


@pytest.fixture
def t2m_bundle(tmp_path, generated, monkeypatch):
    """A T2M-GPT bundle folder whose pipeline generates ``generated`` for any caption."""
    from gesture_apps.systems.t2m_gpt import pipeline

    feats = generated

    class FakePipeline:
        fps = 20.0

        def __call__(self, captions, seed=0):
            return [feats.copy() for _ in captions]

    monkeypatch.setattr(
        pipeline.T2MPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: FakePipeline())
    )
    return write_bundle(tmp_path / "t2m", system="t2m_gpt", components={}, layout="humanml3d")


def test_generate_draws_fitted_meshes_side_by_side(t2m_bundle, model, tmp_path, capsys):
    """With --gt: generated | ground truth meshes; the ground truth is a features .npy."""
    import imageio.v3 as iio

    gt = tmp_path / "gt.npy"
    np.save(gt, _features(model, 1, FRAMES + 4))  # longer: the video is cut to the shorter
    out = tmp_path / "m.mp4"
    argv = ["generate", "--bundle", str(t2m_bundle), "--text", "wave", "--out", str(out)]
    assert main([*argv, "--gt", str(gt), "--smplx-model", str(model)]) == 0
    frames = iio.imread(out)
    # generated | ground truth, each render_smpl_video's default 320 x 320 under a 28-pixel
    # caption strip
    assert frames.shape == (FRAMES, 28 + 320, 640, 3)
    # both panels hold a mesh (pixels that are not the white background) in every frame,
    # and both captions some dark text
    for half in (frames[:, 28:, :320], frames[:, 28:, 320:]):
        assert ((half < 200).any(-1).sum((1, 2)) > 100).all()
    for cap in (frames[:, :28, :320], frames[:, :28, 320:]):
        assert ((cap < 100).any(-1).sum((1, 2)) > 20).all()
    assert f"generate: {FRAMES} frames" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, out_name, needle",
    [
        (["--smplx-model", "{model}"], "m.npy", "--smplx-model: only drawn into an .mp4"),
        (["--smplx-model", "{tmp}/nope.npz"], "m.mp4", "nope.npz: no such file or folder"),
    ],
)
def test_generate_mesh_bad_flags_exit_2(
    t2m_bundle, model, tmp_path, capsys, extra, out_name, needle
):
    extra = [a.replace("{model}", str(model)).replace("{tmp}", str(tmp_path)) for a in extra]
    out = tmp_path / out_name
    argv = ["generate", "--bundle", str(t2m_bundle), "--text", "wave", "--out", str(out)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.glob("m.*"))


def test_generate_mesh_model_folder_without_model_exits_2(t2m_bundle, tmp_path, capsys):
    """An existing folder without smplx/SMPLX_NEUTRAL.npz: one line naming the file, no mp4."""
    out = tmp_path / "m.mp4"
    argv = ["generate", "--bundle", str(t2m_bundle), "--text", "wave", "--out", str(out)]
    assert main([*argv, "--smplx-model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SMPLX_NEUTRAL.npz" in err, err
    assert not out.exists()


def test_smplx_model_needs_a_t2m_bundle(tmp_path, model, capsys):
    other = write_bundle(tmp_path / "lsm", system="gesturelsm", components={})
    out = tmp_path / "m.mp4"
    argv = ["generate", "--bundle", str(other), "--out", str(out)]
    assert main([*argv, "--smplx-model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--smplx-model: only T2M-GPT bundles" in err, err


def test_generate_help_names_smplx_model(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--smplx-model" in capsys.readouterr().out
