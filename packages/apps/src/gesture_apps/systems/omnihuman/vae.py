"""OmniHuman's video latents: the 3D causal VAE of Wan2.1.

Wan: Open and Advanced Large-Scale Video Generative Models (Wan Team, 2025,
https://arxiv.org/abs/2503.20314), Wan-VAE in diffusers' ``AutoencoderKLWan``. Causal 3D
convolutions compress a video 4x in time (the first frame alone, then chunks of four) and 8x in
space:

    video (B, 3, T, H, W) in [-1, 1], T = 1 + 4k --encode--> (B, z, 1 + k, H/8, W/8)
    latents (B, z, 1 + k, h, w) --decode--> (B, 3, 1 + 4k, 8h, 8w) in [-1, 1]

Latents are normalised per channel with the VAE config's ``latents_mean`` / ``latents_std``
(Wan2.1's pipeline does the same), so a flow model sees roughly unit-variance inputs. Because
the first frame is encoded on its own, a still image is a one-frame video: its latent is what
the reference image of OmniHuman becomes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from torch import Tensor, nn

from motion_tokenizers.io import atomic_directory

from ...errors import GenerationError, one_line

__all__ = ["VideoVAE"]

EXPORT = "video_vae"  # the export folder of a `gesture train omnihuman-vae` run


def _read_config(folder: Path) -> dict:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise GenerationError(f"{cfg}: config.json not found (expected a saved VAE folder)")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GenerationError(f"{cfg}: unreadable JSON ({one_line(e, 200)})") from None
    if not isinstance(data, dict):
        raise GenerationError(f"{cfg}: expected a JSON object, found {type(data).__name__}")
    return data


class VideoVAE(nn.Module):
    """Wan2.1's video VAE (``AutoencoderKLWan`` as ``.vae``) with normalised latents.

    Args:
        vae: ``in_channels = out_channels = 3``, three spatial halvings (``len(dim_mult) == 4``)
            and two temporal ones (``temperal_downsample`` has two ``True``), no patchify
            (Wan2.1, not Wan2.2's 48-channel VAE); ``latents_mean`` / ``latents_std`` of length
            ``z_dim``.

    Example:
        >>> vae = VideoVAE.tiny()
        >>> z = vae.encode(torch.zeros(1, 3, 17, 64, 64))  # (1, 8, 5, 8, 8)
        >>> vae.decode(z).shape
        torch.Size([1, 3, 17, 64, 64])
    """

    temporal_ratio = 4
    spatial_ratio = 8

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self._check(vae, where="VideoVAE")
        self.vae = vae

    @staticmethod
    def _check(vae: AutoencoderKLWan, *, where: str) -> None:
        """A config off Wan2.1's compression would fail deep inside a conv, or decode to the
        wrong size: say which field is off."""
        c = vae.config
        z = c.z_dim
        got = {
            "in_channels": (c.in_channels, 3),
            "out_channels": (c.out_channels, 3),
            "patch_size": (c.patch_size, None),
            "spatial halvings (len(dim_mult) - 1)": (len(c.dim_mult) - 1, 3),
            "temporal halvings (sum(temperal_downsample))": (sum(c.temperal_downsample), 2),
            "len(latents_mean)": (len(c.latents_mean), z),
            "len(latents_std)": (len(c.latents_std), z),
        }
        for field, (found, expected) in got.items():
            if found != expected:
                raise GenerationError(f"{where}: {field} must be {expected}, found {found}")
        if min(c.latents_std) <= 0:
            raise GenerationError(f"{where}: latents_std must be positive, found {c.latents_std}")

    # ----- construction --------------------------------------------------------------------

    @classmethod
    def tiny(cls, seed: int = 0, *, base_dim: int = 16, z_dim: int = 8) -> VideoVAE:
        """A CPU-trainable size (0.8 M parameters at ``base_dim=16``): channels
        ``base_dim x [1, 2, 2, 2]``, one resnet per block, Wan2.1's 4x / 8x compression.
        Latent statistics start at mean 0 / std 1; training measures them at export."""
        with torch.random.fork_rng(devices=[]):  # diffusers initialises from the global RNG
            torch.manual_seed(seed)
            vae = AutoencoderKLWan(
                base_dim=base_dim,
                z_dim=z_dim,
                dim_mult=[1, 2, 2, 2],
                num_res_blocks=1,
                attn_scales=[],
                temperal_downsample=[False, True, True],
                latents_mean=[0.0] * z_dim,
                latents_std=[1.0] * z_dim,
            )
        return cls(vae)

    @classmethod
    def wan(cls, seed: int = 0) -> VideoVAE:
        """Wan2.1's architecture, untrained: base 96 x [1, 2, 4, 4], two resnets per block,
        16 latent channels and Wan2.1's published ``latents_mean`` / ``latents_std`` (diffusers'
        defaults), 126,892,531 parameters (the paper's "127M"). Build it under
        ``torch.device("meta")`` to inspect it without memory."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(AutoencoderKLWan())

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> VideoVAE:
        """Load a VAE folder: our export (:meth:`save_pretrained`), a user's local Wan2.1
        ``vae/`` folder as it is (diffusers' ``config.json`` +
        ``diffusion_pytorch_model.safetensors``), a Wan2.1 pipeline root holding ``vae/``, or a
        ``gesture train omnihuman-vae`` run or checkpoint folder (its ``video_vae/``). Local
        paths only: a missing folder or file fails at once, naming it."""
        root = Path(folder)
        if not root.is_dir():
            raise GenerationError(f"{root}: video VAE folder not found")
        if not (root / "config.json").is_file():
            for sub in (EXPORT, "vae"):
                if (root / sub / "config.json").is_file():
                    root = root / sub
                    break
        config = _read_config(root)
        name = config.get("_class_name", "AutoencoderKLWan")
        if name != "AutoencoderKLWan":
            raise GenerationError(
                f"{root / 'config.json'}: _class_name must be AutoencoderKLWan (Wan2.1's VAE), "
                f"found {name}"
            )
        try:
            vae = AutoencoderKLWan.from_pretrained(root, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise GenerationError(f"{root}: cannot load the VAE ({one_line(e, 300)})") from None
        cls._check(vae, where=str(root))
        return cls(vae).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write diffusers' layout (``config.json`` + ``diffusion_pytorch_model.safetensors``,
        the latent statistics in the config): the same files as Wan2.1's ``vae/``, so either
        loads with ``AutoencoderKLWan.from_pretrained`` too. Filled in a temporary sibling and
        swapped in whole."""
        atomic_directory(
            Path(folder), lambda tmp: self.vae.save_pretrained(tmp, safe_serialization=True)
        )

    # ----- sizes ---------------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame video (``1 + 4k -> 1 + k``)."""
        if frames < 1 or (frames - 1) % self.temporal_ratio:
            raise GenerationError(f"frames: expected 1 + 4k (1, 5, 9, 13, 17, ...), found {frames}")
        return 1 + (frames - 1) // self.temporal_ratio

    def video_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` latent frames (``1 + k -> 1 + 4k``)."""
        if latent_frames < 1:
            raise GenerationError(f"latent_frames: expected >= 1, found {latent_frames}")
        return 1 + self.temporal_ratio * (latent_frames - 1)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``latents_mean`` and ``latents_std`` as ``(1, z, 1, 1, 1)`` tensors like ``like``."""
        c = self.vae.config
        shape = (1, self.latent_channels, 1, 1, 1)
        mean = torch.tensor(c.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(c.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def _param(self) -> Tensor:
        return next(self.vae.parameters())

    # ----- encode / decode -----------------------------------------------------------------

    def check_video(self, video: Tensor, name: str = "video") -> Tensor:
        """``video`` as a ``(B, 3, T, H, W)`` tensor on the VAE's device and dtype, or a
        GenerationError naming what is off (T must be 1 + 4k, H and W multiples of 8)."""
        v = torch.as_tensor(video)
        if v.ndim != 5 or v.shape[1] != 3:
            raise GenerationError(
                f"{name}: expected shape (B, 3, T, H, W) (RGB, channels first), found "
                f"{tuple(v.shape)}"
            )
        t, h, w = v.shape[2:]
        if (t - 1) % self.temporal_ratio:
            raise GenerationError(
                f"{name}: T = {t} frames, expected 1 + 4k (e.g. {t - (t - 1) % 4} or "
                f"{t - (t - 1) % 4 + 4}): Wan's VAE encodes the first frame, then chunks of 4"
            )
        if h % self.spatial_ratio or w % self.spatial_ratio or h == 0 or w == 0:
            raise GenerationError(
                f"{name}: H x W = {h} x {w}, expected positive multiples of {self.spatial_ratio}"
            )
        if not v.is_floating_point():
            raise GenerationError(f"{name}: expected float values in [-1, 1], found {v.dtype}")
        if not torch.isfinite(v).all():
            raise GenerationError(f"{name}: contains NaN or infinite values")
        p = self._param()
        return v.to(p.device, p.dtype)

    def encode(
        self, video: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> normalised latents ``(B, z, 1 + (T-1)/4, H/8,
        W/8)``: ``(mu - latents_mean) / latents_std`` (or a posterior draw with
        ``sample=True``)."""
        dist = self.vae.encode(self.check_video(video)).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        mean, std = self._stats(z)
        return (z - mean) / std

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents ``(B, z, t, h, w)`` -> video ``(B, 3, 1 + 4(t-1), 8h, 8w)`` in
        [-1, 1]."""
        z = torch.as_tensor(latents)
        if z.ndim != 5 or z.shape[1] != self.latent_channels or min(z.shape[2:], default=0) < 1:
            raise GenerationError(
                f"latents: expected shape (B, {self.latent_channels}, t, h, w), found "
                f"{tuple(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise GenerationError("latents: contains NaN or infinite values")
        p = self._param()
        z = z.to(p.device, p.dtype)
        mean, std = self._stats(z)
        return self.vae.decode(z * std + mean).sample
