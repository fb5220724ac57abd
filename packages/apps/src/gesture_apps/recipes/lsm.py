"""``gesture train lsm``: GestureLSM audio-to-gesture on frozen multi-part tokenizer latents.

Liu et al., "GestureLSM" (ICCV 2025). The motion of every training window is encoded once by the
frozen per-part RVQ-VAEs of a ``gesture train tokenizer`` export (continuous latents divided by
the tokenizer's ``latent_scale``); a :class:`~flow_backbones.SpatialTemporalDenoiser` learns the
shortcut objective on them (:class:`~flow_backbones.ShortcutLoss`: flow matching on 3/4 of the
batch with 10% condition dropout, self-consistency on 1/4 with 80%), conditioned on

* audio: GestureLSM's ``onset+amplitude`` (16 kHz, 2 channels) through a strided conv encoder
  (total stride 540 ~ 16000/30) whose output is fitted to the motion frames;
* words: per-frame vocabulary indices through a learned embedding. While training, each spoken
  word is replaced by ``<unk>`` with probability ``model.word_drop`` (whole words, never
  silence), so the ``<unk>`` embedding that every out-of-vocabulary word maps to at inference is
  trained rather than left at its random initial value;
* both fused by a linear layer and average-pooled to the latent frame rate, so feature ``n``
  covers latent frame ``n`` (the denoiser's cross-attention is frame-aligned);
* seed frames: the first ``seed_frames`` latents of the window (at inference: the last latents
  of the previous window). They are zeroed with probability ``seed_drop`` so that the first
  window of a recording, which has no predecessor, is in distribution.

Deviation from the reference: the audio encoder uses no BatchNorm (a batch statistic would make
data-parallel runs and resumes depend on the batch split); the word embedding is learned from
scratch instead of FastText (no FastText vectors ship with any package here).

The run folder gets ``checkpoints/step_*/`` (resumable; each holds an ``lsm/`` export) and
``lsm/``: ``config.json``, ``model.safetensors``, ``model_ema.safetensors``, ``vocab.txt``,
``normalizer.npz`` and ``tokenizer/`` (the frozen tokenizers), everything
``gesture generate --checkpoint`` needs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import Tensor, nn
from torch.utils.data import Dataset

from flow_backbones import ShortcutLoss, SpatialTemporalDenoiser
from gesture_data.datasets.beat2 import Vocabulary
from motion_tokenizers import MultiPartTokenizer
from motion_tokenizers.errors import CheckpointError

from ..errors import ConfigError
from ..runtime import TrainConfig, Trainer, TrainResult, to_dict
from ..runtime.checkpoint import resolve_checkpoint
from .data import DataConfig, PartWindows, check_normalizer, load_windows
from .tokenizer import DATA_KEYS

logger = logging.getLogger(__name__)

EXPORT = "lsm"

# per size: audio conv channels, audio width, word width, condition width (= denoiser cond_dim)
SIZES = {
    "gesturelsm": dict(audio_channels=(64, 64, 128, 256), audio_dim=256, word_dim=256, cond=768),
    "tiny": dict(audio_channels=(8, 8, 16, 16), audio_dim=16, word_dim=8, cond=12),
}
AUDIO_STRIDES = (5, 6, 6, 3)  # 540 samples per step, ~ one 30 fps frame at 16 kHz


@dataclass
class LSMModelConfig:
    """The ``model:`` section. Unset sizes take the ``size`` preset's value."""

    size: Literal["gesturelsm", "tiny"] = "gesturelsm"
    parts: tuple[str, ...] = ("upper", "hands", "lower_trans")
    latent_dim: int | None = None
    ff_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    cross_layers: int | None = None
    seed_frames: int | None = None
    dropout: float | None = None
    audio_channels: tuple[int, ...] | None = None
    audio_dim: int | None = None
    word_dim: int | None = None
    seed_drop: float = 0.1
    # share of spoken words replaced by <unk> in training: 0 would leave <unk> (every word
    # unseen in training) untrained; 0.1 keeps 90% of the word signal while each of the
    # embedding's updates still sees ~10% <unk> frames of speech
    word_drop: float = 0.1

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("parts: at least one tokenizer part is required")
        for name in ("seed_drop", "word_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], found {value}")
        if self.audio_channels is not None and len(self.audio_channels) != len(AUDIO_STRIDES):
            raise ValueError(f"audio_channels: expected {len(AUDIO_STRIDES)} values")


