"""Beat consistency (BC, "BeatAlign"): how well motion beats follow audio onsets.

Both references:
- audio onsets: ``librosa.onset.onset_detect`` (hop 512, librosa defaults) on 16 kHz audio;
- motion beats: local minima (``argrelextrema``, order 7) of each joint's speed, normalised by
  the per-joint mean speed (``mean_vel_smplxflame_30.npy``), kept only where the normalised
  speed exceeds a threshold;
- the first and last 2 s are ignored; score = mean over onsets of ``exp(-d^2 / (2 sigma^2))``
  with ``d`` the distance to the nearest motion beat, averaged over the 13 upper-body joints;
- the data set score weights each sequence by its trimmed length ``T - 120``.

Differences (``variant=``):

=====================  ==================================  ==================================
item                   ``evaltools`` (default)              ``cvpr24``
=====================  ==================================  ==================================
speed threshold        0.1                                 0.3
audio window end       ``int((T - 60) / 30 * sr)``         ``min(int(sr / 30 * T), N - 2 sr)``
audio load             16 kHz as given                     16k -> 22.05k -> 16k (soxr) round
                                                           trip, as ``librosa.load`` + resample
no mean speed file     global max speed of the first       required
                       sequence (sticky in the class)
=====================  ==================================  ==================================

Index-offset quirk (both): the speed threshold is checked at the *untrimmed* frame index
``j`` while the minimum sits at trimmed index ``j`` (i.e. frame ``j + 60``). It is reproduced by
default; pass ``fix_index_offset=True`` to check the threshold at the right frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.signal import argrelextrema
from torchmetrics import Metric

from gesture_eval._checks import (
    Variant,
    as_audio,
    as_joints,
    check_fps,
    check_variant,
    to_numpy,
)
from gesture_eval.errors import EvalError

logger = logging.getLogger(__name__)

__all__ = [
    "BC_UPPER_BODY",
    "BeatConsistency",
    "BeatConsistencyResult",
    "audio_onsets",
    "beat_consistency",
    "beat_consistency_detail",
    "joint_speed",
    "mean_joint_speed",
    "motion_beats",
]

#: SMPL-X joints used by both references: spine1-3, neck, collars, head, shoulders, elbows, wrists.
BC_UPPER_BODY: tuple[int, ...] = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
_THRESHOLD = {"evaltools": 0.1, "cvpr24": 0.3}
_HOP = 512


@dataclass(frozen=True)
class _Config:
    variant: str
    sigma: float
    order: int
    threshold: float
    trim_seconds: float
    fix_index_offset: bool
    joints: tuple[int, ...]


class BeatConsistencyResult(NamedTuple):
    """One sequence's BC. ``weight`` is the trimmed frame count used for data-set averaging."""

    value: float
    weight: int
    per_joint: np.ndarray
    num_onsets: int
    variant: str


def joint_speed(joints: np.ndarray, fps: float) -> np.ndarray:
    """Speed (T, J) of positions (T, J, 3): one-sided differences at the ends, else central."""
    dt = 1 / fps
    # Same operation order and dtype as the references so argrelextrema sees identical values
    # (ties between float32 neighbours decide whether a frame is a minimum).
    vel = np.concatenate(
        [
            (joints[1:2] - joints[:1]) / dt,
            (joints[2:] - joints[:-2]) / (2 * dt),
            (joints[-1:] - joints[-2:-1]) / dt,
        ],
        axis=0,
    )
    return np.linalg.norm(vel, axis=2)


