"""Omniges' audio stream: AudioLDM2's mel-spectrogram VAE and HiFi-GAN vocoder.

AudioLDM 2: Learning Holistic Audio Generation with Self-supervised Pretraining
(Liu et al., 2023, https://arxiv.org/abs/2308.05734), as OmniFlow (Li et al., 2024,
https://arxiv.org/abs/2412.01169) uses it for its audio stream; the vocoder is HiFi-GAN
(Kong et al., 2020, https://arxiv.org/abs/2010.05646) in transformers' ``SpeechT5HifiGan``.

The chain, with AudioLDM2's exact mel so a real AudioLDM2 / OmniFlow ``vae`` + ``vocoder`` works:

    wave (B, S) 16 kHz --mel--> (B, 1, T, 64) --encode--> (B, 8, T/4, 16)
    latents (B, 8, T/4, 16) --decode--> (B, 1, T, 64) --vocode--> (B, T * 160)

``T = 8 * ceil(S / 1280)``: the wave is zero-padded (silence) at its end to a multiple of
1280 samples, so T is a multiple of 8 and the latent length T/4 is even (2x2 patching in the
MMDiT audio stream). :meth:`AudioCodec.decode_audio` can crop back to ``num_samples``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor, nn
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from gesture_data.features.audio import mel_filterbank
from motion_tokenizers.io import atomic_directory

from ...errors import GenerationError, one_line

__all__ = [
    "MEL",
    "AudioCodec",
    "MelSettings",
    "audioldm2_mel",
]


@dataclass(frozen=True)
class MelSettings:
    """AudioLDM2's log-mel analysis (its ``preprocessing`` block): fixed, since the released
    VAE and vocoder were trained on exactly this."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5  # ln(1e-5) = -11.51 is the mel of silence

    @property
    def frames_per_latent_pair(self) -> int:
        """Mel frames per two latent frames (4x VAE downsampling, 2x patching)."""
        return 8

    @property
    def chunk(self) -> int:
        """Samples the wave is padded to a multiple of (1280 at hop 160)."""
        return self.frames_per_latent_pair * self.hop_length


MEL = MelSettings()


def _check_wave(wave, sample_rate: int, name: str = "wave") -> Tensor:
    """A ``(B, S)`` float tensor of finite samples at ``MEL.sample_rate``, or GenerationError."""
    if sample_rate != MEL.sample_rate:
        raise GenerationError(
            f"{name}: sample_rate must be {MEL.sample_rate} Hz (AudioLDM2's mel), found "
            f"{sample_rate}; resample first (gesture_data.features.audio.resample)"
        )
    w = torch.as_tensor(wave)
    if w.ndim != 2:
        raise GenerationError(f"{name}: expected shape (B, S), found {tuple(w.shape)}")
    if not w.is_floating_point():
        raise GenerationError(f"{name}: expected float samples in [-1, 1], found {w.dtype}")
    if w.shape[1] == 0:
        raise GenerationError(f"{name}: expected S > 0 samples, found 0")
    if not torch.isfinite(w).all():
        raise GenerationError(f"{name}: contains NaN or infinite samples")
    return w


def audioldm2_mel(wave, sample_rate: int = 16000) -> Tensor:
    """AudioLDM2's log-mel spectrogram ``(B, S) -> (B, 1, T, 64)``, ``T = 8 * ceil(S / 1280)``.

    As AudioLDM2's training data loader (HiFi-GAN's recipe): reflect-pad ``(n_fft - hop) / 2``
    on both sides, magnitude STFT (periodic Hann 1024, hop 160, no centring), slaney mel
    filterbank (0-8 kHz, area-normalised, as ``librosa.filters.mel``), natural log of the value
    clamped at 1e-5. That padding centres frame i on the hop ``[160 i, 160 (i + 1))``, so the
    vocoder's ``T * 160`` output samples line up with the input. AudioLDM2's loader also scales
    each clip to peak 0.5; we leave the level alone so wave -> mel -> wave keeps loudness."""
    w = _check_wave(wave, sample_rate)
    dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
    w = w.to(dtype)
    # silence to a whole number of 8-frame chunks (even latent length), never cropped
    s_pad = math.ceil(w.shape[1] / MEL.chunk) * MEL.chunk
    w = F.pad(w, (0, s_pad - w.shape[1]))
    side = (MEL.n_fft - MEL.hop_length) // 2
    w = F.pad(w[:, None], (side, side), mode="reflect")[:, 0]
    spec = torch.stft(
        w,
        MEL.n_fft,
        hop_length=MEL.hop_length,
        win_length=MEL.win_length,
        window=torch.hann_window(MEL.win_length, dtype=dtype, device=w.device),
        center=False,
        return_complex=True,
    ).abs()  # (B, n_fft/2 + 1, T)
    basis = mel_filterbank(MEL.sample_rate, MEL.n_fft, MEL.n_mels, MEL.fmin, MEL.fmax)
    mel = torch.as_tensor(basis, dtype=dtype, device=w.device) @ spec  # (B, 64, T)
    return torch.log(mel.clamp(min=MEL.log_floor)).transpose(1, 2)[:, None]


