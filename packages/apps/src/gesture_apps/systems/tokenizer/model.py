"""The tokenizer system's networks and training objective."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gesture_apps.systems.tokenizer.config import TokenizerModelConfig
from motion_tokenizers import BEAT2_PART_DIMS, RVQVAE, MultiPartTokenizer, tokenizer_loss


def build_tokenizer(cfg: TokenizerModelConfig) -> RVQVAE | MultiPartTokenizer:
    keys = ("nb_code", "code_dim", "num_quantizers", "width", "depth", "down_t", "dropout")
    keys += ("stochastic_sample_codes", "quantize_dropout_prob")
    overrides: dict[str, Any] = {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
    overrides["quantizer"] = cfg.quantizer
    make = RVQVAE.tiny if cfg.size == "tiny" else RVQVAE
    toks = {p: make(BEAT2_PART_DIMS[p], **overrides) for p in cfg.parts}
    if cfg.kind == "rvqvae":
        return toks[cfg.parts[0]]
    return MultiPartTokenizer(toks, latent_scale=cfg.latent_scale)


class TokenizerObjective(nn.Module):
    """Wraps the tokenizer so the whole loss runs inside ``forward`` (one DDP call).

    ``forward({part: (B, T, C)}) -> (loss, {metric: 0-d tensor})``."""

    def __init__(self, tokenizer: RVQVAE | MultiPartTokenizer, parts: tuple[str, ...], loss):
        super().__init__()
        self.tokenizer = tokenizer
        self.part_names = tuple(parts)
        self.loss_cfg = loss

    def part(self, name: str) -> RVQVAE:
        if isinstance(self.tokenizer, MultiPartTokenizer):
            return self.tokenizer.parts[name]
        return self.tokenizer

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.loss_cfg
        total, metrics = 0.0, {}
        dtype = next(self.parameters()).dtype  # a float64 model (parity checks) gets float64 data
        for name in self.part_names:
            x = batch[name].to(dtype)
            out = self.part(name)(x)
            terms = tokenizer_loss(
                out,
                x,
                recon=cfg.recon,
                commit_weight=cfg.commit_weight,
                vel_weight=cfg.vel_weight,
                acc_weight=cfg.acc_weight,
            )
            total = total + terms.loss
            metrics[f"recon/{name}"] = terms.recon.detach()
            metrics[f"commit/{name}"] = out.commit_loss.detach()
            metrics[f"perplexity/{name}"] = out.perplexity.detach()
        return total, metrics