def mean_joint_speed(joints: Sequence, fps: float = 30.0) -> np.ndarray:
    """Per-joint mean speed ``(J,)`` over sequences of ``(T, J, 3)`` joint positions.

    BC's speed normaliser (``mean_velocity``) when BEAT2's ``mean_vel_smplxflame_30.npy``
    does not apply (another skeleton or data set): :func:`joint_speed` of every frame of every
    sequence, averaged per joint, floored at 1e-6 so a joint that never moves does not divide
    BC's speeds by zero. Computed in the joints' dtype, as :func:`joint_speed` is.

    Raises:
        EvalError: no sequences, a sequence shorter than 2 frames or with NaN/inf, or
            sequences with different joint counts (the message names ``joints[i]``).
    """
    check_fps(fps)
    if len(joints) == 0:
        raise EvalError("joints: expected at least one (T, J, 3) sequence, found none")
    speeds = []
    for i, seq in enumerate(joints):
        arr = as_joints(seq, f"joints[{i}]")
        if arr.shape[0] < 2:
            raise EvalError(f"joints[{i}]: a speed needs at least 2 frames, found {arr.shape[0]}")
        if speeds and arr.shape[1] != speeds[0].shape[1]:
            raise EvalError(
                f"joints[{i}]: {arr.shape[1]} joints, but joints[0] has {speeds[0].shape[1]}"
            )
        speeds.append(joint_speed(arr, fps))
    return np.maximum(np.concatenate(speeds).mean(axis=0), 1e-6)


def _roundtrip_22k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    # What the CVPR'24 trainer got from librosa.load(path) (22.05 kHz, soxr_hq, float32)
    # followed by librosa.resample back to 16 kHz.
    up = librosa.resample(audio.astype(np.float32), orig_sr=sample_rate, target_sr=22050)
    return librosa.resample(up, orig_sr=22050, target_sr=sample_rate)


def audio_onsets(audio, *, sample_rate: int = 16000) -> np.ndarray:
    """Onset times in seconds of ``audio`` (N,) with librosa's default detector, hop 512."""
    import librosa

    y = as_audio(audio)
    return librosa.onset.onset_detect(
        y=y.astype(np.float32), sr=sample_rate, hop_length=_HOP, units="time"
    )


def motion_beats(
    speed: np.ndarray,
    start: int,
    end: int,
    *,
    threshold: float,
    order: int = 7,
    fix_index_offset: bool = False,
    joints=BC_UPPER_BODY,
) -> list[np.ndarray]:
    """Beat frames (relative to ``start``) per joint in ``joints`` of a normalised speed (T, J)."""
    window = speed[start:end][:, list(joints)]
    rows, cols = argrelextrema(window, np.less, axis=0, order=order)
    # The references test ``j in where(speed > threshold)`` with j relative to the window:
    # that reads the threshold 'start' frames early. fix_index_offset reads the right frame.
    check_rows = rows + start if fix_index_offset else rows
    full = speed[:, list(joints)]
    keep = full[check_rows, cols] > threshold
    rows, cols = rows[keep], cols[keep]
    return [rows[cols == k] for k in range(len(joints))]


def _gahr(beat_times: np.ndarray, onset_times: np.ndarray, sigma: float) -> float:
    """Mean over onsets of exp(-d^2 / 2 sigma^2), d = distance to the nearest beat (0: no beats)."""
    if beat_times.size == 0:
        return 0.0
    d = np.abs(onset_times[:, None] - beat_times[None, :]).min(axis=1)
    return float(np.exp(-(d**2) / (2 * sigma**2)).mean())


def _config(variant, sigma, order, threshold, trim_seconds, fix_index_offset, joints) -> _Config:
    check_variant(variant)
    return _Config(
        variant=variant,
        sigma=sigma,
        order=order,
        threshold=_THRESHOLD[variant] if threshold is None else float(threshold),
        trim_seconds=trim_seconds,
        fix_index_offset=fix_index_offset,
        joints=tuple(joints),
    )