def _read_config(folder: Path) -> dict:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise GenerationError(f"{cfg}: config.json not found (expected a saved model folder)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GenerationError(f"{cfg}: unreadable JSON ({one_line(e, 200)})") from None


class AudioCodec(nn.Module):
    """AudioLDM2's mel VAE (diffusers ``AutoencoderKL``) and vocoder (``SpeechT5HifiGan``).

    Args:
        vae: ``in_channels = out_channels = 1``, ``latent_channels = 8``, 4x downsampling
            (three blocks); ``vae.config.scaling_factor`` scales the latents.
        vocoder: ``model_in_dim = 64``, ``sampling_rate = 16000``, upsampling product 160.

    Example:
        >>> codec = AudioCodec.tiny()
        >>> z = codec.encode(torch.zeros(2, 16000))  # (2, 8, 104 / 4, 16): 1 s -> T = 104
        >>> codec.decode_audio(z, num_samples=16000).shape
        torch.Size([2, 16000])
    """

    mel_settings = MEL

    def __init__(self, vae: AutoencoderKL, vocoder: SpeechT5HifiGan):
        super().__init__()
        self._check_models(vae, vocoder, where="AudioCodec")
        self.vae = vae
        self.vocoder = vocoder

    @staticmethod
    def _check_models(vae, vocoder, *, where) -> None:
        """Models that do not fit AudioLDM2's mel would fail deep inside a conv, or worse
        silently produce audio at the wrong rate: say which config field is off."""
        c = vae.config
        got = {
            "vae.in_channels": (c.in_channels, 1),
            "vae.out_channels": (c.out_channels, 1),
            "vae.latent_channels": (c.latent_channels, 8),
            "vae downsampling (len(block_out_channels) - 1 halvings)": (
                2 ** (len(c.block_out_channels) - 1),
                4,
            ),
            "vocoder.model_in_dim": (vocoder.config.model_in_dim, MEL.n_mels),
            "vocoder.sampling_rate": (vocoder.config.sampling_rate, MEL.sample_rate),
            "vocoder prod(upsample_rates)": (
                int(np.prod(vocoder.config.upsample_rates)),
                MEL.hop_length,
            ),
        }
        for field, (found, expected) in got.items():
            if found != expected:
                raise GenerationError(f"{where}: {field} must be {expected}, found {found}")

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @classmethod
    def tiny(cls, seed: int = 0) -> AudioCodec:
        """A CPU-test size (about 0.2 M parameters): the VAE has three blocks of 8/16/16
        channels (4x down), the vocoder 32 channels upsampled 5*4*4*2 = 160x."""
        # both libraries initialise from the global generator: seed a forked copy of it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls._tiny_models()

    @classmethod
    def _tiny_models(cls) -> AudioCodec:
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            latent_channels=8,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=1.0,  # train_audio_codec sets 1 / std of the latents
            mid_block_add_attention=False,  # attention over T/4 * 16 positions: slow on CPU
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=MEL.n_mels,
                sampling_rate=MEL.sample_rate,
                upsample_initial_channel=32,
                upsample_rates=[5, 4, 4, 2],
                # kernel - rate even: each transposed conv gives exactly rate * L samples
                upsample_kernel_sizes=[11, 8, 8, 4],
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,  # AudioLDM2's vocoder feeds the raw log-mel too
            )
        )
        return cls(vae, vocoder)

    @classmethod
    def audioldm2(cls, seed: int = 0) -> AudioCodec:
        """AudioLDM2's architectures, untrained: its ``vae/`` config (channels 128 x [1, 2, 4],
        two resnets per block, 8 latent channels) and its ``vocoder/`` HiFi-GAN (1024 channels
        upsampled 5*4*2*2*2 = 160x, kernels 16/16/8/4/4, resblocks 3/7/11)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL(
                in_channels=1,
                out_channels=1,
                down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(128, 256, 512),
                layers_per_block=2,
                latent_channels=8,
                norm_num_groups=32,
                sample_size=1024,
                scaling_factor=1.0,  # set to 1 / std of the latents after training
            )
            vocoder = SpeechT5HifiGan(
                SpeechT5HifiGanConfig(
                    model_in_dim=MEL.n_mels,
                    sampling_rate=MEL.sample_rate,
                    upsample_initial_channel=1024,
                    upsample_rates=[5, 4, 2, 2, 2],
                    upsample_kernel_sizes=[16, 16, 8, 4, 4],
                    resblock_kernel_sizes=[3, 7, 11],
                    resblock_dilation_sizes=[[1, 3, 5]] * 3,
                    normalize_before=False,
                )
            )
        return cls(vae, vocoder)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, vae_subfolder: str = "vae", vocoder_subfolder: str = "vocoder"
    ) -> AudioCodec:
        """Load ``folder/vae`` and ``folder/vocoder`` (an AudioLDM2 / OmniFlow pipeline root, a
        folder :meth:`save_pretrained` wrote, or a ``gesture train omniges-audio`` run or
        checkpoint folder, whose ``audio_codec/`` is read). Local paths only: a missing folder
        or ``config.json`` fails at once, naming it."""
        root = Path(folder)
        if not root.is_dir():
            raise GenerationError(f"{root}: audio codec folder not found")
        if not (root / vae_subfolder).is_dir() and (root / "audio_codec" / vae_subfolder).is_dir():
            root = root / "audio_codec"  # the export inside a training run folder
        parts = {}
        for name, sub, loader in (
            ("vae", vae_subfolder, AutoencoderKL),
            ("vocoder", vocoder_subfolder, SpeechT5HifiGan),
        ):
            path = root / sub
            if not path.is_dir():
                raise GenerationError(
                    f"{path}: {name} folder not found (expected {root} to hold "
                    f"{vae_subfolder}/ and {vocoder_subfolder}/, AudioLDM2's layout)"
                )
            _read_config(path)
            try:
                parts[name] = loader.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise GenerationError(
                    f"{path}: cannot load the {name} ({one_line(e, 300)})"
                ) from None
        cls._check_models(parts["vae"], parts["vocoder"], where=str(root))
        return cls(parts["vae"], parts["vocoder"]).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``folder/vae`` and ``folder/vocoder`` with the models' own ``save_pretrained``
        (config.json + safetensors), filled in a temporary sibling and swapped in whole."""

        def write(tmp: Path) -> None:
            self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            self.vocoder.save_pretrained(tmp / "vocoder", safe_serialization=True)

        atomic_directory(Path(folder), write)

    def _param(self) -> Tensor:
        return next(self.vae.parameters())

    def mel(self, wave, sample_rate: int = 16000) -> Tensor:
        """``(B, S)`` float 16 kHz wave -> ``(B, 1, T, 64)`` log-mel, ``T = 8 * ceil(S / 1280)``
        (see :func:`audioldm2_mel`), on the codec's device and dtype."""
        p = self._param()
        w = _check_wave(wave, sample_rate).to(p.device)
        return audioldm2_mel(w).to(p.dtype)

    def _check_mel(self, mel: Tensor) -> Tensor:
        m = torch.as_tensor(mel)
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[3] != MEL.n_mels or m.shape[2] % 4:
            raise GenerationError(
                f"mel: expected shape (B, 1, T, {MEL.n_mels}) with T a multiple of 4, "
                f"found {tuple(m.shape)}"
            )
        if not torch.isfinite(m).all():
            raise GenerationError("mel: contains NaN or infinite values")
        p = self._param()
        return m.to(p.device, p.dtype)

    def encode_mel(
        self, mel: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(B, 1, T, 64)`` mel -> ``(B, 8, T/4, 16)`` latents: posterior mean (or a draw with
        ``sample=True``) times ``scaling_factor``."""
        dist = self.vae.encode(self._check_mel(mel)).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return z * self.scaling_factor

    def encode(
        self,
        wave,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        sample_rate: int = 16000,
    ) -> Tensor:
        """``(B, S)`` 16 kHz wave -> ``(B, 8, T/4, 16)`` scaled latents, ``T = 8 ceil(S/1280)``."""
        return self.encode_mel(self.mel(wave, sample_rate), sample=sample, generator=generator)

    def decode(self, latents: Tensor) -> Tensor:
        """``(B, 8, T/4, 16)`` scaled latents -> ``(B, 1, T, 64)`` log-mel."""
        z = torch.as_tensor(latents)
        if z.ndim != 4 or z.shape[1] != 8 or z.shape[3] != MEL.n_mels // 4:
            raise GenerationError(
                f"latents: expected shape (B, 8, T/4, {MEL.n_mels // 4}), found {tuple(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise GenerationError("latents: contains NaN or infinite values")
        p = self._param()
        return self.vae.decode(z.to(p.device, p.dtype) / self.scaling_factor).sample

    def vocode(self, mel: Tensor) -> Tensor:
        """``(B, 1, T, 64)`` log-mel -> ``(B, T * 160)`` wave in [-1, 1] at 16 kHz."""
        m = self._check_mel(mel)
        vp = next(self.vocoder.parameters())
        # AudioLDM2's kernels (16 for rate 5) add a sample or so per layer: keep T * 160
        return self.vocoder(m[:, 0].to(vp.device, vp.dtype))[:, : m.shape[2] * MEL.hop_length]

    def decode_audio(self, latents: Tensor, *, num_samples: int | None = None) -> Tensor:
        """``(B, 8, T/4, 16)`` latents -> ``(B, T * 160)`` wave (cut to ``num_samples``)."""
        wave = self.vocode(self.decode(latents))
        return wave if num_samples is None else wave[:, :num_samples]
