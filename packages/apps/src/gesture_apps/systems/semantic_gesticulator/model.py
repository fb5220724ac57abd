"""Semantic Gesticulator's parts around the library models: our motion layout, the motion
normaliser, the audio features at the token rate and the exported bundle.

Semantic Gesticulator: Semantics-Aware Co-Speech Gesture Synthesis (Zhang et al., SIGGRAPH
2024). The networks live in ``motion_tokenizers`` (``SGRVQVAE``, ``priors.SGCoarseGPT``,
``priors.SGFineGPT``); this file has no training code (inference imports it).

Motion is ``(T, 168)``: BEAT2's 55 SMPL-X axis-angle joints (165 channels) followed by the
root translation (3), z-scored per channel with the training set's statistics (SG's
``body_scaler``). The bundle ``semantic_gesticulator/`` holds ``tokenizer/``, ``coarse/``,
``fine_1..3/`` (those trained so far), ``normalizer/`` (the motion statistics) and ``audio/``
(feature rate and the audio feature scaler).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.bundle import Bundle, open_bundle
from gesture_apps.systems.semantic_gesticulator.config import (
    BODY_JOINTS,
    DOWN_T,
    EXPORT,
    HANDS_JOINTS,
    JOINT_NUM,
    MOTION_DIM,
    SYSTEM,
)
from gesture_data.features.sg_audio import SG_AUDIO_DIM, SGScaler, sg_audio_features
from gesture_data.motion import Motion
from motion_tokenizers import SGRVQVAE
from motion_tokenizers.priors import SGCoarseGPT, SGFineGPT

PARTS = ("body", "hands")
MOTION = "motion"  # the normaliser's one part
LEVELS = 4  # residual quantizers: layer 0 (coarse GPT) + 1..3 (fine GPTs)


def motion_array(poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """BEAT2 ``poses (T, 165)`` + ``trans (T, 3)`` -> our layout ``(T, 168)`` float32."""
    return np.concatenate([poses, trans], axis=1).astype(np.float32)


def to_motion(x: np.ndarray, fps: float) -> Motion:
    """Our layout ``(T, 168)`` -> :class:`Motion` (BEAT2 npz layout)."""
    return Motion(poses=x[:, : JOINT_NUM * 3].copy(), trans=x[:, JOINT_NUM * 3 :].copy(), fps=fps)


def build_tokenizer(size: str, overrides: dict) -> SGRVQVAE:
    """SGRVQVAE over our layout (joint_channel 3, 55 joints + translation, 4x down)."""
    make = SGRVQVAE.tiny if size == "tiny" else SGRVQVAE.sg
    kw = dict(
        down_t=DOWN_T,
        joint_channel=3,
        joint_num=JOINT_NUM,
        body_joints=list(BODY_JOINTS),
        hands_joints=list(HANDS_JOINTS),
    )
    return make(**{**kw, **overrides})


@dataclass
class MotionCodec:
    """The frozen tokenizer with the motion statistics it was trained on."""

    tokenizer: SGRVQVAE
    mean: np.ndarray  # (168,)
    std: np.ndarray  # (168,)

    @property
    def device(self) -> torch.device:
        return next(self.tokenizer.parameters()).device

    @property
    def unit(self) -> int:
        """Frames per token."""
        return int(self.tokenizer.downsample)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    @torch.no_grad()
    def encode(self, x: np.ndarray) -> dict[str, Tensor]:
        """Un-normalised ``(T, 168)`` -> ``{"body", "hands"}`` codes ``(1, T // unit, 4)``
        (a tail shorter than a token is dropped)."""
        n = len(x) // self.unit * self.unit
        if n == 0:
            raise GenerationError(f"motion of {len(x)} frames is shorter than one token")
        m = torch.from_numpy(self.normalise(x[:n]))[None].to(self.device)
        return {k: v.cpu() for k, v in self.tokenizer.encode(m).items()}

    @torch.no_grad()
    def decode(
        self, codes: dict[str, Tensor], *, insert_windows: list[tuple[int, int]] | None = None
    ) -> np.ndarray:
        """Codes ``(1, N, 4)`` per part -> un-normalised ``(N * unit, 168)``; with
        ``insert_windows`` (token ranges) SG's gaussian filter smooths around them."""
        dev = self.device
        codes = {k: v.to(dev) for k, v in codes.items()}
        if insert_windows:
            x = self.tokenizer.decode(codes, filter="gaussian", insert_windows=insert_windows)
        else:
            x = self.tokenizer.decode(codes)
        return x[0].float().cpu().numpy() * self.std + self.mean


def audio_features(
    audio: np.ndarray, sample_rate: int, *, fps: float, ds_rate: int, scaler: SGScaler | None
) -> np.ndarray:
    """SG's 437-d features, one row per token ``(N, 437)`` float32."""
    feats = sg_audio_features(audio, sample_rate, fps=fps, ds_rate=ds_rate, scaler=scaler)
    return np.asarray(feats, np.float32)


@dataclass
class SGModels:
    """Everything generation needs, loaded from a bundle."""

    codec: MotionCodec
    coarse: SGCoarseGPT
    fines: list[SGFineGPT]
    scaler: SGScaler
    fps: float  # motion frame rate
    feature_fps: float
    ds_rate: int
    body0: int
    hands0: int
    folder: Path

    @property
    def token_rate(self) -> float:
        """Tokens per second of motion."""
        return self.fps / self.codec.unit


def open_sg_bundle(path: str | Path) -> Bundle:
    """The Semantic Gesticulator bundle at ``path`` (a bundle, run or checkpoint folder)."""
    bundle = open_bundle(path, EXPORT)
    if bundle.system != SYSTEM:
        raise GenerationError(
            f"{bundle.folder}: a {bundle.system!r} bundle, not a Semantic Gesticulator one"
        )
    return bundle


def load_codec(bundle: Bundle, device: str | torch.device = "cpu") -> MotionCodec:
    """Tokenizer + motion statistics of a bundle (any stage)."""
    tok = _load(SGRVQVAE, bundle, "tokenizer", device)
    stats = _read_npz(bundle.path("normalizer", "normalizer.npz"), ("mean", "std"), MOTION_DIM)
    return MotionCodec(tok, stats["mean"], stats["std"])


def read_scaler(bundle: Bundle) -> SGScaler:
    stats = _read_npz(bundle.path("audio", "scaler.npz"), ("mean", "scale"), SG_AUDIO_DIM)
    return SGScaler(mean=stats["mean"], scale=stats["scale"])


def load_models(path: str | Path, device: str | torch.device = "cpu") -> SGModels:
    """The full bundle of a ``fine`` stage run; a bundle missing the GPTs fails naming them."""
    bundle = open_sg_bundle(path)
    missing = [c for c in ("coarse", "fine_1", "fine_2", "fine_3") if not bundle.has(c)]
    if missing:
        raise GenerationError(
            f"{bundle.folder}: bundle of stage {bundle.config('audio').get('stage')!r} has no "
            f"{', '.join(missing)} (train the coarse and fine stages first)"
        )
    audio = bundle.config("audio")
    return SGModels(
        codec=load_codec(bundle, device),
        coarse=_load(SGCoarseGPT, bundle, "coarse", device),
        fines=[_load(SGFineGPT, bundle, f"fine_{k}", device) for k in (1, 2, 3)],
        scaler=read_scaler(bundle),
        fps=float(bundle.manifest["fps"]),
        feature_fps=float(audio["fps"]),
        ds_rate=int(audio["ds_rate"]),
        body0=int(audio["body0"]),
        hands0=int(audio["hands0"]),
        folder=bundle.folder,
    )


def _load(cls, bundle: Bundle, name: str, device):
    folder = bundle.path(name)
    try:
        model = cls.from_pretrained(str(folder))
    except Exception as e:  # missing/corrupt weights or config: one message naming the folder
        raise GenerationError(
            f"{folder}: cannot load {cls.__name__} ({one_line(e, 300)})"
        ) from None
    return model.to(device).eval()


def _read_npz(path: Path, keys: tuple[str, ...], dim: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: np.asarray(f[k], np.float32) for k in keys}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise GenerationError(f"{path}: unreadable statistics ({one_line(e, 200)})") from None
    for k, v in out.items():
        if v.shape != (dim,) or not np.isfinite(v).all():
            raise GenerationError(
                f"{path}: {k!r} expected {dim} finite values, found shape {v.shape}"
            )
    if "std" in out and (out["std"] <= 0).any():
        raise GenerationError(f"{path}: 'std' must be positive")
    return out


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic ``np.savez`` (the bundle folder itself is swapped in whole by the caller)."""
    from motion_tokenizers.io import atomic_write

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
