"""The tokenizer system's networks and training objective."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gesture_apps.systems.tokenizer.config import TokenizerModelConfig
from motion_tokenizers import (
    BEAT2_PART_DIMS,
    RVQVAE,
    VQVAE,
    MultiPartTokenizer,
    reconstruction_loss,
    tokenizer_loss,
)

HUMANML3D_DIM = 263  # the 22-joint HumanML3D / KTubeUM feature vector
HUMANML3D_JOINTS = 22


def build_tokenizer(cfg: TokenizerModelConfig) -> RVQVAE | MultiPartTokenizer | VQVAE:
    if cfg.kind == "vqvae":
        keys = ("nb_code", "code_dim", "width", "depth", "down_t", "dropout")
        kw: dict[str, Any] = {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
        make = VQVAE.tiny if cfg.size == "tiny" else VQVAE.t2m_gpt
        return make(HUMANML3D_DIM, **kw)
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

    def part(self, name: str) -> RVQVAE | VQVAE:
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
            if cfg.local_pos_weight > 0:
                # T2M-GPT's "velocity" term: the root-relative joint positions slice
                ric = slice(4, (HUMANML3D_JOINTS - 1) * 3 + 4)
                pos = reconstruction_loss(out.recon.to(dtype)[..., ric], x[..., ric], cfg.recon)
                total = total + cfg.local_pos_weight * pos
                metrics[f"local_pos/{name}"] = pos.detach()
            metrics[f"recon/{name}"] = terms.recon.detach()
            metrics[f"commit/{name}"] = out.commit_loss.detach()
            metrics[f"perplexity/{name}"] = out.perplexity.detach()
        return total, metrics