def _sequence_bc(
    joints,
    audio,
    sample_rate: int,
    fps: int,
    mean_velocity: np.ndarray,
    cfg: _Config,
    resample_roundtrip: bool | None,
) -> BeatConsistencyResult:
    check_fps(fps)
    pos = as_joints(joints, "joints")
    y = as_audio(audio, "audio")
    if sample_rate != 16000:
        raise EvalError(
            f"audio must be 16 kHz as in both references (onsets depend on the rate), "
            f"found sample_rate={sample_rate}; resample it first"
        )
    if max(cfg.joints) >= pos.shape[1]:
        raise EvalError(
            f"joints has {pos.shape[1]} joints but BC uses joint index {max(cfg.joints)}; "
            "expected SMPL-X joints (T, 55, 3)"
        )
    if mean_velocity.shape != (pos.shape[1],):
        raise EvalError(
            f"mean_velocity must be ({pos.shape[1]},) to match joints, found {mean_velocity.shape}"
        )
    t = pos.shape[0]
    # BEAT2 audio runs ~0.6 s past the motion; an audio clearly shorter than the motion means
    # mismatched inputs (the references would silently score a truncated window).
    if len(y) / sample_rate < t / fps - 0.5:
        raise EvalError(
            f"audio ({len(y) / sample_rate:.2f} s) is shorter than joints ({t / fps:.2f} s at "
            f"{fps} fps); pass the sequence's own audio"
        )
    trim = round(cfg.trim_seconds * fps)
    if t - 2 * trim <= 2 * cfg.order:
        raise EvalError(
            f"joints has {t} frames; BC needs more than {2 * trim + 2 * cfg.order} "
            f"({cfg.trim_seconds} s trimmed at each end)"
        )
    a_trim = int(cfg.trim_seconds * sample_rate)
    if cfg.variant == "cvpr24":
        if resample_roundtrip is None or resample_roundtrip:
            y = _roundtrip_22k(y, sample_rate)
        # The CVPR'24 trainer cuts the audio to the motion length, then slices up to
        # len(full audio) - 2 s, so the end trim is usually a no-op.
        y = y[: int(sample_rate / fps * t)][a_trim : len(y) - a_trim]
    else:
        if resample_roundtrip:
            y = _roundtrip_22k(y, sample_rate)
        y = y[a_trim : int((t - trim) / fps * sample_rate)]
    if y.size == 0:
        raise EvalError(
            f"audio ({len(audio)} samples) is too short for joints ({t} frames at {fps} fps)"
        )
    onsets = audio_onsets(y, sample_rate=sample_rate)
    if onsets.size == 0:
        raise EvalError("no audio onsets found in the trimmed audio; BC is undefined")
    speed = joint_speed(pos, fps) / mean_velocity
    beats = motion_beats(
        speed,
        trim,
        t - trim,
        threshold=cfg.threshold,
        order=cfg.order,
        fix_index_offset=cfg.fix_index_offset,
        joints=cfg.joints,
    )
    per_joint = np.array([_gahr(b / fps, onsets, cfg.sigma) for b in beats])
    return BeatConsistencyResult(
        value=float(per_joint.sum() / len(cfg.joints)),
        weight=t - 2 * trim,
        per_joint=per_joint,
        num_onsets=int(onsets.size),
        variant=cfg.variant,
    )


def _mean_velocity(mean_velocity, variant: str, pos_for_fallback, fps) -> np.ndarray:
    if mean_velocity is not None:
        mv = to_numpy(mean_velocity, "mean_velocity").reshape(-1)
        if (mv <= 0).any() or not np.isfinite(mv).all():
            raise EvalError("mean_velocity must be positive and finite")
        return mv
    if variant == "cvpr24":
        raise EvalError(
            "variant='cvpr24' needs mean_velocity (the (55,) mean_vel_smplxflame_30.npy array)"
        )
    logger.warning(
        "mean_velocity not given: normalising by the global max speed (evaltools fallback)"
    )
    pos = as_joints(pos_for_fallback, "joints")
    return np.asarray(joint_speed(pos, fps).max())[None].repeat(pos.shape[1])


