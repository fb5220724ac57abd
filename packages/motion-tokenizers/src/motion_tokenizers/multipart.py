"""Several body-part tokenizers behind one latent sequence.

GestureLSM (Liu et al., ICCV 2025, https://arxiv.org/abs/2501.18898) tokenizes BEAT2 motion per
part (upper body, hands, lower body + root velocity, face) and lets the flow model run on the
concatenation of the parts' *continuous* latents, divided by ``latent_scale`` (5) so they are
roughly unit scale; decoding re-quantises each part before its decoder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import MotionTokenizer
from .errors import CheckpointError, TokenizerInputError
from .io import atomic_directory
from .rvqvae import BEAT2_PART_DIMS, RVQVAE, SEG_PART_DIMS, canonical_part_name
from .vqvae import VQVAE

TOKENIZER_CLASSES: dict[str, type[MotionTokenizer]] = {"RVQVAE": RVQVAE, "VQVAE": VQVAE}


class MultiPartTokenizer(nn.Module):
    """``parts`` maps a part name to its tokenizer; the order of the dict is the latent order.

    ``encode_continuous({name: (B, T, C_name)}) -> (B, T / factor, sum D)`` and
    ``decode((B, N, sum D)) -> {name: (B, N * factor, C_name)}``.
    """

    def __init__(self, parts: dict[str, MotionTokenizer], latent_scale: float = 5.0):
        super().__init__()
        if not parts:
            raise ValueError("parts: at least one part tokenizer is required")
        factors = {name: tok.downsample_factor for name, tok in parts.items()}
        if len(set(factors.values())) != 1:
            raise ValueError(f"parts must share one temporal downsampling factor, found {factors}")
        if latent_scale <= 0:
            raise ValueError(f"latent_scale must be positive, found {latent_scale}")
        self.parts = nn.ModuleDict(parts)
        self.latent_scale = float(latent_scale)

    @property
    def part_names(self) -> list[str]:
        return list(self.parts.keys())

    @property
    def latent_dims(self) -> dict[str, int]:
        return {name: tok.code_dim for name, tok in self.parts.items()}

    @property
    def latent_dim(self) -> int:
        return sum(self.latent_dims.values())

    @property
    def downsample_factor(self) -> int:
        return next(iter(self.parts.values())).downsample_factor

    def _check_parts(self, x: dict[str, Tensor]) -> None:
        missing = [n for n in self.parts if n not in x]
        if missing:
            raise TokenizerInputError(f"parts: missing {missing}; expected keys {self.part_names}")
        lengths = {n: tuple(x[n].shape[:2]) for n in self.parts}
        if len(set(lengths.values())) != 1:
            raise TokenizerInputError(f"parts: batch and length must agree, found {lengths}")

    def encode_continuous(self, x: dict[str, Tensor]) -> Tensor:
        """``{name: (B, T, C)}`` -> scaled continuous latents ``(B, T / factor, sum D)``."""
        self._check_parts(x)
        z = [tok.encode_continuous(x[name]) for name, tok in self.parts.items()]
        return torch.cat(z, dim=-1) / self.latent_scale

    def split_latents(self, latents: Tensor) -> dict[str, Tensor]:
        """``(B, N, sum D)`` -> ``{name: (B, N, D)}`` in the tokenizers' own (unscaled) units."""
        if latents.ndim != 3 or latents.shape[-1] != self.latent_dim:
            raise TokenizerInputError(
                f"latents: expected shape (B, N, {self.latent_dim}), found {tuple(latents.shape)}"
            )
        chunks = latents.split(list(self.latent_dims.values()), dim=-1)
        return {name: c * self.latent_scale for name, c in zip(self.parts, chunks, strict=True)}

    def decode(
        self,
        latents: Tensor,
        *,
        requantize: bool = True,
        num_layers: int | None = None,
        frames: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """Scaled latents ``(B, N, sum D)`` -> ``{name: (B, N * factor, C)}``.

        ``requantize`` (GestureLSM's behaviour) snaps each part to its codebook first.
        ``frames=(lo, hi)``: only those frames, ``(B, hi - lo, C)``, computed from the decoder
        positions they depend on (:meth:`Conv1dDecoder.forward_range`), as a stream decoding a
        few new frames inside their context needs.
        """
        out = {}
        for name, z in self.split_latents(latents).items():
            tok = self.parts[name]
            if requantize:
                out[name] = tok.decode_latent(z, num_layers, frames=frames)
            else:
                out[name] = tok.decode(z, frames=frames)
        return out

    def encode(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{name: (B, T, C)}`` -> ``{name: indices (B, T / factor, Q)}``."""
        self._check_parts(x)
        return {name: tok.encode(x[name]) for name, tok in self.parts.items()}

    def decode_indices(
        self, indices: dict[str, Tensor], num_layers: int | None = None, *, reference: bool = False
    ) -> dict[str, Tensor]:
        """``{name: (B, N, Q')}`` -> ``{name: (B, N * factor, C)}``; ``reference=True``
        decodes imported GestureLSM tokens as its ``forward_decoder`` does."""
        return {
            name: tok.decode_indices(indices[name], num_layers, reference=reference)
            for name, tok in self.parts.items()
        }

    # ----- presets -----------------------------------------------------------------------

    @classmethod
    def gesturelsm(
        cls, parts: tuple[str, ...] = tuple(BEAT2_PART_DIMS), **overrides
    ) -> MultiPartTokenizer:
        """BEAT2 upper 78 / hands 180 / lower (+ root velocity) 57 / face 100 -> 4 x 128 =
        512-d latents."""
        parts = tuple(canonical_part_name(p) for p in parts)
        return cls({p: RVQVAE.gesturelsm(p, **overrides) for p in parts}, latent_scale=5.0)

    @classmethod
    def semantic_gesticulator(cls, **overrides) -> MultiPartTokenizer:
        """Semantic Gesticulator's body and hands RVQ-VAEs (4 x 512 bins, 8x downsampling)."""
        parts = {p: RVQVAE.semantic_gesticulator(p, **overrides) for p in SEG_PART_DIMS}
        return cls(parts, latent_scale=1.0)

    @classmethod
    def tiny(cls, part_dims: dict[str, int] | None = None, **overrides) -> MultiPartTokenizer:
        part_dims = part_dims or BEAT2_PART_DIMS
        return cls({p: RVQVAE.tiny(d, **overrides) for p, d in part_dims.items()}, latent_scale=5.0)

    # ----- persistence -------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """``config.json`` (part order, classes, latent_scale) + one sub-folder per part."""
        config = {
            "latent_scale": self.latent_scale,
            "parts": [{"name": n, "class": type(t).__name__} for n, t in self.parts.items()],
        }

        def write(tmp: Path) -> None:
            for name, tok in self.parts.items():
                tok.save_pretrained(tmp / name)
            (tmp / "config.json").write_text(json.dumps(config, indent=2))

        atomic_directory(save_directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> MultiPartTokenizer:
        directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{cfg_path}: file not found")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
            specs = config["parts"]
            latent_scale = config["latent_scale"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{cfg_path}: invalid multi-part config ({e!r})") from e
        if not isinstance(specs, list) or not specs:
            raise CheckpointError(f"{cfg_path}: 'parts' must be a non-empty list, found {specs!r}")
        if not (
            isinstance(latent_scale, int | float)
            and not isinstance(latent_scale, bool)
            and math.isfinite(latent_scale)
            and latent_scale > 0
        ):
            raise CheckpointError(
                f"{cfg_path}: 'latent_scale' must be a positive number, found {latent_scale!r}"
            )
        parts = {}
        for i, spec in enumerate(specs):
            name = spec.get("name") if isinstance(spec, dict) else None
            # a part name is a sub-folder: it may not climb out of the checkpoint
            if (
                not isinstance(name, str)
                or not name
                or Path(name).name != name
                or name in (".", "..")
            ):
                raise CheckpointError(
                    f"{cfg_path}: parts[{i}] needs a folder 'name', found {spec!r}"
                )
            # a folder saved under an old part name (lower_trans) loads under today's name; its
            # sub-folder keeps the name it was saved with
            key = canonical_part_name(name)
            if key in parts:
                raise CheckpointError(f"{cfg_path}: part {key!r} listed twice")
            kind = TOKENIZER_CLASSES.get(spec.get("class"))
            if kind is None:
                raise CheckpointError(
                    f"{cfg_path}: part {name!r} has unknown class {spec.get('class')!r}"
                )
            parts[key] = kind.from_pretrained(directory / name)
        return cls(parts, latent_scale=latent_scale)
