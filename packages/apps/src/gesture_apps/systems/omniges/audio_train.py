"""Training Omniges' audio codec (:class:`~.audio.AudioCodec`) from scratch on CPU.

HiFi-GAN (Kong et al., 2020, https://arxiv.org/abs/2010.05646) trains its generator with
discriminators plus a mel L1 loss; Parallel WaveGAN (Yamamoto et al., 2020,
https://arxiv.org/abs/1910.11480) adds a multi-resolution STFT loss. We keep the two
reconstruction losses and drop the discriminators (they would dominate a CPU budget); the
VAE is AudioLDM2's: mel L1 plus a small KL. Kept apart from ``audio.py`` so that inference
never imports training code.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError, GenerationError, TrainingError
from .audio import MEL, AudioCodec, audioldm2_mel

log = logging.getLogger(__name__)

__all__ = [
    "AudioCodecTrainConfig",
    "latent_std",
    "multi_resolution_stft_loss",
    "train_audio_codec",
    "vae_loss",
    "vocoder_loss",
]


@dataclass
class AudioCodecTrainConfig:
    """Settings of :func:`train_audio_codec`; a training CLI can fill it from a preset."""

    steps: int = 1000
    batch_size: int = 8
    segment_seconds: float = 0.64  # rounded to a multiple of 1280 samples (0.08 s)
    lr: float = 2e-3
    seed: int = 0
    vae: bool = True
    vocoder: bool = True
    kl_weight: float = 1e-4  # on the per-element KL: keeps the latents near N(0, I) only mildly
    progress: bool = False

    def train(self, waves, codec: AudioCodec | None = None) -> AudioCodec:
        return train_audio_codec(waves, codec=codec, **asdict(self))


def _stft_mag(x: Tensor, n_fft: int, hop: int) -> Tensor:
    win = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=win, return_complex=True)
    # sqrt(|X|^2 + eps): abs() has an infinite gradient at exactly 0 (silent padding)
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-7)


def multi_resolution_stft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Parallel WaveGAN's auxiliary loss (Yamamoto et al., 2020): spectral convergence plus
    log-magnitude L1, averaged over three resolutions. ``pred``, ``target``: ``(B, S)``."""
    total = pred.new_zeros(())
    for n_fft, hop in ((256, 64), (512, 128), (1024, 256)):
        p, t = _stft_mag(pred, n_fft, hop), _stft_mag(target, n_fft, hop)
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
        total = total + sc + F.l1_loss(torch.log(p), torch.log(t))
    return total / 3