def beat_consistency_detail(
    joints,
    audio,
    *,
    sample_rate: int = 16000,
    fps: int = 30,
    mean_velocity=None,
    variant: Variant = "evaltools",
    fix_index_offset: bool = False,
    sigma: float = 0.3,
    order: int = 7,
    threshold: float | None = None,
    trim_seconds: float = 2.0,
    joint_subset=BC_UPPER_BODY,
    resample_roundtrip: bool | None = None,
) -> BeatConsistencyResult:
    """One sequence's BC with weight, per-joint scores and variant; see :func:`beat_consistency`."""
    cfg = _config(variant, sigma, order, threshold, trim_seconds, fix_index_offset, joint_subset)
    mv = _mean_velocity(mean_velocity, variant, joints, fps)
    return _sequence_bc(joints, audio, sample_rate, fps, mv, cfg, resample_roundtrip)


def beat_consistency(
    joints,
    audio,
    *,
    sample_rate: int = 16000,
    fps: int = 30,
    mean_velocity=None,
    variant: Variant = "evaltools",
    fix_index_offset: bool = False,
    sigma: float = 0.3,
    order: int = 7,
    threshold: float | None = None,
    trim_seconds: float = 2.0,
    joint_subset=BC_UPPER_BODY,
    resample_roundtrip: bool | None = None,
) -> float:
    """Beat consistency of one sequence: ``joints`` (T, 55, 3) metres, ``audio`` (N,) 16 kHz.

    ``mean_velocity`` is the (55,) per-joint mean speed (``mean_vel_smplxflame_30.npy``).
    ``threshold=None`` uses the variant's (0.1 / 0.3). ``resample_roundtrip=None`` applies the
    22.05 kHz round trip only for ``cvpr24``. For a test set use :class:`BeatConsistency`,
    which weights sequences by their trimmed length like the references.
    """
    return beat_consistency_detail(
        joints,
        audio,
        sample_rate=sample_rate,
        fps=fps,
        mean_velocity=mean_velocity,
        variant=variant,
        fix_index_offset=fix_index_offset,
        sigma=sigma,
        order=order,
        threshold=threshold,
        trim_seconds=trim_seconds,
        joint_subset=joint_subset,
        resample_roundtrip=resample_roundtrip,
    ).value


class BeatConsistency(Metric):
    """Data-set BC: ``update(joints (T, 55, 3), audio (N,))`` once per sequence.

    ``compute()`` returns ``sum(bc_i * (T_i - 120)) / sum(T_i - 120)``. Without
    ``mean_velocity`` (evaltools only) the first sequence's global max speed is used for all
    later sequences, as the reference does.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        *,
        mean_velocity=None,
        sample_rate: int = 16000,
        fps: int = 30,
        variant: Variant = "evaltools",
        fix_index_offset: bool = False,
        sigma: float = 0.3,
        order: int = 7,
        threshold: float | None = None,
        trim_seconds: float = 2.0,
        joint_subset=BC_UPPER_BODY,
        resample_roundtrip: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.variant = check_variant(variant)
        self.cfg = _config(
            variant, sigma, order, threshold, trim_seconds, fix_index_offset, joint_subset
        )
        self.mean_velocity = (
            None if mean_velocity is None else _mean_velocity(mean_velocity, variant, None, fps)
        )
        if self.mean_velocity is None and variant == "cvpr24":
            _mean_velocity(None, variant, None, fps)  # raises the explanatory error
        self.sample_rate, self.fps, self.resample_roundtrip = sample_rate, fps, resample_roundtrip
        self.add_state(
            "weighted_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("weight", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, joints, audio) -> None:
        if self.mean_velocity is None:
            # Sticky fallback: fixed by the first sequence, like the evaltools BC object.
            self.mean_velocity = _mean_velocity(None, self.variant, joints, self.fps)
        res = _sequence_bc(
            joints,
            audio,
            self.sample_rate,
            self.fps,
            self.mean_velocity,
            self.cfg,
            self.resample_roundtrip,
        )
        self.weighted_sum += res.value * res.weight
        self.weight += res.weight

    def compute(self) -> torch.Tensor:
        if int(self.weight) == 0:
            raise EvalError("BeatConsistency.compute() called before any update()")
        return self.weighted_sum / self.weight
