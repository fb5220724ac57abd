"""Motion tokenizers: VQ-VAE (T2M-GPT), RVQ-VAE (MoMask/GestureLSM), FSQ/LFQ variants and a
multi-part tokenizer, built on vector-quantize-pytorch."""

from .base import MotionTokenizer, TokenizerOutput, pad_to_multiple
from .convert import from_reference_checkpoint
from .encdec import Conv1dDecoder, Conv1dEncoder, ResConv1DBlock, Resnet1D
from .errors import CheckpointError, TokenizerInputError
from .losses import acceleration_loss, reconstruction_loss, velocity_loss
from .multipart import MultiPartTokenizer
from .quantizers import Quantizer, QuantizerOutput, codebook_perplexity
from .rvqvae import BEAT2_PART_DIMS, PART_ALIASES, RVQVAE, SEG_PART_DIMS, canonical_part_name
from .sg_rvq import SGRVQVAE
from .training import (
    TokenizerLoss,
    TokenizerTrainConfig,
    TokenizerTrainer,
    lr_factor,
    tokenizer_loss,
)
from .vqvae import VQVAE

__version__ = "0.1.0"

__all__ = [
    "BEAT2_PART_DIMS",
    "PART_ALIASES",
    "RVQVAE",
    "SEG_PART_DIMS",
    "SGRVQVAE",
    "VQVAE",
    "CheckpointError",
    "Conv1dDecoder",
    "Conv1dEncoder",
    "MotionTokenizer",
    "MultiPartTokenizer",
    "Quantizer",
    "QuantizerOutput",
    "ResConv1DBlock",
    "Resnet1D",
    "TokenizerInputError",
    "TokenizerLoss",
    "TokenizerOutput",
    "TokenizerTrainConfig",
    "TokenizerTrainer",
    "acceleration_loss",
    "canonical_part_name",
    "codebook_perplexity",
    "from_reference_checkpoint",
    "lr_factor",
    "pad_to_multiple",
    "reconstruction_loss",
    "tokenizer_loss",
    "velocity_loss",
]
