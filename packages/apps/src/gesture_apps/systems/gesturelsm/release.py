"""GestureLSM's released generator, loaded from its checkpoint and yaml, with the reference
code's entry points (condition encoder, denoiser, guidance, sampler) in our conventions.

The networks are :mod:`.reference`'s (the released layout and parameter names); this module
reads the release's yaml (:func:`read_reference_config`) and checkpoint
(:meth:`GestureLSM.from_reference_checkpoint`) and samples one window as the release does
(``models/LSM.py`` of ycyentropy/GestureLSM at ``fe124e0``).
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from gesture_apps.errors import ConfigError
from gesture_apps.systems.gesturelsm.reference import (
    ReferenceGestureDenoiser,
    ReferenceModalityEncoder,
)

# denoiser / modality-encoder keys of the reference yaml that change nothing at inference
_IGNORED = {
    "denoiser": {"dropout", "n_seed"},  # dropout: eval; n_seed is only tested against 0
    # raw_audio and spatial_temporal are checked (only False / True are supported)
    "modality_encoder": {"data_path", "t_fix_pre", "audio_fps", "spatial_temporal", "raw_audio"},
}
# released weights with no part in the computation: the unused positional table and timestep
# MLP, and each spatial-temporal block's norm1
_UNUSED_KEY = re.compile(
    r"^denoiser\.(sequence_pos_encoder\.pe|embed_timestep\..*|mytimmblocks\.\d+\.norm1\..*)$"
)
# buffers the reference stores and we recompute (rotary frequencies; BatchNorm's step count)
_DERIVED_KEY = re.compile(r"(\.inv_freq|\.num_batches_tracked)$")


def read_reference_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The saved config of a released GestureLSM, from its yaml (``configs_new/*.yaml``) or the
    equivalent dict: ``{"denoiser": {...}, "modality_encoder": {...}, "pre_frames",
    "pose_length", "squeeze_scale", "latent_scale", "guidance_scale", "n_steps"}``. The word
    table size is not in the yaml: ``modality_encoder.vocab_size`` / ``word_dim`` come from the
    checkpoint (:meth:`GestureLSM.from_reference_checkpoint`)."""
    where = "config"
    if isinstance(config, str | Path):
        where = str(config)
        try:
            config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{where}: cannot read the GestureLSM yaml ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(config).__name__}")
    if {"denoiser", "modality_encoder"} <= set(config):  # already in our form
        return dict(config)

    def get(path: str):
        node: Any = config
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"{where}: missing key {path!r}")
            node = node[k]
        # the yaml is read by OmegaConf upstream: resolve its ${a.b} references
        m = re.fullmatch(r"\$\{([\w.]+)\}", node) if isinstance(node, str) else None
        return get(m.group(1)) if m else node

    out: dict[str, Any] = {}
    for part, cls in (
        ("denoiser", ReferenceGestureDenoiser),
        ("modality_encoder", ReferenceModalityEncoder),
    ):
        params = get(f"model.{part}.params")
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: 'model.{part}.params' must be a mapping")
        known = set(inspect.signature(cls.__init__).parameters) - {"self"} | _IGNORED[part]
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"{where}: model.{part}.params: unsupported key(s) {unknown}")
        if part == "modality_encoder" and params.get("raw_audio"):
            raise ConfigError(
                f"{where}: model.modality_encoder.params.raw_audio (WavLM features) is not "
                "supported"
            )
        if part == "modality_encoder" and not params.get("spatial_temporal", False):
            raise ConfigError(
                f"{where}: model.modality_encoder.params.spatial_temporal must be true (the "
                "denoiser attends to latent_dim x parts wide features)"
            )
        out[part] = {k: get(f"model.{part}.params.{k}") for k in params if k not in _IGNORED[part]}
    out["modality_encoder"]["squeeze_scale"] = get("vqvae_squeeze_scale")
    for key, path in (
        ("pre_frames", "pre_frames"),
        ("pose_length", "pose_length"),
        ("squeeze_scale", "vqvae_squeeze_scale"),
        ("latent_scale", "vqvae_latent_scale"),
        ("guidance_scale", "model.guidance_scale"),
        ("n_steps", "model.n_steps"),
    ):
        out[key] = get(path)
    return out


