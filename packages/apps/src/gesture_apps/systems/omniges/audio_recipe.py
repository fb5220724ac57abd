"""``gesture train omniges-audio``: Omniges' audio codec (AudioLDM2's mel VAE + HiFi-GAN).

AudioLDM 2 (Liu et al., 2023, https://arxiv.org/abs/2308.05734) for the VAE, HiFi-GAN (Kong
et al., 2020, https://arxiv.org/abs/2010.05646) for the vocoder, trained with the losses of
:mod:`.audio_train` (mel L1 + small KL; multi-resolution STFT + mel L1, no discriminators), both
on the same batch of 16 kHz segments and summed into one loss, through the shared
:class:`~gesture_apps.runtime.Trainer` (checkpoints, exact resume, TensorBoard, progress bar).

The run folder gets ``checkpoints/step_*/`` (each with its ``audio_codec/``) and the export
``audio_codec/`` (:meth:`AudioCodec.save_pretrained`: ``vae/`` + ``vocoder/``), whose VAE
``scaling_factor`` is 1 / std of the training latents; ``gesture train omniges --audio-codec``
takes it or the run folder.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError
from gesture_apps.runtime import TrainConfig, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.systems.omniges.audio import MEL, AudioCodec, audioldm2_mel
from gesture_apps.systems.omniges.audio_train import vae_loss, vocoder_loss

logger = logging.getLogger(__name__)

EXPORT = "audio_codec"  # the export folder in the run
SCALE_SEGMENTS = 64  # training segments whose latent std sets the VAE's scaling_factor


@dataclass
class AudioModelConfig:
    """The ``model:`` section: ``audioldm2`` (AudioLDM2's VAE and vocoder) or ``tiny``."""

    size: Literal["audioldm2", "tiny"] = "audioldm2"


@dataclass
class AudioDataConfig:
    """The ``data:`` section: the synthetic corpus' speech or BEAT2's ``wave16k`` wavs."""

    source: str = "synthetic"  # or beat2:PATH
    num_clips: int = 8  # synthetic corpus
    seconds: float = 10.0
    seed: int = 0
    languages: tuple[str, ...] = ("en",)
    split: str | None = "train"  # BEAT2
    speakers: tuple[int, ...] | None = None
    # training segments, cut without overlap from every clip; rounded to a multiple of 0.08 s
    # (1280 samples) so the mel length is a multiple of 8
    segment_seconds: float = 0.64

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if kind not in ("synthetic", "beat2") or (kind == "beat2" and ":" not in self.source):
            raise ValueError(f"source: expected 'synthetic' or 'beat2:PATH', found {self.source!r}")
        if self.num_clips < 1 or self.seconds <= 0 or self.segment_seconds <= 0:
            raise ValueError("num_clips >= 1, seconds > 0 and segment_seconds > 0 required")

    @property
    def segment(self) -> int:
        """Segment length in samples."""
        return max(1, round(self.segment_seconds * MEL.sample_rate / MEL.chunk)) * MEL.chunk


@dataclass
class AudioLossConfig:
    kl_weight: float = 1e-4  # per latent element, as train_audio_codec
    vocoder_weight: float = 1.0


@dataclass
class AudioTrainConfig(TrainConfig):
    """The ``train:`` section; no weight EMA by default (the scaling factor is measured on the
    live VAE at export)."""

    ema_decay: float | None = None


@dataclass
class AudioCodecRecipeConfig:
    recipe: Literal["omniges-audio"] = "omniges-audio"
    model: AudioModelConfig = field(default_factory=AudioModelConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    loss: AudioLossConfig = field(default_factory=AudioLossConfig)
    train: AudioTrainConfig = field(default_factory=AudioTrainConfig)


def load_waves(cfg: AudioDataConfig) -> list[np.ndarray]:
    """Every clip's 16 kHz float32 wave ``(S_i,)``; BEAT2 errors name the folder or file."""
    if cfg.source == "synthetic":
        from gesture_data.datasets.synthetic import make_corpus

        clips = make_corpus(cfg.num_clips, cfg.seconds, cfg.seed, languages=cfg.languages)
        return [np.asarray(c.audio, dtype=np.float32) for c in clips]
    from gesture_data.datasets.beat2 import find_root, list_clips, load_audio

    root = Path(cfg.source.split(":", 1)[1]).expanduser()
    ids = list_clips(root, cfg.split, cfg.speakers)
    if not ids:
        raise ConfigError(f"{root}: no BEAT2 clips in split {cfg.split!r}")
    base = find_root(root)
    # the wavs alone: the audio codec needs neither motion nor words
    return [load_audio(base / "wave16k" / f"{cid}.wav", MEL.sample_rate) for cid in ids]


class WaveSegments(Dataset):
    """Item ``i``: the ``i``-th fixed segment ``(S,)`` of the corpus (a pure function of i)."""

    def __init__(self, waves: list[np.ndarray], segment: int):
        cut = [w[s : s + segment] for w in waves for s in range(0, w.size - segment + 1, segment)]
        if not cut:
            longest = max((w.size for w in waves), default=0)
            raise ConfigError(
                f"data.segment_seconds: every clip is shorter than one segment ({segment} "
                f"samples), longest {longest}"
            )
        self.segments = torch.from_numpy(np.stack(cut))  # (N, S)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> Tensor:
        return self.segments[i]


class AudioCodecObjective(nn.Module):
    """VAE loss + ``vocoder_weight`` x vocoder loss of one batch of waves ``(B, S)``. The two
    models share no weights, so one summed loss trains both as two separate runs would."""

    def __init__(self, codec: AudioCodec, loss: AudioLossConfig):
        super().__init__()
        self.codec = codec
        self.kl_weight, self.vocoder_weight = loss.kl_weight, loss.vocoder_weight

    def forward(self, wave: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            mel = audioldm2_mel(wave)  # (B, 1, T, 64), the target of both models
        vae, l1, kl = vae_loss(self.codec.vae, mel, kl_weight=self.kl_weight)
        voc = vocoder_loss(self.codec.vocoder, wave, mel)
        metrics = {"vae_l1": l1.detach(), "kl": kl.detach(), "vocoder": voc.detach()}
        return vae + self.vocoder_weight * voc, metrics


def build_codec(cfg: AudioModelConfig, seed: int) -> AudioCodec:
    return AudioCodec.tiny(seed) if cfg.size == "tiny" else AudioCodec.audioldm2(seed)


@dataclass
class AudioCodecRun:
    trainer: Trainer
    objective: AudioCodecObjective
    scale_mel: Tensor  # (n, 1, T, 64): the segments whose latent std sets scaling_factor
    config: AudioCodecRecipeConfig


def prepare(
    cfg: AudioCodecRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> AudioCodecRun:
    """Read the waves, build codec and trainer (and restore ``resume``); writes nothing yet."""
    dataset = WaveSegments(load_waves(cfg.data), cfg.data.segment)
    # a fixed, evenly spread subset: the same on every rank and after a resume
    pick = np.linspace(0, len(dataset) - 1, min(SCALE_SEGMENTS, len(dataset))).round()
    scale_mel = audioldm2_mel(dataset.segments[np.unique(pick).astype(int)])
    codec = build_codec(cfg.model, cfg.train.seed)
    with torch.no_grad():
        # start the decoder at the corpus' mean log-mel (about -6; silence is -11.5): Adam
        # would spend thousands of steps walking an output bias there from 0
        codec.vae.decoder.conv_out.bias.fill_(scale_mel.mean().item())
    objective = AudioCodecObjective(codec, cfg.loss)
    run_state: dict = {}
    trainer = Trainer(
        model=objective,
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(run_state["run"], folder),
        progress=progress,
    )
    run = run_state["run"] = AudioCodecRun(trainer, objective, scale_mel, cfg)
    if resume is not None:
        trainer.load_checkpoint(resume)
    n_params = sum(p.numel() for p in objective.parameters())
    logger.info("omniges-audio: %d parameters, %d segments", n_params, len(dataset))
    return run


def exported_codec(run: AudioCodecRun) -> AudioCodec:
    """A CPU copy of the trained codec whose ``scaling_factor`` is 1 / std of the posterior
    means of the training segments (train_audio_codec's rule)."""
    live: AudioCodec = run.trainer.raw_model.codec  # type: ignore[assignment]
    codec = copy.deepcopy(live).eval()  # measured on the training device, then moved
    device = next(codec.parameters()).device
    with torch.no_grad():
        means = [codec.vae.encode(m.to(device)).latent_dist.mean for m in run.scale_mel.split(8)]
    std = torch.cat(means).std().item()
    codec.vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    return codec.cpu()


def export(run: AudioCodecRun, folder: Path) -> None:
    """Write ``folder/audio_codec/`` (``vae/`` + ``vocoder/``)."""
    exported_codec(run).save_pretrained(folder / EXPORT)


def run(
    cfg: AudioCodecRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and write the export ``out_dir/audio_codec/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))
