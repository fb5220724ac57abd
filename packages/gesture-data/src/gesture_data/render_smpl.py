"""SMPL-X mesh video (SMPL-X: Pavlakos et al., "Expressive Body Capture: 3D Hands, Face, and
Body from a Single Image", CVPR 2019) when the user has a body-model file.

The model gives the vertices (``smplx``, the user's licensed ``SMPLX_NEUTRAL.npz``); a small
numpy z-buffer rasteriser draws them: orthographic front view (camera on +Z looking down
-Z, so the speaker's left hand is on the viewer's right), flat Lambert shading, one fixed
framing per motion. No OpenGL, so it runs headless on any CPU.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .fit_smpl import FitResult, fit_smplx_to_joints

__all__ = [
    "FitResult",
    "fit_smplx_to_joints",
    "rasterize",
    "render_joints_mesh_video",
    "render_smpl_video",
    "smplx_vertices",
]

_LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
_COLOR = np.array([140.0, 170.0, 215.0])  # light steel blue, scaled by the shading


def smplx_vertices(
    poses: np.ndarray, model_path: str | Path, *, betas=None, trans=None, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """``poses (T, 165)`` axis-angle (BEAT2 layout) -> ``(vertices (T, V, 3) float32, faces
    (F, 3) int64)`` with the SMPL-X model at ``model_path`` (the npz or its folder)."""
    import smplx

    from .datasets.smplx_model import _model_root

    poses = np.ascontiguousarray(poses, np.float32)  # torch refuses reversed views
    if poses.ndim != 2 or poses.shape[1] != 165:
        raise DataError(
            None, "wrong pose shape", key="poses", expected="(T, 165)", found=poses.shape
        )
    if not np.isfinite(poses).all():
        raise DataError(None, "non-finite values", key="poses")
    root = _model_root(model_path)
    try:
        model = smplx.create(
            str(root), model_type="smplx", gender="neutral", use_pca=False, num_betas=10,
            flat_hand_mean=True, use_face_contour=False, ext="npz", batch_size=1,
        )  # fmt: skip
    except (OSError, AssertionError, KeyError, ValueError, TypeError, EOFError,
            zipfile.BadZipFile) as e:  # fmt: skip
        raise DataError(root, f"cannot load SMPL-X model: {type(e).__name__}: {e}") from None
    b = torch.zeros(1, 10)
    if betas is not None:
        b[0, : min(10, len(betas))] = torch.as_tensor(np.asarray(betas, np.float32)[:10])
    out = []
    with torch.no_grad():
        for s in range(0, len(poses), batch_size):
            p = torch.from_numpy(poses[s : s + batch_size])
            n = p.shape[0]
            kw = {}
            if trans is not None:
                kw["transl"] = torch.as_tensor(np.asarray(trans[s : s + n], np.float32))
            res = model(
                global_orient=p[:, 0:3], body_pose=p[:, 3:66], jaw_pose=p[:, 66:69],
                leye_pose=p[:, 69:72], reye_pose=p[:, 72:75], left_hand_pose=p[:, 75:120],
                right_hand_pose=p[:, 120:165], betas=b.expand(n, -1),
                expression=torch.zeros(n, model.num_expression_coeffs), **kw,
            )  # fmt: skip
            out.append(res.vertices.numpy())
    return np.concatenate(out).astype(np.float32), np.asarray(model.faces, np.int64)


def rasterize(
    vertices: np.ndarray,
    faces: np.ndarray,
    size: tuple[int, int],
    *,
    center: np.ndarray,
    radius: float,
) -> np.ndarray:
    """One frame ``(H, W, 3)`` uint8 of the mesh ``vertices (V, 3)``, ``faces (F, 3)``: the
    square ``center (2,) +- radius`` of the x/y plane fills the image; nearer (larger z)
    surfaces hide farther ones; white background."""
    W, H = size
    v = np.asarray(vertices, np.float64)
    px = np.stack(
        [(v[:, 0] - center[0] + radius) / (2 * radius) * W,
         (center[1] + radius - v[:, 1]) / (2 * radius) * H],
        1,
    )  # fmt: skip
    tri, tz = px[faces], v[faces][..., 2]  # (F, 3, 2), (F, 3)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    # two-sided: a mesh seen from behind (or a model with flipped winding) still shades
    shade = 0.3 + 0.7 * np.abs(n @ _LIGHT)
    # bounding boxes clipped to the image: off-screen parts cost nothing
    lo = np.clip(np.floor(tri.min(1)).astype(int), 0, [W, H])
    hi = np.clip(np.ceil(tri.max(1)).astype(int), 0, [W, H])
    big = (hi - lo).max(1)
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (
        tri[:, 2, 0] - tri[:, 0, 0]
    ) * (tri[:, 1, 1] - tri[:, 0, 1])
    keep = (np.abs(area) > 1e-12) & (big > 0)
    hits = []
    # faces grouped by bounding-box size, each group tested against a k x k pixel block in
    # one vectorised step (at video sizes almost every SMPL-X face spans a few pixels);
    # the rare large face gets its own loop over its exact box
    k = 1
    while k <= 16:
        sel = np.flatnonzero(keep & (big <= k) & (big > k // 2))
        if sel.size:
            hits.append(_cover(tri[sel], tz[sel], area[sel], lo[sel], sel, k, k, W, H))
        k *= 2
    for i in np.flatnonzero(keep & (big > 16)):
        kx, ky = hi[i] - lo[i]
        hits.append(_cover(tri[i : i + 1], tz[i : i + 1], area[i : i + 1], lo[i : i + 1],
                           np.array([i]), kx, ky, W, H))  # fmt: skip
    img = np.full((H * W, 3), 255, np.uint8)
    if hits:
        idx, z, f = (np.concatenate(h) for h in zip(*hits, strict=True))
        zbuf = np.full(H * W, -np.inf)
        np.maximum.at(zbuf, idx, z)
        win = z >= zbuf[idx]
        img[idx[win]] = np.clip(_COLOR * shade[f[win], None], 0, 255).astype(np.uint8)
    return img.reshape(H, W, 3)


def _cover(tri, tz, area, lo, face_ids, kx, ky, W, H):
    """Pixels inside triangles ``tri (N, 3, 2)`` among each one's ``ky x kx`` block from
    ``lo (N, 2)``: ``(flat pixel index, depth, face id)`` per covered pixel centre."""
    gy, gx = np.mgrid[0:ky, 0:kx]
    x = lo[:, 0, None, None] + gx + 0.5  # pixel centres (N, ky, kx)
    y = lo[:, 1, None, None] + gy + 0.5
    P = lambda i, c: tri[:, i, c, None, None]  # noqa: E731

    def edge(i, j):  # twice the signed area of (v_i, v_j, pixel)
        return (P(j, 0) - P(i, 0)) * (y - P(i, 1)) - (P(j, 1) - P(i, 1)) * (x - P(i, 0))

    a = area[:, None, None]
    w0, w1, w2 = edge(1, 2) / a, edge(2, 0) / a, edge(0, 1) / a  # barycentric, either winding
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (x < W) & (y < H)
    z = w0 * tz[:, 0, None, None] + w1 * tz[:, 1, None, None] + w2 * tz[:, 2, None, None]
    f = np.broadcast_to(face_ids[:, None, None], x.shape)
    return y[inside].astype(int) * W + x[inside].astype(int), z[inside], f[inside]


def render_smpl_video(
    poses_list: Sequence[np.ndarray],
    model_path: str | Path,
    out_path: str | Path,
    *,
    fps: float = 30.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    size: tuple[int, int] = (320, 320),
    betas: Sequence[np.ndarray | None] | None = None,
    trans: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    follow: bool = False,
) -> Path:
    """SMPL-X meshes of motions ``[(T_i, 165), ...]`` (axis-angle; root fixed as in KTubeUM's
    npz, or moved by ``trans[i] (T_i, 3)``) with shapes ``betas[i] (10,)`` side by side (in
    list order) as an H.264 mp4, cut to the shortest; ``audio (N,)`` at ``sample_rate`` is
    muxed in. Each panel keeps one framing, the box of its whole motion, or with ``follow``
    a box that moves sideways with the body (the body stays as large as its own extent
    allows, at the cost of not seeing it travel); ``titles`` puts a caption above each.
    Atomic (:func:`gesture_data.video.write_video`). Returns ``out_path``."""
    from .video import write_video

    if isinstance(poses_list, np.ndarray) and poses_list.ndim == 2:
        poses_list = [poses_list]
    if not len(poses_list):
        raise DataError(out_path, "no motion to render", key="poses")
    if titles is not None and len(titles) != len(poses_list):
        raise DataError(out_path, "one title per motion", key="titles",
                        expected=len(poses_list), found=len(titles))  # fmt: skip
    panels = []
    for i, p in enumerate(poses_list):
        verts, faces = smplx_vertices(
            p,
            model_path,
            betas=None if betas is None else betas[i],
            trans=None if trans is None else trans[i],
        )
        xy = verts[..., :2]  # (T, V, 2)
        lo, hi = xy.min((0, 1)), xy.max((0, 1))
        c = np.broadcast_to((lo + hi) / 2, (len(xy), 2)).copy()  # (T, 2) centre per frame
        if follow:  # centre each frame on the body's horizontal middle; keep the height
            c[:, 0] = (xy[..., 0].min(1) + xy[..., 0].max(1)) / 2
        r = float(np.abs(xy - c[:, None]).max()) * 1.1 + 1e-6
        panels.append((verts, faces, c, r))
    T = min(len(v) for v, *_ in panels)
    frames = np.stack(
        [
            np.concatenate(
                [rasterize(v[t], f, size, center=c[t], radius=r) for v, f, c, r in panels],
                axis=1,
            )
            for t in range(T)
        ]
    )
    if titles is not None:
        strip = np.concatenate([_caption(t, size[0]) for t in titles], axis=1)
        frames = np.concatenate([np.broadcast_to(strip, (T, *strip.shape)), frames], axis=1)
    return write_video(
        out_path, frames, fps, audio=audio, sample_rate=None if audio is None else sample_rate
    )


def _caption(text: str, width: int, height: int = 28) -> np.ndarray:
    """``(height, width, 3)`` uint8: ``text`` centred in black on white (drawn once per video
    by matplotlib, which the skeleton renderer already uses for its titles)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    try:
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def render_joints_mesh_video(
    joints_list: Sequence[np.ndarray],
    model_path: str | Path,
    out_path: str | Path,
    *,
    fps: float = 20.0,
    size: tuple[int, int] = (320, 320),
    iters: int = 150,
    titles: Sequence[str] | None = None,
    follow: bool = True,
) -> list[FitResult]:
    """Meshes of joint-only motions ``[(T_i, 22, 3), ...]`` (e.g. generated HumanML3D motion
    and its ground truth): each is fitted with :func:`fit_smplx_to_joints` and drawn by
    :func:`render_smpl_video` with its fitted shape and translation, side by side. All fits
    run before anything is written. ``follow`` (default on: generated motion often walks
    metres, which would shrink a fixed framing's body) is :func:`render_smpl_video`'s.
    Returns the fits, in list order."""
    if not len(joints_list):
        raise DataError(out_path, "no motion to render", key="joints")
    fits = [fit_smplx_to_joints(j, model_path, iters=iters) for j in joints_list]
    render_smpl_video(
        [f.poses for f in fits],
        model_path,
        out_path,
        fps=fps,
        size=size,
        betas=[f.betas for f in fits],
        trans=[f.trans for f in fits],
        titles=titles,
        follow=follow,
    )
    return fits
