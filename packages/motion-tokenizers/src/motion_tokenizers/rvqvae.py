"""RVQ-VAE motion tokenizer.

MoMask: Generative Masked Modeling of 3D Human Motions (Guo et al., CVPR 2024,
https://arxiv.org/abs/2312.00063), as GestureLSM (Liu et al., ICCV 2025) trains it per body part.
The same class also builds the FSQ / residual-FSQ / LFQ variants through ``quantizer=``.
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor

from .base import MotionTokenizer
from .quantizers import Quantizer

# GestureLSM's BEAT2 part widths: 6D rotations of 13 upper-body and 30 finger joints, 9 lower-body
# joints plus the 3-d root velocity, and 100 FLAME expression coefficients. The names are
# gesture_data's BodyPartLayout.beat2() part names.
BEAT2_PART_DIMS = {"upper": 78, "hands": 180, "lower": 57, "face": 100}
# names earlier versions saved (tokenizer folders, configs) -> today's name
PART_ALIASES = {"lower_trans": "lower"}
# Semantic Gesticulator's two parts (3 channels per joint; the body includes root translation).
SEG_PART_DIMS = {"body": 66, "hands": 114}


def canonical_part_name(name: str) -> str:
    """Today's name of a body part: ``"lower_trans"`` (the name GestureLSM and earlier
    versions of this package used) -> ``"lower"``; any other name is returned unchanged."""
    return PART_ALIASES.get(name, name)


class RVQVAE(MotionTokenizer, PyTorchModelHubMixin):
    """Conv1d encoder -> residual quantizer -> Conv1d decoder.

    ``x (B, T, input_dim)`` -> latents ``(B, T / stride_t**down_t, code_dim)`` -> indices
    ``(B, T', num_quantizers)``. Defaults are GestureLSM's (= MoMask's with ``nb_code 1024,
    code_dim 128``); ``quantizer`` picks ``rvq`` (default), ``vq``, ``fsq``, ``rfsq`` or ``lfq``.
    """

    def __init__(
        self,
        input_dim: int,
        *,
        nb_code: int = 1024,
        code_dim: int = 128,
        num_quantizers: int = 6,
        down_t: int = 2,
        stride_t: int = 2,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.2,
        quantizer: str = "rvq",
        quantize_dropout_prob: float = 0.2,
        quantize_dropout_cutoff_index: int = 0,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = True,
        stochastic_sample_codes: bool = True,
        sample_codebook_temp: float = 0.5,
        rotation_trick: bool = False,
        fsq_levels: list[int] | None = None,
        lfq_entropy_weight: float = 0.1,
        polyphase_upsample: bool = True,
        reference_codebooks: bool = False,
    ):
        super().__init__()
        q = Quantizer(
            quantizer,
            code_dim,
            codebook_size=nb_code,
            num_quantizers=num_quantizers,
            decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
            quantize_dropout_prob=quantize_dropout_prob,
            quantize_dropout_cutoff_index=quantize_dropout_cutoff_index,
            stochastic_sample_codes=stochastic_sample_codes,
            sample_codebook_temp=sample_codebook_temp,
            rotation_trick=rotation_trick,
            levels=fsq_levels or [8, 5, 5, 5],
            entropy_loss_weight=lfq_entropy_weight,
        )
        self._build(
            input_dim=input_dim,
            code_dim=code_dim,
            down_t=down_t,
            stride_t=stride_t,
            width=width,
            depth=depth,
            dilation_growth_rate=dilation_growth_rate,
            activation=activation,
            norm=norm,
            dropout=dropout,
            polyphase_upsample=polyphase_upsample,
            quantizer=q,
        )
        # GestureLSM's released RVQs search and output ``embedding_proj(codebook)`` (folded into
        # our codebooks on import), but its ``forward_decoder`` gathers the raw codebooks; an
        # imported tokenizer keeps those too, so released token sequences decode exactly
        if reference_codebooks:
            self.register_buffer(
                "reference_codebooks", torch.zeros(num_quantizers, nb_code, code_dim)
            )
        else:
            self.reference_codebooks = None

    def decode_indices(
        self,
        indices: Tensor,
        num_layers: int | None = None,
        *,
        reference: bool = False,
        frames: tuple[int, int] | None = None,
    ) -> Tensor:
        """indices ``(B, N, Q')`` -> motion ``(B, N * factor, C)``; only the first
        ``num_layers`` residual layers when given (coarse decoding; -1 entries count as
        absent). ``reference=True`` decodes as GestureLSM's ``forward_decoder`` does, from the
        raw codebooks of an imported checkpoint (without ``embedding_proj``; where a tokenizer
        has no such codebooks, its codebooks are the raw ones and the default path is used).
        ``frames=(lo, hi)``: only those frames (:meth:`MotionTokenizer.decode`)."""
        z = self.quantizer.indices_to_latent(indices, num_layers)  # validates the indices
        if not reference or self.reference_codebooks is None:
            return self._run_decoder(z, frames)
        idx = indices[..., :num_layers].long()
        z = torch.zeros_like(z)
        for q in range(idx.shape[-1]):
            i = idx[..., q]
            code = self.reference_codebooks[q].to(z.dtype)[i.clamp(min=0)]
            z = z + code * (i >= 0).unsqueeze(-1).to(z.dtype)
        return self._run_decoder(z, frames)

    @classmethod
    def gesturelsm(cls, part: str, **overrides) -> RVQVAE:
        """GestureLSM's per-part tokenizer: 1024 codes x 6 layers, 128-d, width 512, depth 3, 4x.

        ``part`` is a :data:`BEAT2_PART_DIMS` name (an old alias such as ``lower_trans`` too)."""
        part = canonical_part_name(part)
        if part not in BEAT2_PART_DIMS:
            raise ValueError(f"part: expected one of {sorted(BEAT2_PART_DIMS)}, found {part!r}")
        return cls(BEAT2_PART_DIMS[part], **overrides)

    @classmethod
    def semantic_gesticulator(cls, part: str, **overrides) -> RVQVAE:
        """Semantic Gesticulator's part tokenizer: 4 layers x 512 bins, 512-d, 8x downsampling."""
        if part not in SEG_PART_DIMS:
            raise ValueError(f"part: expected one of {sorted(SEG_PART_DIMS)}, found {part!r}")
        cfg = dict(nb_code=512, code_dim=512, num_quantizers=4, down_t=3, width=512, depth=3)
        return cls(SEG_PART_DIMS[part], **{**cfg, **overrides})

    @classmethod
    def tiny(cls, input_dim: int = 78, **overrides) -> RVQVAE:
        """A CPU-test size: 64 codes x 3 layers, 16-d latents, width 32, depth 2."""
        cfg = dict(nb_code=64, code_dim=16, num_quantizers=3, width=32, depth=2)
        return cls(input_dim, **{**cfg, **overrides})