def vae_loss(
    vae, mel: Tensor, *, kl_weight: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One VAE step's objective on ``mel (B, 1, T, 64)``: (loss, mel L1, per-element KL).

    The decoder reads a posterior draw (``generator``, else the global RNG); the KL is divided
    by the latent size so ``kl_weight`` does not depend on the segment length."""
    dist = vae.encode(mel).latent_dist
    recon = vae.decode(dist.sample(generator)).sample
    kl = dist.kl().mean() / dist.mean[0].numel()  # per latent element
    l1 = F.l1_loss(recon, mel)
    return l1 + kl_weight * kl, l1, kl


def vocoder_loss(vocoder, wave: Tensor, mel: Tensor) -> Tensor:
    """One vocoder step's objective: ``mel (B, 1, T, 64)`` of ``wave (B, S)`` -> a wave whose
    multi-resolution STFT and mel match (HiFi-GAN's losses without the discriminators)."""
    pred = vocoder(mel[:, 0])[:, : wave.shape[1]]
    return multi_resolution_stft_loss(pred, wave) + F.l1_loss(audioldm2_mel(pred), mel)


@torch.no_grad()
def latent_std(vae, mel: Tensor) -> float:
    """Std of the posterior means of ``mel (B, 1, T, 64)``: the VAE's ``scaling_factor`` is set
    to its inverse (Stable Diffusion's recipe), so the flow model sees unit-variance latents."""
    return vae.encode(mel).latent_dist.mean.std().item()


def _segments(waves, segment: int) -> list[np.ndarray]:
    clips = []
    for i, w in enumerate(waves):
        a = np.asarray(w)
        if a.ndim != 1 or a.dtype.kind != "f":
            raise GenerationError(
                f"waves[{i}]: expected a 1-D float array (S,), found {a.dtype} {a.shape}"
            )
        if not np.isfinite(a).all():
            raise GenerationError(f"waves[{i}]: contains NaN or infinite samples")
        if a.size < segment:
            raise GenerationError(
                f"waves[{i}]: {a.size} samples, shorter than one training segment ({segment})"
            )
        clips.append(a.astype(np.float32))
    if not clips:
        raise GenerationError("waves: no training clips given")
    return clips


def _batch(clips, segment, batch_size, rng) -> Tensor:
    idx = rng.integers(len(clips), size=batch_size)
    out = []
    for i in idx:
        start = rng.integers(clips[i].size - segment + 1)
        out.append(clips[i][start : start + segment])
    return torch.from_numpy(np.stack(out))


def _check_loss(loss: Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"{what}: loss became {loss.item()} at step {step} (diverged)")


def train_audio_codec(
    waves,
    *,
    steps: int = 1000,
    batch_size: int = 8,
    segment_seconds: float = 0.64,
    lr: float = 2e-3,
    seed: int = 0,
    vae: bool = True,
    vocoder: bool = True,
    kl_weight: float = 1e-4,
    progress: bool = False,
    codec: AudioCodec | None = None,
) -> AudioCodec:
    """Train (a fresh ``AudioCodec.tiny(seed)`` or ``codec``) on random segments of ``waves``.

    Args:
        waves: list of 1-D float32 arrays (S_i,) at 16 kHz, each at least one segment long.
        steps: optimiser steps for each of the VAE and the vocoder.
        segment_seconds: segment length, rounded to a multiple of 0.08 s (T multiple of 8).

    The VAE learns mel L1 reconstruction plus ``kl_weight`` times the per-element KL; its
    ``scaling_factor`` is then set to 1 / std of the training latents (Stable Diffusion's
    recipe), so the flow model sees unit-variance latents. The vocoder learns
    ``mel -> wave`` with a multi-resolution STFT loss plus mel L1 (HiFi-GAN's losses without the
    discriminators). Returns the codec in eval mode."""
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, found {steps}, {batch_size}")
    segment = max(1, round(segment_seconds * MEL.sample_rate / MEL.chunk)) * MEL.chunk
    clips = _segments(waves, segment)
    fresh = codec is None
    codec = AudioCodec.tiny(seed) if fresh else codec
    device = next(codec.parameters()).device
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)  # CPU draws, moved to the device by diffusers
    bar = None
    if progress:
        bar = tqdm(total=steps * (int(vae) + int(vocoder)), desc="audio codec")

    if vae:
        net = codec.vae.train()
        if fresh:
            # start the decoder at the corpus' mean log-mel level (about -6, silence is -11.5):
            # Adam would spend thousands of steps walking an output bias there from 0
            with torch.no_grad():
                level = audioldm2_mel(_batch(clips, segment, 16, rng).to(device)).mean()
                net.decoder.conv_out.bias.fill_(level.item())
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for step in range(steps):
            mel = audioldm2_mel(_batch(clips, segment, batch_size, rng).to(device))
            loss, _, _ = vae_loss(net, mel, kl_weight=kl_weight, generator=gen)
            _check_loss(loss, "audio VAE", step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update()
                bar.set_postfix(vae=f"{loss.item():.3f}")
        net.eval()
        with torch.no_grad():
            mel = audioldm2_mel(_batch(clips, segment, max(batch_size, 16), rng).to(device))
            std = latent_std(net, mel)
        net.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
        log.info("audio VAE: L1 %.4f, latent std %.3f", loss.item(), std)

    if vocoder:
        net = codec.vocoder.train()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for step in range(steps):
            wave = _batch(clips, segment, batch_size, rng).to(device)
            loss = vocoder_loss(net, wave, audioldm2_mel(wave))
            _check_loss(loss, "vocoder", step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update()
                bar.set_postfix(vocoder=f"{loss.item():.3f}")
        log.info("vocoder: loss %.4f", loss.item())
    if bar is not None:
        bar.close()
    return codec.eval()
