"""Token priors: autoregressive generators over a tokenizer's motion codes.

``T2MGPT`` is T2M-GPT's text-conditioned GPT (condition token first, End = ``num_vq``,
Pad = ``num_vq + 1``); :func:`pad_codes` lays code sequences out as its training rows.
"""

from .sampling import KVCache, next_token
from .t2m_gpt import T2MGPT, corrupt_codes, pad_codes, sincos_table

__all__ = ["T2MGPT", "KVCache", "corrupt_codes", "next_token", "pad_codes", "sincos_table"]
