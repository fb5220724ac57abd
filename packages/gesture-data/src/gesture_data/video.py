"""Rendered talking-figure video for OmniHuman-style training (issue 14, "Data").

OmniHuman (Lin et al., 2025, "OmniHuman-1: Rethinking the Scaling-Up of One-Stage
Conditioned Human Animation Models", arXiv:2502.01061) trains a video DiT on clips that carry
audio, 2D pose, a caption and a reference image. We make such clips from our motion data: a
SMPL-X take (synthetic or BEAT2) is drawn as a cartoon figure by a small vectorised
rasteriser, and the speech, transcript and projected joints come along.

The figure (front view, orthographic, x right / y down in the image):

- limbs are anti-aliased capsules, the head a disc with a hair cap, eyes and a mouth whose
  height follows the jaw joint's opening angle (so speech is visible in the frames);
- fingers are thinner capsules out to virtual fingertips, so hand shapes show;
- colours are per body part (legs, torso, left arm lighter, right arm darker, skin for
  head and hands) from a per-speaker palette (shirt, trousers, skin, hair, background), so
  the reference image carries appearance a video model must copy;
- the framing is fixed per clip: a square window of ``extent`` metres (default 1.1 m: hips
  to above the head) around the rest pose placed at the clip's mean root position, so the
  figure stays put and has the same scale in every clip (a fixed camera: a speaker who
  walks, as in some BEAT2 takes, moves in the frame). The clip's mean heading is turned to
  face the camera.

Keypoints (:data:`KEYPOINT_NAMES`, 29 points) are the projected joints in ``[0, 1]`` of
width / height (x right, y down; pixel ``i`` covers ``[i, i+1) / size``), confidence 1 when
inside the frame and 0 outside (occlusion is not modelled; with the default framing the
knees are below the frame, confidence 0). :data:`HAND_KEYPOINTS` indexes
the wrists, middle knuckles and fingertips (for hand metrics such as HKC / HKV).

The reference image is the same figure in a neutral rest pose (arms down, mouth closed), not
the first frame: it carries the appearance but none of the clip's motion.

mp4 I/O uses the ``ffmpeg`` binary that ``imageio-ffmpeg`` ships (H.264 yuv420p video, AAC
audio), so no system ffmpeg is needed.
"""

from __future__ import annotations

import colorsys
import itertools
import json
import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._io import atomic_path
from .datasets.beat2 import Beat2Clip
from .errors import DataError
from .rotations import axis_angle_to_matrix
from .skeleton import (
    SMPLX_NAMES,
    SMPLX_PARENTS,
    SMPLX_REST,
    forward_kinematics,
    offsets_from_rest,
)

log = logging.getLogger(__name__)

__all__ = [
    "HAND_KEYPOINTS",
    "KEYPOINT_NAMES",
    "VideoClip",
    "keypoint_heatmaps",
    "load_video_folder",
    "read_video",
    "render_video_clip",
    "speaker_palette",
    "synthetic_video_corpus",
    "write_video",
]


