import subprocess

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from gesture_data.datasets import synthetic
from gesture_data.render import parents_for, render_motion
from gesture_data.skeleton import smplx_joints_approx


def test_mp4_side_by_side_with_audio(tmp_path):
    c = synthetic.make_clip(1, seconds=1.0, seed=5)
    j = smplx_joints_approx(c.poses.astype(np.float64)).numpy()
    out = render_motion(
        [j, j + 0.01],
        tmp_path / "cmp.mp4",
        audio=c.audio,
        titles=["ground truth", "generated"],
        size=(320, 320),
    )
    r = imageio.get_reader(out)
    md = r.get_meta_data()
    assert md["fps"] == 30 and md["size"] == (640, 320)
    assert abs(md["duration"] - 1.0) < 0.05
    assert r.count_frames() == 30
    frame = r.get_data(10)
    assert frame.shape == (320, 640, 3) and frame.min() < 128  # something was drawn
    info = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True
    ).stderr
    assert "Audio: aac" in info and "16000 Hz" in info
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_gif_and_other_skeletons(tmp_path):
    from gesture_data.datasets import bvh

    m = bvh.seg_skeleton()
    m.rotations = np.zeros((5, 51, 3))
    m.rotations[:, m.names.index("LeftShoulder"), 0] = np.linspace(0, 80, 5)  # arm waves
    m.root_positions = np.tile([0.0, 90.0, 0.0], (5, 1))
    m.positions = np.zeros((5, 51, 3))
    m.frame_time = 1 / 60
    j = bvh.bvh_forward_kinematics(m)
    out = render_motion(j, tmp_path / "seg.gif", parents="seg", fps=10, size=(160, 160))
    frames = imageio.mimread(out)
    assert len(frames) == 5 and frames[0].shape[:2] == (160, 160)
    assert len(parents_for("humanml3d")) == 22 and parents_for("humanml3d")[21] == 19
