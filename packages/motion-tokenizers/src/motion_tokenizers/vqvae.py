"""Single-codebook VQ-VAE motion tokenizer.

T2M-GPT: Generating Human Motion from Textual Descriptions with Discrete Representations
(Zhang et al., CVPR 2023, https://arxiv.org/abs/2301.06052): EMA codebook with dead-code reset,
nearest-code choice, no dropout in the residual blocks; the tokenizer behind KTubeUM's
utterance-to-motion models on the 263-d HumanML3D representation.
"""

from __future__ import annotations

from huggingface_hub import PyTorchModelHubMixin

from .base import MotionTokenizer
from .quantizers import Quantizer


class VQVAE(MotionTokenizer, PyTorchModelHubMixin):
    """``x (B, T, input_dim)`` -> indices ``(B, T / 4, 1)`` -> ``(B, T, input_dim)``."""

    def __init__(
        self,
        input_dim: int,
        *,
        nb_code: int = 512,
        code_dim: int = 512,
        down_t: int = 2,
        stride_t: int = 2,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.0,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = True,
        rotation_trick: bool = False,
        polyphase_upsample: bool = True,
    ):
        super().__init__()
        q = Quantizer(
            "vq",
            code_dim,
            codebook_size=nb_code,
            decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
            rotation_trick=rotation_trick,
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

    @classmethod
    def t2m_gpt(cls, input_dim: int = 263, **overrides) -> VQVAE:
        """T2M-GPT's tokenizer for the 263-d HumanML3D / KTubeUM representation."""
        return cls(input_dim, **overrides)

    @classmethod
    def tiny(cls, input_dim: int = 263, **overrides) -> VQVAE:
        cfg = dict(nb_code=64, code_dim=16, width=32, depth=2)
        return cls(input_dim, **{**cfg, **overrides})