class GestureLSM(nn.Module):
    """A released GestureLSM generator (condition encoder + denoiser) in our conventions.

    Build it with :meth:`from_reference_checkpoint`; the constructor takes the saved config
    (:func:`read_reference_config` plus the word table size). Latents are ``(B, N, P * C)``
    scaled by ``1 / latent_scale`` (the reference's ``vqvae_latent_scale``), time runs from
    noise (0) to data (1).
    """

    def __init__(
        self,
        *,
        denoiser: dict[str, Any],
        modality_encoder: dict[str, Any],
        pre_frames: int = 4,
        pose_length: int = 128,
        squeeze_scale: int = 4,
        latent_scale: float = 5.0,
        guidance_scale: float = 2.0,
        n_steps: int = 2,
    ) -> None:
        super().__init__()
        self.config = dict(
            denoiser=dict(denoiser),
            modality_encoder=dict(modality_encoder),
            pre_frames=pre_frames,
            pose_length=pose_length,
            squeeze_scale=squeeze_scale,
            latent_scale=latent_scale,
            guidance_scale=guidance_scale,
            n_steps=n_steps,
        )
        try:
            self.modality_encoder = ReferenceModalityEncoder(**modality_encoder)
            self.denoiser = ReferenceGestureDenoiser(**denoiser)
        except TypeError as e:
            raise ConfigError(f"GestureLSM config: {e}") from None
        den = self.denoiser
        if pose_length != den.seq_len * squeeze_scale or pre_frames != den.seed_frames:
            raise ConfigError(
                f"GestureLSM config: pose_length {pose_length} must be seq_len {den.seq_len} x "
                f"squeeze_scale {squeeze_scale}, and pre_frames {pre_frames} must equal the "
                f"denoiser's embed_context_multiplier {den.seed_frames}"
            )
        # the first window's seed latents (the reference test loop takes them from the ground
        # truth; an import stores the tokenizer's latents of the mean pose here)
        self.register_buffer("first_seed", torch.zeros(pre_frames, den.num_parts * den.part_dim))
        if self.modality_encoder.target_length != pose_length:
            raise ConfigError(
                f"GestureLSM config: modality_encoder.target_length "
                f"{self.modality_encoder.target_length} must equal pose_length {pose_length}"
            )

    @property
    def encoder(self) -> ReferenceModalityEncoder:
        return self.modality_encoder

    @property
    def seed_frames(self) -> int:
        return self.denoiser.seed_frames

    # ----- import --------------------------------------------------------------------------

    @classmethod
    def from_reference_checkpoint(
        cls, ckpt_path: str | Path, config: str | Path | dict[str, Any]
    ) -> GestureLSM:
        """Load a released generator checkpoint (``{"model_state_dict": ...}``, keys prefixed
        ``module.``; read with ``torch.load(weights_only=True)``) with its yaml (or the dict
        from :func:`read_reference_config`). Every weight the computation uses must be present
        with its released shape; the unused ones (``norm1`` of each block, the positional table,
        the old timestep MLP) are dropped, and any other key is an error."""
        from motion_tokenizers.convert import read_reference_state_dict

        cfg = read_reference_config(config)
        state = read_reference_state_dict(ckpt_path)
        table = state.get("modality_encoder.text_pre_encoder_body.weight")
        if table is None or table.ndim != 2:
            raise ConfigError(
                f"{ckpt_path}: no word table 'modality_encoder.text_pre_encoder_body.weight'"
            )
        cfg["modality_encoder"] = {
            **cfg["modality_encoder"],
            "vocab_size": table.shape[0],
            "word_dim": table.shape[1],
        }
        model = cls(**cfg)
        model.load_reference_state_dict(state, ckpt_path)
        return model.eval()

    def load_reference_state_dict(self, state: dict[str, Tensor], source: str | Path) -> None:
        """Load released weights (``module.`` already stripped) strictly, dropping the unused
        ones; the recomputed buffers must agree with the released ones."""
        from gesture_apps.runtime.checkpoint import check_finite

        own = {k: v for k, v in self.state_dict().items() if k != "first_seed"}
        used, derived = {}, []
        for k, v in state.items():
            if _UNUSED_KEY.match(k):
                continue
            if _DERIVED_KEY.search(k) and k not in own:
                derived.append((k, v))
                continue
            used[k] = v
        missing = sorted(set(own) - set(used))
        unexpected = sorted(set(used) - set(own))
        if missing or unexpected:
            raise ConfigError(
                f"{source}: does not match the config's GestureLSM: missing keys "
                f"{missing[:6]}, unexpected keys {unexpected[:6]}"
            )
        for k, v in used.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ConfigError(
                    f"{source}: {k!r} has shape {tuple(v.shape)}, the config gives "
                    f"{tuple(own[k].shape)}"
                )
        for k, v in derived:
            if k.endswith("inv_freq"):
                want = 1.0 / (
                    10000 ** (torch.arange(0, 2 * v.numel(), 2).float() / (2 * v.numel()))
                )
                if not torch.allclose(v.float().cpu(), want, rtol=1e-6, atol=0):
                    raise ConfigError(f"{source}: {k!r} is not the standard rotary table")
        self.load_state_dict(used, strict=False)  # strict above, first_seed aside
        check_finite(self, source)

    # ----- the reference's entry points, in (B, N, C) conventions ------------------------------

    def condition(self, audio: Tensor, words: Tensor) -> Tensor:
        """``audio (B, S, 2)`` onset+amplitude at 16 kHz + ``words (B, pose_length)`` ->
        features ``(B, N, P * latent_dim)`` (the reference ``ModalityEncoder.forward``)."""
        return self.modality_encoder(audio, words)

    def velocity(
        self, x: Tensor, t: Tensor, d: Tensor | None, seed: Tensor, cond: Tensor | None
    ) -> Tensor:
        """``x (B, N, C)``, ``t (B,)`` (or one value for all), step size ``d`` or None, ``seed
        (B, pre_frames, C)``, features ``cond`` (None: the null condition) -> ``(B, N, C)``
        (the reference ``GestureDenoiser.forward``)."""
        return self.denoiser(x, t, d, cond, seed=seed)

    def guided_velocity(
        self,
        x: Tensor,
        t: Tensor,
        d: Tensor | None,
        seed: Tensor,
        cond: Tensor,
        guidance: float,
        cross_kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """Classifier-free guidance as released (``apply_classifier_free_guidance``): for
        ``guidance <= 1`` the conditional velocity alone, else ``v_null + g (v_cond - v_null)``
        with the conditional and null rows in one doubled batch. ``cross_kv``: keys and values
        of ``[cond | null]`` precomputed by :meth:`guidance_kv` (same result)."""
        if guidance <= 1.0:
            return self.denoiser(x, t, d, cond, seed=seed, cross_kv=cross_kv)
        B = x.shape[0]
        if cross_kv is None:
            cross_kv = self.guidance_kv(cond)
        t2 = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B).repeat(2)
        d2 = None
        if d is not None:
            d2 = torch.as_tensor(d, dtype=x.dtype, device=x.device).reshape(-1).expand(B).repeat(2)
        v = self.denoiser(
            torch.cat([x, x]), t2, d2, None, seed=torch.cat([seed, seed]), cross_kv=cross_kv
        )
        v_cond, v_null = v.chunk(2)
        return v_null + guidance * (v_cond - v_null)

    def guidance_kv(self, cond: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Cross-attention keys and values of ``[cond | null condition]``."""
        both = torch.cat([cond, self.denoiser.null_cond_embed.to(cond.dtype).expand_as(cond)])
        return self.denoiser.cross_kv(both)

    @torch.no_grad()
    def sample(
        self,
        audio: Tensor,
        words: Tensor,
        seed: Tensor,
        noise: Tensor,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """One window as the released ``GestureLSM.forward`` samples it, from the given initial
        ``noise (B, N, C)``: Euler steps on ``linspace(1e-8, 1 - 1e-8, steps + 1)`` with step
        size ``1 / steps`` as the shortcut condition and guidance on every step -> ``(B, N, C)``
        scaled latents. Defaults: the yaml's ``n_steps`` and ``guidance_scale``."""
        steps = int(self.config["n_steps"] if steps is None else steps)
        g = float(self.config["guidance_scale"] if guidance is None else guidance)
        if steps < 1 or not math.isfinite(g):
            raise ValueError(f"steps must be >= 1 and guidance finite, found {steps}, {g}")
        cond = self.condition(audio, words)
        kv = self.guidance_kv(cond) if g > 1.0 else self.denoiser.cross_kv(cond)
        x = noise
        ts = torch.linspace(1e-8, 1 - 1e-8, steps + 1, device=x.device)
        d = torch.tensor(1 / steps, device=x.device)
        for k in range(steps):
            v = self.guided_velocity(x, ts[k], d, seed, cond, g, cross_kv=kv)
            x = x + (ts[k + 1] - ts[k]) * v
        return x