@dataclass
class ShortcutConfig:
    """The ``loss:`` section (GestureLSM's values by default)."""

    consistency_fraction: float = 0.25
    min_log2: int = 1
    max_log2: int = 7
    cond_drop_flow: float = 0.1
    cond_drop_consistency: float = 0.8
    t_sampler: Literal["beta", "uniform", "logit_normal"] = "beta"


@dataclass
class SampleConfig:
    """Default inference settings stored with the export (``gesture generate`` may override)."""

    steps: int = 2
    guidance: float = 2.0


def _lsm_data() -> DataConfig:
    return DataConfig(pose_length=128, stride=20)


@dataclass
class LSMRecipeConfig:
    recipe: Literal["lsm"] = "lsm"
    tokenizer: str | None = None  # a `gesture train tokenizer` run folder or its tokenizer/
    # the un-averaged tokenizer, as GestureLSM uses it ("ema" only exists when the tokenizer run
    # set train.ema_decay; then its codebooks are averaged with its weights)
    tokenizer_weights: Literal["ema", "model"] = "model"
    model: LSMModelConfig = field(default_factory=LSMModelConfig)
    data: DataConfig = field(default_factory=_lsm_data)
    loss: ShortcutConfig = field(default_factory=ShortcutConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----- model -------------------------------------------------------------------------------


class AudioWordEncoder(nn.Module):
    """``audio (B, L_a, 2)`` at 16 kHz + ``words (B, L)`` -> ``(B, L / factor, cond_dim)``.

    Strided convolutions (strides 5, 6, 6, 3) bring the audio to ~30 steps per second; the
    result is cut or padded (repeating the last step) to the ``L`` motion frames, concatenated
    with the projected word embeddings, fused to ``cond_dim`` and average-pooled by the
    tokenizer's downsampling ``factor`` to the latent frame rate."""

    def __init__(
        self,
        *,
        vocab_size: int,
        cond_dim: int,
        factor: int,
        audio_in: int = 2,
        audio_channels: tuple[int, ...] = (64, 64, 128, 256),
        audio_dim: int = 256,
        word_dim: int = 256,
    ) -> None:
        super().__init__()
        self.factor = factor
        layers: list[nn.Module] = []
        c_in = audio_in
        for c, s in zip(audio_channels, AUDIO_STRIDES, strict=True):
            layers += [nn.Conv1d(c_in, c, 15, stride=s, padding=7), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv1d(c_in, audio_dim, 3, padding=1))
        self.audio = nn.Sequential(*layers)
        self.words = nn.Embedding(vocab_size, word_dim)
        self.word_proj = nn.Linear(word_dim, audio_dim)
        self.fuse = nn.Linear(2 * audio_dim, cond_dim)

    def forward(self, audio: Tensor, words: Tensor) -> Tensor:
        L = words.shape[1]
        a = self.audio(audio.transpose(1, 2)).transpose(1, 2)  # (B, ~L, audio_dim)
        if a.shape[1] >= L:
            a = a[:, :L]
        else:
            a = torch.cat([a, a[:, -1:].expand(-1, L - a.shape[1], -1)], dim=1)
        w = self.word_proj(self.words(words))
        h = self.fuse(torch.cat([a, w], dim=-1))  # (B, L, cond_dim)
        return F.avg_pool1d(h.transpose(1, 2), self.factor).transpose(1, 2)


class LSMGenerator(nn.Module):
    """The trained part of GestureLSM: condition encoder + spatial-temporal denoiser."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        self.encoder = AudioWordEncoder(
            vocab_size=spec["vocab_size"],
            cond_dim=spec["denoiser"]["cond_dim"],
            factor=spec["factor"],
            audio_channels=tuple(spec["audio_channels"]),
            audio_dim=spec["audio_dim"],
            word_dim=spec["word_dim"],
        )
        den = SpatialTemporalDenoiser
        base = den.tiny if spec.get("denoiser_size") == "tiny" else den.gesturelsm
        self.denoiser = base(**spec["denoiser"])

    @property
    def seed_frames(self) -> int:
        return self.denoiser.seed_frames


def build_spec(cfg: LSMRecipeConfig, tokenizer: MultiPartTokenizer, vocab_size: int) -> dict:
    """Everything needed to rebuild :class:`LSMGenerator` and run it (stored as config.json)."""
    m = cfg.model
    size = SIZES[m.size]
    dims = set(tokenizer.latent_dims.values())
    if len(dims) != 1:
        raise ConfigError(f"model.parts: tokenizer parts have different latent sizes {dims}")
    factor = tokenizer.downsample_factor
    if cfg.data.pose_length % factor:
        raise ConfigError(
            f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
            f"downsampling factor {factor}"
        )
    n_lat = cfg.data.pose_length // factor
    den_cls = SpatialTemporalDenoiser
    base = den_cls.tiny if m.size == "tiny" else den_cls.gesturelsm
    keys = ("latent_dim", "ff_size", "num_layers", "num_heads", "cross_layers", "seed_frames")
    overrides = {k: getattr(m, k) for k in (*keys, "dropout") if getattr(m, k) is not None}
    den = dict(
        num_parts=len(m.parts),
        part_dim=dims.pop(),
        cond_dim=size["cond"],
        max_cond_len=n_lat,
        **overrides,
    )
    probe = base(**den)  # the preset's defaults filled in
    seed_frames = probe.seed_frames
    if seed_frames >= n_lat:
        raise ConfigError(
            f"model.seed_frames: {seed_frames} must be fewer than the {n_lat} latent "
            "frames of a window"
        )
    return {
        "version": 1,
        "parts": list(m.parts),
        "pose_length": cfg.data.pose_length,
        "factor": factor,
        "fps": 30.0,
        "sample_rate": 16000,
        "vocab_size": vocab_size,
        "audio_channels": list(m.audio_channels or size["audio_channels"]),
        "audio_dim": m.audio_dim or size["audio_dim"],
        "word_dim": m.word_dim or size["word_dim"],
        "denoiser_size": m.size,
        "denoiser": den,
        "sample": asdict(cfg.sample),
    }


def drop_words(words: Tensor, p: float, unk: int = 1, pad: int = 0) -> Tensor:
    """``(B, L)`` per-frame word indices with each spoken word replaced by ``unk`` with
    probability ``p`` (torch's RNG, so resumes repeat it).

    A word is a run of equal indices: all of its frames are dropped together, as an unknown
    word at inference covers all of its frames. Silence (``pad``) stays silence."""
    if p <= 0.0:
        return words
    starts = torch.ones_like(words, dtype=torch.bool)
    starts[:, 1:] = words[:, 1:] != words[:, :-1]
    run = starts.long().cumsum(1) - 1  # (B, L) index of each frame's word, < L
    drop = torch.rand(words.shape, device=words.device).gather(1, run) < p
    return torch.where(drop & (words != pad), torch.full_like(words, unk), words)


class LSMObjective(nn.Module):
    """``forward(batch) -> (loss, metrics)``; the whole shortcut loss in one call (DDP)."""

    def __init__(
        self,
        generator: LSMGenerator,
        loss: ShortcutLoss,
        seed_drop: float,
        word_drop: float = 0.0,
    ):
        super().__init__()
        self.generator = generator
        self.loss = loss
        self.seed_drop = seed_drop
        self.word_drop = word_drop

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x1 = batch["latents"]
        g = self.generator
        words = batch["words"]
        if self.training:
            words = drop_words(words, self.word_drop, Vocabulary.UNK, Vocabulary.PAD)
        feats = g.encoder(batch["audio"], words)
        cond: dict[str, Tensor] = {"features": feats}
        s = g.seed_frames
        if s:
            keep = (torch.rand(x1.shape[0], device=x1.device) >= self.seed_drop).to(x1.dtype)
            cond["seed"] = x1[:, :s] * keep[:, None, None]
        out = self.loss(g.denoiser, x1, cond)
        return out.loss, {"flow": out.flow, "consistency": out.consistency}


def _objective_loss(model: nn.Module, batch):
    return model(batch)


# ----- data --------------------------------------------------------------------------------


class LatentWindows(Dataset):
    """Item ``{"latents": (N, D), "audio": (L_a, 2), "words": (L,)}`` per training window."""

    def __init__(self, windows, latents: Tensor):
        self.windows, self.latents = windows, latents
        spf = windows.sample_rate / windows.fps
        self.spf, self.la = spf, round(windows.pose_length * spf)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        ci, s = (int(v) for v in self.windows.index[i])
        c = self.windows.clips[ci]
        a = c["audio"]
        a0 = round(s * self.spf)
        aw = np.zeros((self.la, a.shape[1]), np.float32)
        seg = np.asarray(a[a0 : a0 + self.la])
        aw[: len(seg)] = seg
        words = np.array(c["words"][s : s + self.windows.pose_length], np.int64)
        return {
            "latents": self.latents[i],
            "audio": torch.from_numpy(aw),
            "words": torch.from_numpy(words),
        }


def tokenizer_folder(path: str | Path) -> Path:
    """A tokenizer run folder, its ``tokenizer/`` export, or a checkpoint holding one."""
    p = Path(path).expanduser()
    for cand in (p, p / "tokenizer"):
        if (cand / "normalizer.npz").is_file() and (cand / "model").is_dir():
            return cand
    if (p / "checkpoints" / "latest.txt").is_file():
        ck = resolve_checkpoint(p)
        if (ck / "tokenizer" / "normalizer.npz").is_file():
            return ck / "tokenizer"
    raise CheckpointError(
        f"{p}: not a tokenizer export (expected normalizer.npz and model/ from "
        "`gesture train tokenizer`)"
    )


def load_tokenizer(cfg: LSMRecipeConfig):
    """(frozen part-subset MultiPartTokenizer, Normalizer, export folder)."""
    from gesture_data import Normalizer

    if not cfg.tokenizer:
        raise ConfigError(
            "tokenizer: pass the folder of a `gesture train tokenizer` run "
            "(--tokenizer DIR or tokenizer=DIR)"
        )
    folder = tokenizer_folder(cfg.tokenizer)
    sub = "model_ema" if cfg.tokenizer_weights == "ema" else "model"
    if not (folder / sub).is_dir():
        sub = "model"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
            full = MultiPartTokenizer.from_pretrained(folder / sub)
    except (ValueError, OSError):
        raise
    except Exception as e:  # safetensors and json raise their own types for broken files
        message = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{folder / sub}: cannot load the tokenizer ({message})") from None
    missing = [p for p in cfg.model.parts if p not in full.part_names]
    if missing:
        raise ConfigError(f"model.parts: {missing} not in the tokenizer's {full.part_names}")
    tok = MultiPartTokenizer(
        {p: full.parts[p] for p in cfg.model.parts}, latent_scale=full.latent_scale
    )
    tok.eval().requires_grad_(False)
    check_finite(tok, folder / sub)
    normalizer = Normalizer.load(folder / "normalizer.npz")
    check_normalizer(normalizer, folder / "normalizer.npz", cfg.model.parts)
    return tok, normalizer, folder


def check_finite(module: nn.Module, where: str | Path) -> None:
    """Refuse weights with NaN or inf: they load without complaint and turn every output into
    NaN (a run trains on with loss nan; generation writes NaN motion)."""
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {name!r} has non-finite values")


@torch.no_grad()
def encode_windows(tok: MultiPartTokenizer, parts_ds: PartWindows, batch: int = 64) -> Tensor:
    from gesture_data.datasets.windows import collate

    names = tok.part_names
    out = []
    for s in range(0, len(parts_ds), batch):
        items = collate([parts_ds[i] for i in range(s, min(s + batch, len(parts_ds)))])
        out.append(tok.encode_continuous({n: items[DATA_KEYS[n]] for n in names}))
    return torch.cat(out)


# ----- run ---------------------------------------------------------------------------------


@dataclass
class LSMRun:
    trainer: Trainer
    objective: LSMObjective
    tokenizer: MultiPartTokenizer
    normalizer: Any
    vocab: Any
    spec: dict
    config: LSMRecipeConfig


def prepare(
    cfg: LSMRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> LSMRun:
    """Load the frozen tokenizers, encode the training windows, build model and trainer."""
    tok, normalizer, _ = load_tokenizer(cfg)
    if cfg.data.pose_length % tok.downsample_factor:  # before the windows are encoded with it
        raise ConfigError(
            f"data.pose_length: {cfg.data.pose_length} is not a multiple of the tokenizer's "
            f"downsampling factor {tok.downsample_factor}"
        )
    windows, vocab = load_windows(cfg.data)
    data_parts = [DATA_KEYS[p] for p in cfg.model.parts]
    latents = encode_windows(tok, PartWindows(windows, data_parts, normalizer))
    dataset = LatentWindows(windows, latents)
    spec = build_spec(cfg, tok, len(vocab))
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    loss = ShortcutLoss(**asdict(cfg.loss))
    objective = LSMObjective(LSMGenerator(spec), loss, cfg.model.seed_drop, cfg.model.word_drop)
    from gesture_data.datasets.windows import collate

    run_state: dict[str, Any] = {}
    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=_objective_loss,
        config=cfg.train,
        out_dir=out_dir,
        collate_fn=collate,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(run_state["run"], folder),
        progress=progress,
    )
    run = LSMRun(trainer, objective, tok, normalizer, vocab, spec, cfg)
    run_state["run"] = run
    if resume is not None:
        trainer.load_checkpoint(resume)
    n_params = sum(p.numel() for p in objective.parameters())
    logger.info(
        "lsm: %d parameters, %d training windows of %d latent frames x %d",
        n_params,
        len(dataset),
        latents.shape[1],
        latents.shape[2],
    )
    return run


def export(run: LSMRun, folder: Path) -> None:
    """Write ``folder/lsm/``: config, weights (+ EMA), vocabulary, normaliser, tokenizers."""
    out = folder / EXPORT
    out.mkdir(parents=True, exist_ok=True)
    gen = run.trainer.raw_model.generator  # type: ignore[union-attr]
    save_model(gen, str(out / "model.safetensors"))
    if run.trainer.ema is not None:
        averaged = copy.deepcopy(run.trainer.raw_model)
        run.trainer.ema.copy_to(averaged)
        save_model(averaged.generator, str(out / "model_ema.safetensors"))
    (out / "config.json").write_text(json.dumps(run.spec, indent=2), encoding="utf-8")
    (out / "vocab.txt").write_text("\n".join(run.vocab.itos) + "\n", encoding="utf-8")
    run.normalizer.save(out / "normalizer.npz")
    run.tokenizer.save_pretrained(out / "tokenizer")


def run(
    cfg: LSMRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and copy the final export to ``out_dir/lsm/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))