@dataclass
class VideoClip:
    """One video clip with its conditions. ``T`` frames of ``H x W``, ``K`` keypoints.

    - ``frames (T, H, W, 3)`` uint8 RGB at ``fps``
    - ``audio (S,)`` float32 mono at ``sample_rate`` (the whole clip's speech)
    - ``keypoints (T, K, 2)`` float32, x right / y down in ``[0, 1]`` of width / height
    - ``confidence (T, K)`` float32 in ``[0, 1]``
    - ``caption``: text (the transcript for rendered clips)
    - ``reference (H, W, 3)`` uint8: the appearance image of this clip
    """

    clip_id: str
    frames: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    keypoints: np.ndarray
    confidence: np.ndarray
    caption: str
    reference: np.ndarray
    speaker: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.meta.get("source", self.clip_id)
        f = self.frames
        if not (isinstance(f, np.ndarray) and f.ndim == 4 and f.shape[-1] == 3):
            raise DataError(
                src,
                "bad frames",
                key="frames",
                expected="(T, H, W, 3)",
                found=getattr(f, "shape", type(f).__name__),
            )
        if f.dtype != np.uint8:
            raise DataError(src, "bad dtype", key="frames", expected="uint8", found=f.dtype)
        T, H, W, _ = f.shape
        if self.reference.shape != (H, W, 3) or self.reference.dtype != np.uint8:
            raise DataError(
                src,
                "bad reference image",
                key="reference",
                expected=f"uint8 {(H, W, 3)}",
                found=f"{self.reference.dtype} {self.reference.shape}",
            )
        kp, conf = self.keypoints, self.confidence
        if kp.ndim != 3 or kp.shape[0] != T or kp.shape[2] != 2:
            raise DataError(
                src, "bad keypoints", key="keypoints", expected=f"({T}, K, 2)", found=kp.shape
            )
        if conf.shape != kp.shape[:2]:
            raise DataError(
                src, "bad confidence", key="confidence", expected=kp.shape[:2], found=conf.shape
            )
        if not (np.isfinite(kp).all() and np.isfinite(conf).all()):
            raise DataError(src, "keypoints or confidence hold NaN/inf", key="keypoints")
        a = self.audio
        if a.ndim != 1 or not np.isfinite(a).all():
            raise DataError(
                src, "audio must be finite mono", key="audio", expected="(S,)", found=a.shape
            )
        if not self.fps > 0 or not self.sample_rate > 0:
            raise DataError(
                src,
                "fps and sample_rate must be positive",
                key="fps",
                found=(self.fps, self.sample_rate),
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


# ---------------------------------------------------------------------------------------
# skeleton: SMPL-X joints plus virtual points for drawing (fingertips, face)

_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X order, 3 joints each
_HAND_BASE = {"left": 25, "right": 40}
_WRIST = {"left": 20, "right": 21}


def _extended_skeleton() -> tuple[list[int], np.ndarray, dict[str, int]]:
    """Parents and parent-relative offsets (metres) of the 55 SMPL-X joints plus virtual
    children: fingertips (one more phalanx along the last), head centre, hair centre,
    eyes and mouth. Virtual points have identity local rotation, so they ride on their
    parent's global rotation (a head shake moves the face)."""
    parents = list(SMPLX_PARENTS)
    offsets = list(offsets_from_rest(SMPLX_REST, SMPLX_PARENTS))
    names: dict[str, int] = {}

    def add(name: str, parent: int, off) -> None:
        names[name] = len(parents)
        parents.append(parent)
        offsets.append(np.asarray(off, np.float64))

    for side, base in _HAND_BASE.items():
        for i, f in enumerate(_FINGERS):
            j3 = base + 3 * i + 2
            add(f"{side}_{f}_tip", j3, SMPLX_REST[j3] - SMPLX_REST[j3 - 1])
    # face points sit on the front of the head (z forward), placed for legibility at 64 px
    add("head_center", 15, (0.0, 0.055, 0.0))
    add("hair_center", 15, (0.0, 0.085, -0.02))
    add("left_eye", 15, (0.035, 0.075, 0.09))
    add("right_eye", 15, (-0.035, 0.075, 0.09))
    add("mouth", 15, (0.0, 0.005, 0.10))
    return parents, np.stack(offsets), names


_PARENTS, _OFFSETS, _VIRTUAL = _extended_skeleton()
# body joints by SMPL-X name (the first 23 of the skeleton's joints)
_SMPLX_INDEX = {n: i for i, n in enumerate(SMPLX_NAMES[:23])}
_JOINT = {**_SMPLX_INDEX, **_VIRTUAL}

KEYPOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "spine3",
    "neck",
    "head",
    "left_eye",
    "right_eye",
    "mouth",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_middle1",
    "left_thumb_tip",
    "left_index_tip",
    "left_middle_tip",
    "left_ring_tip",
    "left_pinky_tip",
    "right_middle1",
    "right_thumb_tip",
    "right_index_tip",
    "right_middle_tip",
    "right_ring_tip",
    "right_pinky_tip",
)
"""The 29 keypoints: 17 body/face points (``head`` is the head centre) and, per hand, the
middle-finger knuckle and the five fingertips. Left/right are the person's."""

HAND_KEYPOINTS: tuple[int, ...] = tuple(
    i for i, n in enumerate(KEYPOINT_NAMES) if n.endswith(("_wrist", "_middle1", "_tip"))
)
"""Indices into :data:`KEYPOINT_NAMES` of the hand points: both wrists, the middle
knuckles and the ten fingertips (14 points)."""


def _joint_index(name: str) -> int:
    if name == "head":
        return _JOINT["head_center"]
    if name.endswith("middle1"):
        side = name.split("_", 1)[0]
        return _HAND_BASE[side] + 3 * _FINGERS.index("middle")
    return _JOINT[name]


_KEYPOINT_JOINTS = np.array([_joint_index(n) for n in KEYPOINT_NAMES])

