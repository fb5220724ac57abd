"""Headless skeleton animation to mp4 (with the speech muxed in) or gif.

One or more motions ``(T, J, 3)`` are drawn side by side (e.g. ground truth vs generated)
as stick figures seen from the front (orthographic, x right, y up: the body's left, +x in
SMPL(-X), BEAT2 and HumanML3D, is on the viewer's right, as in the mesh renderer). Works for
SMPL-X joints, SeG BVH joints and HumanML3D joints: pass the matching ``parents`` (see
:func:`parents_for`).
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._io import atomic_path

log = logging.getLogger(__name__)


def parents_for(kind: str) -> list[int]:
    """Parent lists: ``"smplx"`` (55), ``"humanml3d"`` (22), ``"seg"`` (51)."""
    if kind == "smplx":
        from .skeleton import SMPLX_PARENTS

        return list(SMPLX_PARENTS)
    if kind == "humanml3d":
        from .datasets.humanml3d import KINEMATIC_CHAIN

        par = [-1] * 22
        for chain in KINEMATIC_CHAIN:
            for a, b in itertools.pairwise(chain):
                par[b] = a
        return par
    if kind == "seg":
        from .datasets.bvh import seg_skeleton

        return list(seg_skeleton().parents)
    raise ValueError(f"unknown skeleton kind {kind!r}")


def _frames(motions, parents, size, titles):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    n = len(motions)
    w, h = size
    fig, axes = plt.subplots(1, n, figsize=(w * n / 100, h / 100), dpi=100, squeeze=False)
    bones = [(j, p) for j, p in enumerate(parents) if p >= 0]
    cols = []
    for k, (ax, m) in enumerate(zip(axes[0], motions, strict=True)):
        xy = m[..., :2]  # front view: a camera on +z looking down -z sees +x on its right
        lo, hi = xy.reshape(-1, 2).min(0), xy.reshape(-1, 2).max(0)
        c, r = (lo + hi) / 2, max(hi - lo) / 2 * 1.1 + 1e-6
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_aspect("equal")
        ax.axis("off")
        if titles:
            ax.set_title(titles[k])
        lc = LineCollection([], linewidths=2, colors="#3060c0")
        ax.add_collection(lc)
        cols.append((lc, xy))
    fig.tight_layout()
    T = min(m.shape[0] for m in motions)
    try:
        for t in range(T):
            for lc, xy in cols:
                lc.set_segments([[xy[t, p], xy[t, j]] for j, p in bones])
            fig.canvas.draw()
            yield np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def render_motion(
    motions: np.ndarray | Sequence[np.ndarray],
    out_path: str | Path,
    *,
    parents: Sequence[int] | str = "smplx",
    fps: float = 30.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    titles: Sequence[str] | None = None,
    size: tuple[int, int] = (320, 320),
) -> Path:
    """Render ``(T, J, 3)`` motion(s) to ``out_path`` (``.mp4`` or ``.gif``), atomically.
    For mp4, ``audio (N,)`` is muxed in (AAC) and the video is cut to the shorter stream."""
    import imageio.v2 as imageio

    if isinstance(motions, np.ndarray) and motions.ndim == 3:
        motions = [motions]
    motions = [np.asarray(m, np.float32) for m in motions]
    par = parents_for(parents) if isinstance(parents, str) else list(parents)
    out_path = Path(out_path)
    frames = _frames(motions, par, size, titles)
    if out_path.suffix.lower() == ".gif":
        with atomic_path(out_path, ".gif") as tmp:
            imageio.mimsave(tmp, list(frames), format="GIF", duration=1000 / fps, loop=0)
        return out_path
    import imageio_ffmpeg

    # intermediates beside the output, not in $TMPDIR: the silent video is renamed into
    # place, and a rename cannot cross file systems (TMPDIR=/dev/shm, a tmpfs /tmp)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as d:
        silent = Path(d) / "video.mp4"
        w = imageio.get_writer(
            silent,
            fps=fps,
            codec="libx264",
            macro_block_size=16,
            pixelformat="yuv420p",
            ffmpeg_log_level="error",
        )
        try:
            for f in frames:
                w.append_data(f)
        finally:
            w.close()
        with atomic_path(out_path, ".mp4") as tmp:
            if audio is None:
                os.replace(silent, tmp)
            else:
                import soundfile as sf

                wav = Path(d) / "audio.wav"
                sf.write(str(wav), np.asarray(audio, np.float32), sample_rate)
                cmd = [
                    imageio_ffmpeg.get_ffmpeg_exe(),
                    "-y",
                    "-loglevel",
                    "error",
                    "-i",
                    str(silent),
                    "-i",
                    str(wav),
                    "-c:v",
                    "copy",
                    "-c:a",
                    "aac",
                    "-shortest",
                    "-f",
                    "mp4",
                    str(tmp),
                ]
                subprocess.run(cmd, check=True, capture_output=True)
    return out_path


def render_joints_video(
    joints_list: Sequence[np.ndarray],
    out_path: str | Path,
    *,
    fps: float = 20.0,
    titles: Sequence[str] | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    size: tuple[int, int] = (320, 320),
) -> Path:
    """HumanML3D 22-joint motions ``[(T_i, 22, 3), ...]`` drawn side by side (e.g.
    generated | ground truth) as an H.264 mp4 at ``fps`` (HumanML3D's 20 by default), cut
    to the shortest motion; ``audio (N,)`` at ``sample_rate`` is muxed in. Written
    atomically (:func:`gesture_data.video.write_video`). Returns ``out_path``."""
    from .errors import DataError
    from .video import write_video

    if isinstance(joints_list, np.ndarray) and joints_list.ndim == 3:
        joints_list = [joints_list]
    motions = []
    for i, j in enumerate(joints_list):
        j = np.asarray(j, np.float32)
        if j.ndim != 3 or j.shape[1:] != (22, 3) or j.shape[0] < 1:
            raise DataError(
                out_path,
                f"motion {i}: wrong shape",
                key="joints",
                expected="(T, 22, 3)",
                found=j.shape,
            )
        if not np.isfinite(j).all():
            raise DataError(out_path, f"motion {i}: non-finite joint positions", key="joints")
        motions.append(j)
    if not motions:
        raise DataError(out_path, "no motion to render", key="joints")
    if titles is not None and len(titles) != len(motions):
        raise DataError(
            out_path, "one title per motion", key="titles", expected=len(motions), found=len(titles)
        )
    frames = np.stack(list(_frames(motions, parents_for("humanml3d"), size, titles)))
    return write_video(
        out_path, frames, fps, audio=audio, sample_rate=None if audio is None else sample_rate
    )
