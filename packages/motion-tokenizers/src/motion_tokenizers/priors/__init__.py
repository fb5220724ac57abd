"""Token priors: autoregressive generators over a tokenizer's motion codes.

``T2MGPT`` is T2M-GPT's text-conditioned GPT (condition token first, End = ``num_vq``,
Pad = ``num_vq + 1``); :func:`pad_codes` lays code sequences out as its training rows.
``SGCoarseGPT`` / ``SGFineGPT`` are Semantic Gesticulator's layer-0 and layer-1..3 GPTs over its
residual-VQ codes; :func:`sg_generate_codes` runs its generation.
"""

from .sampling import KVCache, next_token
from .semantic_gesticulator import (
    SGCoarseGPT,
    SGFineGPT,
    sg_fine_positions,
    sg_generate_codes,
    sg_regenerate_fine,
)
from .t2m_gpt import T2MGPT, corrupt_codes, pad_codes, sincos_table

__all__ = [
    "T2MGPT",
    "KVCache",
    "SGCoarseGPT",
    "SGFineGPT",
    "corrupt_codes",
    "next_token",
    "pad_codes",
    "sg_fine_positions",
    "sg_generate_codes",
    "sg_regenerate_fine",
    "sincos_table",
]