# SMPL-X axis-angle of a neutral pose for the reference image: arms hang at the sides with
# slightly bent elbows, hands relaxed, mouth closed
_NEUTRAL = np.zeros((55, 3))
_NEUTRAL[16, 2], _NEUTRAL[17, 2] = -1.25, 1.25
_NEUTRAL[18, 1], _NEUTRAL[19, 1] = -0.25, 0.25
_NEUTRAL[25:40, 2], _NEUTRAL[40:55, 2] = -0.2, 0.2


def _joints(poses: np.ndarray, trans: np.ndarray) -> Tensor:
    """``poses (T, 165)``, ``trans (T, 3)`` -> extended joints ``(T, J', 3)`` (float64 so
    frames do not depend on the thread count through float32 rounding)."""
    p = torch.as_tensor(np.asarray(poses, np.float64).reshape(-1, 55, 3))
    rot = axis_angle_to_matrix(p)
    eye = torch.eye(3, dtype=rot.dtype).expand(rot.shape[0], len(_PARENTS) - 55, 3, 3)
    rot = torch.cat([rot, eye], dim=1)
    off = torch.as_tensor(_OFFSETS)
    return forward_kinematics(rot, off, _PARENTS, torch.as_tensor(trans, dtype=torch.float64))


# ---------------------------------------------------------------------------------------
# appearance

_SKIN = (
    (0.96, 0.80, 0.69),
    (0.87, 0.67, 0.53),
    (0.72, 0.52, 0.38),
    (0.55, 0.38, 0.26),
    (0.93, 0.74, 0.60),
)
_HAIR = (
    (0.15, 0.10, 0.07),
    (0.45, 0.30, 0.15),
    (0.80, 0.65, 0.35),
    (0.30, 0.30, 0.32),
    (0.55, 0.20, 0.10),
)


