"""The utterance-to-motion system's parts: the frozen VQ-VAE with its normaliser, the
caption standardiser and the training objective around ``motion_tokenizers.priors.T2MGPT``.

T2M-GPT: Generating Human Motion from Textual Descriptions with Discrete Representations
(Zhang et al., CVPR 2023). Shared by training and inference (no training code here).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.bundle import open_bundle
from gesture_apps.runtime.checkpoint import check_finite
from gesture_data import Normalizer
from motion_tokenizers import VQVAE
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.priors import T2MGPT

MOTION = "motion"  # the tokenizer bundle's normaliser part (the 263-d vector)


@dataclass
class MotionCodec:
    """T2M-GPT's frozen VQ-VAE and the dataset statistics it was trained with."""

    tokenizer: VQVAE
    mean: np.ndarray  # (263,)
    std: np.ndarray  # (263,)

    def encode(self, motion: np.ndarray) -> Tensor:
        """Un-normalised ``(T, 263)`` features (T a multiple of 4) -> codes ``(T / 4,)``."""
        x = torch.from_numpy(((motion - self.mean) / self.std).astype(np.float32))[None]
        with torch.no_grad():
            return self.tokenizer.encode(x)[0, :, 0]

    @torch.no_grad()
    def decode(self, codes: Tensor) -> np.ndarray:
        """Codes ``(L,)`` -> un-normalised ``(4 L, 263)`` features."""
        dev = next(self.tokenizer.parameters()).device
        x = self.tokenizer.decode_indices(codes.to(dev).reshape(1, -1, 1))[0]
        return x.float().cpu().numpy() * self.std + self.mean


def load_codec(path: str | Path) -> MotionCodec:
    """The VQ-VAE and normaliser of a tokenizer bundle, a ``gesture train tokenizer`` run
    (``model.kind vqvae``) or one of its checkpoints; CheckpointError names what is wrong."""
    try:
        bundle = open_bundle(path, "tokenizer")
    except GenerationError as e:
        raise CheckpointError(f"not a tokenizer export: {e}") from None
    if bundle.system not in ("tokenizer", "t2m_gpt"):
        raise CheckpointError(f"{bundle.folder}: a {bundle.system!r} bundle, not a tokenizer")
    cfg = bundle.config("tokenizer") if bundle.has("tokenizer") else {}
    if cfg.get("input_dim") != 263 or "num_quantizers" in cfg or "parts" in cfg:
        raise CheckpointError(
            f"{bundle.folder}: not a T2M-GPT VQ-VAE over 263-d HumanML3D features (train it "
            "with `gesture train tokenizer --preset tokenizer/t2m_gpt`)"
        )
    where = bundle.path("tokenizer")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
            tok = VQVAE.from_pretrained(where)
    except (ValueError, OSError):
        raise
    except Exception as e:  # safetensors and json raise their own types for broken files
        raise CheckpointError(f"{where}: cannot load the tokenizer ({one_line(e, 200)})") from None
    check_finite(tok, where)
    stats = bundle.path("normalizer", "normalizer.npz")
    norm = Normalizer.load(stats)  # DataError naming the file when corrupt
    if MOTION not in norm.stats:
        raise CheckpointError(f"{stats}: no statistics for {MOTION!r}")
    mean, std = (np.asarray(a, np.float32) for a in norm.stats[MOTION])
    if mean.shape != (263,) or std.shape != (263,):
        raise CheckpointError(f"{stats}: expected (263,) mean and std, found {mean.shape}")
    return MotionCodec(tok.eval().requires_grad_(False), mean, std)


def caption_stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std ``(D,)`` of training caption embeddings ``(N, D)``.

    Sentence encoders put every caption in a narrow cone (multilingual-e5's captions of the
    synthetic corpus have mean cosine 0.9): standardised, the differences between captions
    reach the GPT at unit scale instead of as 1e-2 wiggles on a large shared offset."""
    e = np.asarray(embeddings, np.float64)
    return e.mean(0).astype(np.float32), np.maximum(e.std(0), 1e-6).astype(np.float32)


class T2MObjective(nn.Module):
    """``forward({"codes" (B, L), "lengths" (B,), "cond" (B, D)}) -> (loss, metrics)``: T2M-GPT's
    corrupted-input cross-entropy, the whole loss inside one call (DDP)."""

    def __init__(self, prior: T2MGPT, pkeep: float):
        super().__init__()
        self.prior = prior
        self.pkeep = pkeep

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, stats = self.prior.loss(
            batch["codes"], batch["lengths"], batch["cond"], pkeep=self.pkeep
        )
        return loss, {k: torch.as_tensor(float(v)) for k, v in stats.items()}
