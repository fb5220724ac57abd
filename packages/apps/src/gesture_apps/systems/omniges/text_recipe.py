"""``gesture train omniges-text``: Omniges' text VAE (OmniFlow's, Li et al., CVPR 2025).

OmniFlow: Any-to-Any Generation with Multi-Modal Rectified Flows
(https://arxiv.org/abs/2412.01169): a frozen sentence encoder, a Q-Former pooling its token
features into ``(B, n_tokens, vae_dim)`` latents and a causal LM rebuilding the text from them
(:class:`~.text_vae.TextVAE`), trained on teacher-forced reconstruction through the shared
:class:`~gesture_apps.runtime.Trainer` (checkpoints, exact resume, TensorBoard, progress bar).

Sentences: the synthetic corpus' generator (default) or BEAT2's word alignments cut into the
windows the Omniges MMDiT sees (the words spoken in each ``window_seconds`` window). The run
folder gets ``checkpoints/step_*/`` (each with its ``text_vae/``) and the export ``text_vae/``;
``gesture train omniges --text-vae`` takes it or the run folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from transformers import AutoTokenizer

from gesture_apps.errors import ConfigError
from gesture_apps.runtime import TrainConfig, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.runtime.checkpoint import resolve_checkpoint
from gesture_apps.systems.omniges.text_vae import MINILM, TextVAE

logger = logging.getLogger(__name__)

EXPORT = "text_vae"  # the export folder in the run


@dataclass
class TextModelConfig:
    """The ``model:`` section: ``default`` (TextVAE's default config: 6-layer Q-Former, 6-layer
    GPT-2, both 384 wide) or ``tiny``; ``encoder`` is the frozen encoder (``minilm`` or a local
    transformers folder)."""

    size: Literal["default", "tiny"] = "default"
    encoder: str = MINILM


@dataclass
class TextDataConfig:
    """The ``data:`` section: synthetic sentences or BEAT2 TextGrid windows."""

    source: str = "synthetic"  # or beat2:PATH
    num_sentences: int = 4000  # synthetic: gesture_data.datasets.synthetic.sentences(n, seed)
    seed: int = 0
    languages: tuple[str, ...] = ("en",)
    split: str | None = "train"  # BEAT2
    speakers: tuple[int, ...] | None = None
    # BEAT2 windows: 64 frames at 30 fps, stride 20 (the Omniges / GestureLSM windows)
    window_seconds: float = 64 / 30
    stride_seconds: float = 20 / 30

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if kind not in ("synthetic", "beat2") or (kind == "beat2" and ":" not in self.source):
            raise ValueError(f"source: expected 'synthetic' or 'beat2:PATH', found {self.source!r}")
        if self.num_sentences < 1 or self.window_seconds <= 0 or self.stride_seconds <= 0:
            raise ValueError("num_sentences >= 1, window_seconds > 0, stride_seconds > 0 required")


@dataclass
class TextTrainConfig(TrainConfig):
    """The ``train:`` section: train_text_vae's settings (lr 2e-3, batch 64, weight decay 0.01,
    warm-up 50), without weight EMA unless asked for."""

    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    ema_decay: float | None = None


@dataclass
class TextVAERecipeConfig:
    recipe: Literal["omniges-text"] = "omniges-text"
    model: TextModelConfig = field(default_factory=TextModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TextTrainConfig = field(default_factory=TextTrainConfig)


def window_texts(words, duration: float, window: float, stride: float) -> list[str]:
    """The words ``[(start_s, end_s, word)]`` whose middle falls in each window
    ``[k * stride, k * stride + window)`` of a ``duration``-second clip, in order."""
    out = []
    start = 0.0
    while start + window <= duration + 1e-9:
        ws = [w for s, e, w in words if start <= (s + e) / 2 < start + window]
        if ws:
            out.append(" ".join(ws))
        start += stride
    return out


def load_sentences(cfg: TextDataConfig) -> list[str]:
    """The training texts; BEAT2 errors name the folder or file."""
    if cfg.source == "synthetic":
        from gesture_data.datasets.synthetic import sentences

        per = -(-cfg.num_sentences // len(cfg.languages))
        texts = [s for lang in cfg.languages for s in sentences(per, cfg.seed, lang)]
        return texts[: cfg.num_sentences]
    from gesture_data.datasets.beat2 import find_root, list_clips
    from gesture_data.datasets.textgrid import read_textgrid

    root = Path(cfg.source.split(":", 1)[1]).expanduser()
    ids = list_clips(root, cfg.split, cfg.speakers)
    base = find_root(root)
    texts = []
    for cid in ids:
        words = read_textgrid(base / "textgrid" / f"{cid}.TextGrid")["words"]
        end = max((e for _, e, _ in words), default=0.0)
        texts += window_texts(words, end, cfg.window_seconds, cfg.stride_seconds)
    if not texts:
        raise ConfigError(f"{root}: no words in the TextGrids of split {cfg.split!r}")
    return texts


class SentenceFeatures(Dataset):
    """Item ``i``: the frozen encoder's features ``(L, H)`` and mask ``(L,)`` of sentence ``i``
    (computed once for all sentences, padded to the longest) and ``index`` i."""

    def __init__(self, vae: TextVAE, texts: list[str]):
        self.texts = texts
        feats, masks = [], []
        for s in range(0, len(texts), 256):
            h, m = vae.encoder_features(texts[s : s + 256])
            feats.append(h.cpu())
            masks.append(m.cpu())
        n = max(h.shape[1] for h in feats)
        self.features = torch.cat([nn.functional.pad(h, (0, 0, 0, n - h.shape[1])) for h in feats])
        self.masks = torch.cat([nn.functional.pad(m, (0, n - m.shape[1])) for m in masks])

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "mask": self.masks[i], "index": i}


class TextVAEObjective(nn.Module):
    """Teacher-forced reconstruction CE of a batch of cached sentence features (OmniFlow's
    latent noise ``sample=True`` included, as :func:`~.text_vae.train_text_vae`)."""

    def __init__(self, vae: TextVAE, texts: list[str]):
        super().__init__()
        self.vae = vae
        self.texts = texts

    def forward(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        mask = batch["mask"]
        width = int(mask.sum(1).max())  # drop the columns that are padding in every row
        z = self.vae.encode_features(batch["features"][:, :width], mask[:, :width], sample=True)
        out = self.vae.loss_from_latents(z, [self.texts[i] for i in batch["index"].tolist()])
        return out.loss, {"accuracy": out.accuracy}


def build_text_vae(cfg: TextModelConfig) -> TextVAE:
    return TextVAE.tiny(encoder=cfg.encoder) if cfg.size == "tiny" else TextVAE(encoder=cfg.encoder)


@dataclass
class TextVAERun:
    trainer: Trainer
    objective: TextVAEObjective
    config: TextVAERecipeConfig


def prepare(
    cfg: TextVAERecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> TextVAERun:
    """Read the sentences, build the VAE, its tokenizer and the trainer (and restore
    ``resume``); writes nothing yet."""
    texts = sorted(set(load_sentences(cfg.data)))  # each distinct sentence once
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    vae = build_text_vae(cfg.model)
    checkpoint = resolve_checkpoint(resume) if resume is not None else None
    if checkpoint is not None and (checkpoint / EXPORT).is_dir():
        # the resumed run's own tokenizer: its ids are what the decoder learned
        vae.tokenizer = AutoTokenizer.from_pretrained(checkpoint / EXPORT, local_files_only=True)
    else:
        vae.fit_tokenizer(texts)
    dataset = SentenceFeatures(vae, texts)
    objective = TextVAEObjective(vae, texts)
    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(t, folder),
        progress=progress,
    )
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
    n_params = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    logger.info("omniges-text: %d trained parameters, %d sentences", n_params, len(dataset))
    return TextVAERun(trainer, objective, cfg)


def export(trainer: Trainer, folder: Path) -> None:
    """Write ``folder/text_vae/`` (:meth:`TextVAE.save_pretrained`)."""
    trainer.raw_model.vae.save_pretrained(folder / EXPORT)  # type: ignore[union-attr]


def run(
    cfg: TextVAERecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and write the export ``out_dir/text_vae/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r.trainer, tmp))