def speaker_palette(speaker: int) -> dict[str, np.ndarray]:
    """Deterministic colours (RGB in [0, 1]) of one speaker: ``background``, ``torso``,
    ``left_arm``, ``right_arm``, ``legs``, ``skin``, ``hair``, ``eyes``, ``mouth``.
    Shirt hues step by the golden ratio so neighbouring speaker ids look different."""
    s = int(speaker)
    hue = (0.13 + 0.618034 * s) % 1.0
    shirt = np.array(colorsys.hsv_to_rgb(hue, 0.65, 0.80))
    legs = np.array(colorsys.hsv_to_rgb((hue + 0.45) % 1.0, 0.35, 0.35))
    # a pale, slightly tinted background whose shade varies by speaker, never close to the
    # shirt (saturation 0.15 vs 0.65)
    bg = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.15, 0.95 - 0.07 * (s % 4)))
    return {
        "background": bg,
        "torso": shirt,
        "left_arm": np.clip(shirt * 1.2 + 0.05, 0, 1),
        "right_arm": shirt * 0.7,
        "legs": legs,
        "skin": np.array(_SKIN[s % len(_SKIN)]),
        "hair": np.array(_HAIR[(s // 2) % len(_HAIR)]),
        "eyes": np.array((0.08, 0.08, 0.10)),
        "mouth": np.array((0.45, 0.05, 0.08)),
    }


# capsule groups: (colour key, [(joint a, joint b, radius m)]), drawn in this order (later on
# top; arms and hands last because gestures happen in front of the body)
def _chain(names, r):
    return [(_JOINT[a], _JOINT[b], r) for a, b in itertools.pairwise(names)]


def _hand(side: str) -> list[tuple[int, int, float]]:
    w, base = _WRIST[side], _HAND_BASE[side]
    caps = [
        (w, base + 3, 0.030),  # palm: wrist to middle knuckle
        (w, base + 0, 0.022),
        (w, base + 6, 0.022),
    ]
    for i, f in enumerate(_FINGERS):
        j = base + 3 * i
        tip = _JOINT[f"{side}_{f}_tip"]
        # the thumb's first joint hangs off the wrist, the others' off the palm capsules
        pts = [w, j, j + 1, j + 2, tip] if f == "thumb" else [j, j + 1, j + 2, tip]
        caps += [(a, b, 0.011) for a, b in itertools.pairwise(pts)]
    return caps


_GROUPS: list[tuple[str, list[tuple[int, int, float]]]] = [
    (
        "legs",
        _chain(
            [
                "left_foot",
                "left_ankle",
                "left_knee",
                "left_hip",
                "pelvis",
                "right_hip",
                "right_knee",
                "right_ankle",
                "right_foot",
            ],
            0.065,
        ),
    ),
    (
        "torso",
        # the trunk stops at spine3 and a thin neck piece follows: a wide capsule up to the
        # neck joint would cover the chin and the mouth
        _chain(["pelvis", "spine1", "spine2", "spine3"], 0.11)
        + _chain(
            ["left_shoulder", "left_collar", "spine3", "right_collar", "right_shoulder"], 0.065
        )
        + _chain(["spine3", "neck"], 0.05)
        + _chain(["left_hip", "right_hip"], 0.08),
    ),
    ("skin", _chain(["neck", "head"], 0.04)),
    ("hair", [(_JOINT["hair_center"], _JOINT["hair_center"], 0.09)]),
    ("skin", [(_JOINT["head_center"], _JOINT["head_center"], 0.085)]),
    (
        "eyes",
        [
            (_JOINT["left_eye"], _JOINT["left_eye"], 0.015),
            (_JOINT["right_eye"], _JOINT["right_eye"], 0.015),
        ],
    ),
    ("mouth", []),  # an ellipse, see _render
    (
        "left_arm",
        _chain(["left_shoulder", "left_elbow"], 0.045)
        + _chain(["left_elbow", "left_wrist"], 0.038),
    ),
    (
        "right_arm",
        _chain(["right_shoulder", "right_elbow"], 0.045)
        + _chain(["right_elbow", "right_wrist"], 0.038),
    ),
    ("skin", _hand("left")),
    ("skin", _hand("right")),
]


# ---------------------------------------------------------------------------------------
# rasteriser


def _capsule_sdf(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, r: float):
    """Signed distance (pixels) from pixel centres ``x (T, 1, S)``, ``y (T, S, 1)`` to
    capsules from ``a (T, 2)`` to ``b (T, 2)`` of radius ``r`` pixels -> ``(T, S, S)``.
    x and y stay separate arrays so every op is a plain broadcast, no size-2 axis."""
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    abx, aby = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay  # (T, 1, 1)
    apx, apy = x - ax, y - ay  # (T, 1, S), (T, S, 1)
    h = (apx * abx + apy * aby) / np.maximum(abx * abx + aby * aby, 1e-12)
    np.clip(h, 0.0, 1.0, out=h)
    dx, dy = apx - h * abx, apy - h * aby  # (T, S, S)
    d = np.hypot(dx, dy, out=dx)
    d -= r
    return d


def _window(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The square pixel window that holds per-frame boxes ``lo, hi (T, 2)``: its origin
    ``(T, 2)`` (int) and side ``S`` (shared by all frames so the work stays one batched
    array op). Drawing in a window instead of the whole frame is what makes fingers cheap;
    the window is clipped to the frame, and whatever of the box lies inside is covered."""
    side = int(np.ceil((hi - lo).max())) + 2
    side = max(1, min(side, size))
    origin = np.clip(np.floor(lo).astype(np.int64), 0, size - side)
    return origin, side


def _render(
    uv: np.ndarray, jaw_open: np.ndarray, palette: dict[str, np.ndarray], size: int, px_per_m: float
) -> np.ndarray:
    """Draw frames from projected joints ``uv (T, J', 2)`` float32 (pixels) and the jaw
    opening ``(T,)`` (radians, >= 0) -> ``(T, size, size, 3)`` uint8.

    Each group is one signed distance field (the min over its capsules), so joints inside a
    limb have no seams; coverage ``clip(0.5 - sdf, 0, 1)`` is a one-pixel anti-aliasing
    ramp; each group is evaluated only in a window around it. numpy, not torch: its
    elementwise ops are single-threaded, and torch's thread pool on these small arrays is
    several times slower on a shared CPU."""
    T = uv.shape[0]
    img = np.empty((T, size, size, 3), np.float32)
    img[:] = palette["background"].astype(np.float32)
    steps = np.arange(size)
    frame = np.arange(T)[:, None, None]
    for key, caps in _GROUPS:
        if key == "mouth":
            # half-width fixed, half-height grows with the jaw angle (cartoon gain so that a
            # 0.3 rad opening is about 3 px tall at 64 px)
            centre = uv[:, _JOINT["mouth"]]
            rx = np.float32(0.035 * px_per_m)
            ry = ((0.005 + 0.09 * np.clip(jaw_open, 0.0, 0.4)) * px_per_m).astype(np.float32)
            half = np.stack([np.full_like(ry, rx), ry], -1) + 1.0
            origin, side = _window(centre - half, centre + half, size)
        else:
            ends = np.array([[a, b] for a, b, _ in caps]).reshape(-1)
            rad = np.repeat([r for *_, r in caps], 2) * px_per_m + 1.0
            pts = uv[:, ends]  # (T, 2n, 2)
            lo = (pts - rad[None, :, None]).min(1)
            hi = (pts + rad[None, :, None]).max(1)
            origin, side = _window(lo, hi, size)
        rows = origin[:, 1, None] + steps[:side]  # (T, S)
        cols = origin[:, 0, None] + steps[:side]
        x = (cols.astype(np.float32) + 0.5)[:, None, :]  # (T, 1, S) pixel centres
        y = (rows.astype(np.float32) + 0.5)[:, :, None]  # (T, S, 1)
        if key == "mouth":
            nx = (x - centre[:, 0, None, None]) / rx
            ny = (y - centre[:, 1, None, None]) / ry[:, None, None]
            sdf = (np.hypot(nx, ny) - 1.0) * np.minimum(ry, rx)[:, None, None]
        else:
            sdf = None
            for a, b, r in caps:
                d = _capsule_sdf(x, y, uv[:, a], uv[:, b], np.float32(r * px_per_m))
                sdf = d if sdf is None else np.minimum(sdf, d, out=sdf)
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]  # (T, S, S, 1)
        colour = palette[key].astype(np.float32)
        idx = (frame, rows[:, :, None], cols[:, None, :])
        img[idx] = img[idx] * (1.0 - alpha) + colour * alpha
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _face_camera(joints: np.ndarray) -> tuple[np.ndarray, float]:
    """Turn ``joints (T, J, 3)`` about the vertical axis through the mean pelvis so the mean
    hip direction (right hip -> left hip) lies along +x, i.e. the figure faces +z, the
    camera. One angle for the whole take (a per-frame turn would hide real turns); returns
    the turned joints and the take's heading (radians)."""
    hip = (joints[:, 1] - joints[:, 2]).mean(0)
    ang = float(np.arctan2(hip[2], hip[0]))  # rotating by +ang about y brings hip onto +x
    c, s = np.cos(ang), np.sin(ang)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    centre = joints[:, 0].mean(0) * np.array([1.0, 0.0, 1.0])
    return (joints - centre) @ rot.T + centre, ang


def _resample(x: np.ndarray, src_fps: float, fps: float) -> np.ndarray:
    """Linear interpolation along axis 0 from ``src_fps`` to ``fps`` over the same
    duration: ``floor(T * fps / src_fps)`` frames at times ``k / fps``."""
    T = x.shape[0]
    n = max(1, int(np.floor(T * fps / src_fps + 1e-9)))
    pos = np.minimum(np.arange(n) * (src_fps / fps), T - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, T - 1)
    w = (pos - i0).reshape(-1, *([1] * (x.ndim - 1)))
    return x[i0] * (1 - w) + x[i1] * w


def render_video_clip(
    clip: Beat2Clip,
    *,
    size: int = 64,
    fps: float = 12.5,
    extent: float = 1.1,
    reference: str = "rest",
) -> VideoClip:
    """Render a SMPL-X take (synthetic or BEAT2) to a :class:`VideoClip`.

    Joints come from :func:`gesture_data.skeleton.smplx_joints_approx`'s rest skeleton
    (betas are ignored) and are linearly interpolated from ``clip.fps`` to ``fps``:
    ``T = floor(clip.num_frames * fps / clip.fps)`` frames of ``size x size``. The view is a
    square window ``extent`` metres wide centred 0.3 m above the clip's mean pelvis. Audio is
    kept whole; the caption is the transcript. ``reference="rest"`` (default) draws the
    neutral pose, ``"first"`` the first frame.
    """
    if reference not in ("rest", "first"):
        raise ValueError(f"reference must be 'rest' or 'first', got {reference!r}")
    poses = np.asarray(clip.poses, np.float64)
    if poses.ndim != 2 or poses.shape[1] != 165 or poses.shape[0] < 1:
        raise DataError(
            clip.clip_id, "bad poses", key="poses", expected="(T, 165)", found=poses.shape
        )
    trans = np.asarray(clip.trans, np.float64)
    if trans.shape != (poses.shape[0], 3):
        raise DataError(
            clip.clip_id, "bad trans", key="trans", expected=(poses.shape[0], 3), found=trans.shape
        )
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise DataError(clip.clip_id, "poses or trans hold NaN/inf", key="poses")
    joints, heading = _face_camera(_joints(poses, trans).numpy())
    jaw = poses[:, 22 * 3]  # x rotation of the jaw: positive opens the mouth in SMPL-X
    joints = _resample(joints, clip.fps, fps)
    jaw = _resample(jaw, clip.fps, fps)

    centre = joints[:, 0].reshape(-1, 3).mean(0) + np.array([0.0, 0.3, 0.0])
    px_per_m = size / extent

    def project(j: np.ndarray) -> np.ndarray:
        u = (j[..., 0] - centre[0]) * px_per_m + size / 2
        v = (centre[1] - j[..., 1]) * px_per_m + size / 2
        return np.stack([u, v], -1).astype(np.float32)

    palette = speaker_palette(clip.speaker)
    frames = []
    uv_all = project(joints)
    jaw_t = np.maximum(jaw, 0.0).astype(np.float32)
    # chunks bound the (T, H, W) temporaries for long takes at large sizes
    chunk = max(1, (1 << 22) // (size * size))
    for s in range(0, uv_all.shape[0], chunk):
        frames.append(_render(uv_all[s : s + chunk], jaw_t[s : s + chunk], palette, size, px_per_m))
    frames = np.concatenate(frames)

    if reference == "rest":
        rest = _joints(_NEUTRAL.reshape(1, 165), np.zeros((1, 3))).numpy()
        # stand the rest figure where the take's pelvis is on average, facing the camera
        rest = rest + joints[:, 0].mean(0)
        ref = _render(project(rest), np.zeros(1, np.float32), palette, size, px_per_m)[0]
    else:
        ref = frames[0].copy()

    uv = uv_all / size
    kp = uv[:, _KEYPOINT_JOINTS].astype(np.float32)
    conf = ((kp >= 0) & (kp < 1)).all(-1).astype(np.float32)
    return VideoClip(
        clip_id=clip.clip_id,
        frames=frames,
        fps=float(fps),
        audio=np.asarray(clip.audio, np.float32),
        sample_rate=int(clip.sample_rate),
        keypoints=kp,
        confidence=conf,
        caption=" ".join(w for _, _, w in clip.words),
        reference=ref,
        speaker=int(clip.speaker),
        meta={
            "source_fps": float(clip.fps),
            "extent_m": float(extent),
            "heading_rad": heading,
            "words": list(clip.words),
            "language": getattr(clip, "language", "en"),
            "reference": reference,
        },
    )


def synthetic_video_corpus(
    num_clips: int = 8,
    seconds: float = 4.0,
    *,
    size: int = 64,
    fps: float = 12.5,
    seed: int = 0,
) -> list[VideoClip]:
    """:func:`render_video_clip` over ``synthetic.make_corpus(num_clips, seconds, seed)``:
    ``num_clips`` clips of ``floor(seconds * fps)`` frames, 16 kHz audio. Deterministic (the
    same arguments give the same bytes)."""
    from .datasets.synthetic import make_corpus

    return [render_video_clip(c, size=size, fps=fps) for c in make_corpus(num_clips, seconds, seed)]


# ---------------------------------------------------------------------------------------
# heatmaps


def keypoint_heatmaps(
    keypoints: np.ndarray | Tensor,
    size: int | tuple[int, int],
    *,
    sigma: float = 1.5,
    confidence: np.ndarray | Tensor | None = None,
) -> np.ndarray | Tensor:
    """Gaussian heatmaps of ``keypoints (..., K, 2)`` in ``[0, 1]`` (x right, y down) ->
    ``(..., K, h, w)`` float32 in ``[0, 1]`` (``size`` is ``s`` or ``(h, w)``), value 1 at the
    keypoint, ``sigma`` in heatmap pixels. Each map is multiplied by ``confidence (..., K)``
    (so it is zero where the confidence is 0). numpy in, numpy out; torch in, torch out (on
    the keypoints' device)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1 or not sigma > 0:
        raise ValueError(f"size must be positive and sigma > 0, got size={size}, sigma={sigma}")
    is_np = not isinstance(keypoints, Tensor)
    kp = torch.as_tensor(np.asarray(keypoints) if is_np else keypoints)
    if kp.ndim < 2 or kp.shape[-1] != 2:
        raise DataError(
            None, "bad keypoints", key="keypoints", expected="(..., K, 2)", found=tuple(kp.shape)
        )
    kp = kp.to(torch.float32)
    if not torch.isfinite(kp).all():
        raise DataError(None, "keypoints hold NaN/inf", key="keypoints")
    # pixel i's centre is at (i + 0.5) / w, so the blob centre in index units is x*w - 0.5
    cx = kp[..., 0] * w - 0.5
    cy = kp[..., 1] * h - 0.5
    xs = torch.arange(w, dtype=torch.float32, device=kp.device)
    ys = torch.arange(h, dtype=torch.float32, device=kp.device)
    gx = torch.exp(-((xs - cx[..., None]) ** 2) / (2 * sigma**2))  # (..., K, w)
    gy = torch.exp(-((ys - cy[..., None]) ** 2) / (2 * sigma**2))  # (..., K, h)
    maps = gy[..., :, None] * gx[..., None, :]  # separable: (..., K, h, w)
    if confidence is not None:
        conf = torch.as_tensor(
            np.asarray(confidence) if not isinstance(confidence, Tensor) else confidence
        ).to(device=kp.device, dtype=torch.float32)
        if conf.shape != kp.shape[:-1]:
            raise DataError(
                None,
                "bad confidence",
                key="confidence",
                expected=tuple(kp.shape[:-1]),
                found=tuple(conf.shape),
            )
        maps = maps * conf.clamp(0.0, 1.0)[..., None, None]
    return maps.numpy() if is_np else maps


# ---------------------------------------------------------------------------------------
# mp4 I/O


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
) -> Path:
    """Write ``frames (T, H, W, 3)`` uint8 RGB as an H.264 (yuv420p) mp4, with ``audio (S,)``
    float32 mono at ``sample_rate`` as an AAC track when given. yuv420p needs even sizes: an
    odd height or width is padded by repeating the last row / column (read back, the video
    is one pixel larger). Atomic: written to a hidden temporary file in the same folder, then
    renamed; the file gets the usual ``0o666 & ~umask`` mode. Returns ``path``."""
    import imageio_ffmpeg

    path = Path(path)
    if path.suffix.lower() != ".mp4":  # an mp4 under a .gif/.avi name would fool its reader
        raise DataError(path, "not an mp4 file name", expected=".mp4", found=path.suffix or None)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise DataError(
            path, "bad frames", key="frames", expected="(T, H, W, 3), T >= 1", found=frames.shape
        )
    if frames.dtype != np.uint8:
        raise DataError(
            path, "bad frames dtype", key="frames", expected="uint8", found=frames.dtype
        )
    if not fps > 0:
        raise DataError(path, "fps must be positive", key="fps", found=fps)
    _, H, W, _ = frames.shape
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        log.info(
            "%s: padded %dx%d frames to even %dx%d for yuv420p", path, H, W, *frames.shape[1:3]
        )
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1 or not np.isfinite(audio).all():
            raise DataError(
                path, "audio must be finite mono", key="audio", expected="(S,)", found=audio.shape
            )
        if sample_rate is None or sample_rate <= 0:
            raise DataError(
                path, "audio needs a positive sample_rate", key="sample_rate", found=sample_rate
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    # the wav the muxer reads lives beside the output, not in $TMPDIR (which may be full or
    # another mount); it is removed with the folder
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as d:
        wav = None
        if audio is not None:
            import soundfile as sf

            wav = str(Path(d) / "audio.wav")
            sf.write(wav, audio, int(sample_rate), subtype="FLOAT", format="WAV")
        with atomic_path(path, ".mp4") as tmp:
            gen = imageio_ffmpeg.write_frames(
                str(tmp),
                (frames.shape[2], frames.shape[1]),
                fps=fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                macro_block_size=1,  # sizes are even already; never rescale
                ffmpeg_log_level="error",
                quality=None,
                output_params=["-crf", str(crf), "-f", "mp4"],
                audio_path=wav,
                audio_codec=None if wav is None else "aac",
            )
            gen.send(None)
            for f in frames:
                gen.send(np.ascontiguousarray(f))
            gen.close()
    return path


_AUDIO_RE = re.compile(r"Stream #\S+.*?: Audio: [^\n]*?\b(\d+) Hz")


def read_video(path: str | Path) -> tuple[np.ndarray, float, np.ndarray | None, int | None]:
    """Read an mp4 (or anything ffmpeg reads) -> ``(frames (T, H, W, 3) uint8, fps, audio
    (S,) float32 mono or None, sample_rate or None)``. The first audio stream is decoded at
    its stored sample rate and mixed down to mono. A missing or undecodable file raises
    :class:`~gesture_data.DataError`."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such video file", key="video")
    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = gen.__next__()
        w, h = meta["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise DataError(path, f"cannot decode video: {e}", key="video") from e
    fps = float(meta.get("fps") or 0.0)
    if not frames or not fps > 0:
        raise DataError(path, "no video frames", key="video", found=f"{len(frames)} frames")
    video = np.stack(frames)
    probe = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    m = _AUDIO_RE.search(probe.stderr)
    if m is None:
        return video, fps, None, None
    sr = int(m.group(1))
    out = subprocess.run(
        [
            _ffmpeg(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-vn",
            "-ac",
            "1",
            "-ar",
            str(sr),
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
    )
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip()
        raise DataError(path, f"cannot decode audio: {msg}", key="audio")
    audio = np.frombuffer(out.stdout, np.float32).copy()
    return video, fps, audio, sr


# ---------------------------------------------------------------------------------------
# a user's folder


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        a, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError (a RuntimeError)
        raise DataError(path, f"cannot read wav: {e}", key="audio") from e
    return a.mean(1), int(sr)


def _read_keypoints(path: Path, T: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read keypoint json: {e}") from e
    if not isinstance(data, dict) or "keypoints" not in data:
        raise DataError(
            path,
            "missing field",
            key="keypoints",
            expected='{"keypoints": [[[x, y, conf], ...K], ...T]}',
            found=sorted(data) if isinstance(data, dict) else type(data).__name__,
        )
    try:
        arr = np.asarray(data["keypoints"], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(
            path, "keypoints are not a numeric (T, K, 2|3) array", key="keypoints", found=str(e)
        ) from e
    if arr.ndim != 3 or arr.shape[2] not in (2, 3) or arr.shape[1] < 1:
        raise DataError(
            path, "bad keypoints shape", key="keypoints", expected="(T, K, 2 or 3)", found=arr.shape
        )
    if arr.shape[0] != T:
        raise DataError(
            path,
            "keypoint frames do not match the video",
            key="keypoints",
            expected=f"{T} frames",
            found=f"{arr.shape[0]} frames",
        )
    if not np.isfinite(arr).all():
        raise DataError(path, "keypoints hold NaN/inf", key="keypoints")
    kp = arr[..., :2] / np.array([w, h], np.float32)
    conf = arr[..., 2] if arr.shape[2] == 3 else np.ones(arr.shape[:2], np.float32)
    if (conf < 0).any() or (conf > 1).any():
        raise DataError(
            path,
            "confidence outside [0, 1]",
            key="keypoints",
            found=(float(conf.min()), float(conf.max())),
        )
    return kp.astype(np.float32), conf.astype(np.float32), data


def load_video_folder(root: str | Path) -> list[VideoClip]:
    """Load a user's folder of clips, one per ``NAME.mp4`` (sorted by name):

    - ``NAME.mp4``: the video (its audio track is used when there is no ``NAME.wav``);
    - ``NAME.wav`` (optional if the mp4 has audio): the speech, mixed down to mono;
    - ``NAME.json``: ``{"keypoints": [[[x, y, conf], ...K], ...T]}`` in pixels (x right,
      y down; ``[x, y]`` pairs mean confidence 1), one entry per video frame, plus optional
      ``"caption"`` (str) and ``"speaker"`` (int);
    - ``NAME.txt`` (optional): the caption (wins over the json's).

    The reference image is the first frame. Problems raise :class:`~gesture_data.DataError`
    naming the file and field.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "no such video folder")
    videos = sorted(root.glob("*.mp4"))
    if not videos:
        raise DataError(root, "no NAME.mp4 files in the folder", key="video")
    clips = []
    for mp4 in videos:
        name = mp4.stem
        frames, fps, audio, sr = read_video(mp4)
        wav = root / f"{name}.wav"
        if wav.exists():
            audio, sr = _read_wav(wav)
        elif audio is None:
            raise DataError(
                wav, "no audio: the mp4 has no audio track and the wav is missing", key="audio"
            )
        kp_path = root / f"{name}.json"
        if not kp_path.exists():
            raise DataError(kp_path, "missing keypoint file", key="keypoints")
        T, h, w, _ = frames.shape
        kp, conf, data = _read_keypoints(kp_path, T, h, w)
        txt = root / f"{name}.txt"
        caption = data.get("caption", "")
        if not isinstance(caption, str):
            raise DataError(
                kp_path, "caption must be a string", key="caption", found=type(caption).__name__
            )
        if txt.exists():
            caption = txt.read_text(encoding="utf-8").strip()
        speaker = data.get("speaker", 0)
        if isinstance(speaker, bool) or not isinstance(speaker, int):
            raise DataError(kp_path, "speaker must be an integer", key="speaker", found=speaker)
        clips.append(
            VideoClip(
                clip_id=name,
                frames=frames,
                fps=fps,
                audio=audio.astype(np.float32),
                sample_rate=int(sr),
                keypoints=kp,
                confidence=conf,
                caption=caption,
                reference=frames[0].copy(),
                speaker=speaker,
                meta={"source": str(mp4)},
            )
        )
    return clips
