"""OmniHuman inference engine: condition activation, annealed guidance, long videos by segments.

* **Condition activator** (``mode``): ``audio`` (text + reference + audio), ``pose`` (all
  conditions), ``pose_only`` (text + reference + pose) and ``reference`` (text + reference).
* **Guidance with annealing**: one batched call gives the velocities with every active
  condition, without audio, and without audio and text; they combine as
  ``v = v_- + w_text(t) (v_text - v_-) + w_audio(t) (v_full - v_text)``, each weight decaying
  linearly from its first-step value to its end value (OmniHuman's CFG annealing).
* **Any length**: the video is generated in segments of ``1 + 4k`` frames; each segment after
  the first takes the previous one's last five generated frames as clean motion frames, so the
  motion continues across the join. The last segment is generated whole and cropped.

The bundle is the runtime's one export format: ``vae/``, ``model/`` (and ``ema/``) and the
spec (frame rate, size, segment length, default sampling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from flow_backbones import GuidanceSchedule, time_grid
from gesture_apps.errors import GenerationError
from gesture_apps.systems.omnihuman.conditions import audio_features, encode_text
from gesture_apps.systems.omnihuman.data import from_video_tensor, to_video_tensor
from gesture_apps.systems.omnihuman.model import MOTION_FRAMES, OmniHumanModel

logger = logging.getLogger(__name__)

SYSTEM = "omnihuman"
MODES = {
    "audio": ("text", "reference", "audio"),
    "pose": ("text", "reference", "audio", "pose"),
    "pose_only": ("text", "reference", "pose"),
    "reference": ("text", "reference"),
}
Mode = Literal["audio", "pose", "pose_only", "reference"]


def load_vae(path: str | Path):
    """A video VAE from an export folder, a ``gesture train omnihuman-vae`` run folder (its
    ``video_vae/``) or a user's Wan2.1 ``vae/`` folder."""
    from gesture_apps.systems.omnihuman.vae import EXPORT as VAE_EXPORT
    from gesture_apps.systems.omnihuman.vae import VideoVAE

    p = Path(path).expanduser()
    if not p.exists():
        raise GenerationError(f"{p}: video VAE folder not found")
    if (p / VAE_EXPORT).is_dir():
        p = p / VAE_EXPORT
    vae = VideoVAE.from_pretrained(p)
    return vae.eval().requires_grad_(False)


@dataclass
class Request:
    """One video to generate (all arrays at the bundle's frame rate and size).

    ``reference`` ``(H, W, 3)`` uint8; ``audio`` ``(S,)`` float32 at ``sample_rate`` (None:
    silence); ``keypoints`` ``(T, K, 2)`` in ``[0, 1]`` with ``confidence`` ``(T, K)`` (pose
    modes); ``frames``: output length (default: the audio's or the keypoints' length)."""

    reference: np.ndarray
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    keypoints: np.ndarray | None = None
    confidence: np.ndarray | None = None
    prompt: str = ""
    frames: int | None = None


class OmniHumanPipeline:
    """VAE + :class:`OmniHumanModel` + the spec; see the module docstring."""

    def __init__(self, *, vae, model: OmniHumanModel, spec: dict[str, Any]):
        self.vae, self.model, self.spec = vae, model, spec

    # ----- properties --------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> OmniHumanPipeline:
        self.vae.to(device)
        self.model.to(device)
        return self

    @property
    def fps(self) -> float:
        return float(self.spec["fps"])

    @property
    def size(self) -> int:
        return int(self.spec["size"])

    @property
    def segment_frames(self) -> int:
        return int(self.spec["segment_frames"])

    # ----- saving ------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, *, ema_model: OmniHumanModel | None = None):
        from gesture_apps.runtime.bundle import write_bundle

        components = {
            "vae": (None, self.vae.save_pretrained),
            "model": (None, self.model.save_pretrained),
        }
        if ema_model is not None:
            components["ema"] = (None, ema_model.save_pretrained)
        components["spec"] = (self.spec, lambda sub: None)
        write_bundle(folder, system=SYSTEM, components=components, fps=self.fps)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, ema: bool = True, device=None
    ) -> OmniHumanPipeline:
        """A bundle, a run folder (its ``omnihuman/``) or a checkpoint; the EMA weights when
        the bundle has them and ``ema``."""
        from gesture_apps.runtime.bundle import open_bundle

        bundle = open_bundle(path, SYSTEM)
        if bundle.system != SYSTEM:
            raise GenerationError(f"{bundle.folder}: a {bundle.system!r} bundle, not {SYSTEM!r}")
        vae = load_vae(bundle.path("vae"))
        name = "ema" if ema and bundle.has("ema") else "model"
        model = OmniHumanModel.from_pretrained(bundle.path(name)).eval().requires_grad_(False)
        pipe = cls(vae=vae, model=model, spec=bundle.config("spec"))
        return pipe.to(device) if device is not None else pipe

    # ----- conditions --------------------------------------------------------------------

    def _check(self, r: Request, i: int) -> int:
        s = self.size
        ref = np.asarray(r.reference)
        if ref.shape != (s, s, 3) or ref.dtype != np.uint8:
            raise GenerationError(
                f"reference[{i}]: expected a {s}x{s} RGB uint8 image (the bundle's size), found "
                f"{ref.shape} {ref.dtype}"
            )
        lengths = {}
        if r.audio is not None:
            a = np.asarray(r.audio)
            if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
                raise GenerationError(
                    f"audio[{i}]: expected a finite mono wave (S,), found {a.shape}"
                )
            lengths["audio"] = int(np.floor(a.size / r.sample_rate * self.fps))
        if r.keypoints is not None:
            k = np.asarray(r.keypoints)
            K = self.model.config.keypoints
            if k.ndim != 3 or k.shape[1:] != (K, 2) or not np.isfinite(k).all():
                raise GenerationError(
                    f"keypoints[{i}]: expected finite (T, {K}, 2), found {k.shape}"
                )
            lengths["pose"] = int(k.shape[0])
        if "audio" in lengths and "pose" in lengths and abs(lengths["audio"] - lengths["pose"]) > 1:
            raise GenerationError(
                f"pose[{i}]: {lengths['pose']} frames, but the audio lasts {lengths['audio']} "
                f"frames at {self.fps:g} fps (lengths must match)"
            )
        T = r.frames or min(lengths.values(), default=0)
        if T < 1:
            raise GenerationError(f"request[{i}]: no length: give audio, keypoints or frames")
        return T

    def _features(self, r: Request, T: int) -> np.ndarray:
        kind = self.model.config.audio_kind
        if r.audio is None:
            audio, sr = np.zeros(int(T / self.fps * 16000) + 1, np.float32), 16000
        else:
            audio, sr = np.asarray(r.audio, np.float32), r.sample_rate
        return audio_features(audio, sr, self.fps, T, kind=kind)

    def _keypoints(self, r: Request, T: int) -> tuple[Tensor, Tensor]:
        """``(T, K, 2)`` keypoints and ``(T, K)`` confidence, the last pose held to ``T``."""
        kp = torch.as_tensor(np.asarray(r.keypoints, np.float32))
        conf = r.confidence
        conf = (
            torch.ones(kp.shape[:2])
            if conf is None
            else torch.as_tensor(np.asarray(conf, np.float32))
        )
        if kp.shape[0] < T:
            pad = T - kp.shape[0]
            kp = torch.cat([kp, kp[-1:].expand(pad, -1, -1)])
            conf = torch.cat([conf, conf[-1:].expand(pad, -1)])
        return kp[:T], conf[:T]

    # ----- generation --------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        requests: list[Request],
        *,
        mode: Mode = "audio",
        steps: int | None = None,
        shift: float | None = None,
        audio_guidance: float | None = None,
        audio_guidance_end: float | None = None,
        text_guidance: float | None = None,
        text_guidance_end: float | None = None,
        motion_frames: bool = True,
        seed: int = 0,
        noise: list[Tensor] | None = None,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Videos ``(T_i, H, W, 3)`` uint8 for a batch of requests (one sampler run per segment
        for the whole batch). ``noise``: optional per-segment starting noise ``(B, C, n, h, w)``
        (for comparisons on the same noise); otherwise drawn from ``seed``."""
        if mode not in MODES:
            raise GenerationError(f"mode: expected one of {sorted(MODES)}, found {mode!r}")
        if not requests:
            raise GenerationError("requests: expected at least one")
        for i, r in enumerate(requests):
            if "pose" in MODES[mode] and r.keypoints is None:
                raise GenerationError(f"keypoints[{i}]: mode {mode!r} needs a pose sequence")
            if "audio" in MODES[mode] and r.audio is None:
                raise GenerationError(f"audio[{i}]: mode {mode!r} needs the speech")
        lengths = [self._check(r, i) for i, r in enumerate(requests)]
        s = {**self.spec["sample"]}
        for k, v in dict(
            steps=steps,
            shift=shift,
            audio_guidance=audio_guidance,
            audio_guidance_end=audio_guidance_end,
            text_guidance=text_guidance,
            text_guidance_end=text_guidance_end,
        ).items():
            if v is not None:
                s[k] = v
        if int(s["steps"]) < 1:
            raise GenerationError(f"steps: expected >= 1, found {s['steps']}")
        dev, B, L = self.device, len(requests), self.segment_frames
        n_seg = -(-max(lengths) // L)
        total = n_seg * L
        feats = torch.stack([torch.from_numpy(self._features(r, total)) for r in requests]).to(dev)
        kp = conf = None
        if "pose" in MODES[mode]:
            pairs = [self._keypoints(r, total) for r in requests]
            kp = torch.stack([p[0] for p in pairs]).to(dev)
            conf = torch.stack([p[1] for p in pairs]).to(dev)
        text, mask = encode_text(
            [r.prompt for r in requests],
            encoder=self.model.config.text_encoder,
            max_tokens=self.model.config.text_tokens,
        )
        refs = torch.stack([to_video_tensor(np.asarray(r.reference)[None]) for r in requests])
        ref_lat = self.vae.encode(refs.to(dev))
        active = set(MODES[mode])
        gen = torch.Generator(device="cpu").manual_seed(seed)
        frames: list[Tensor] = []  # per segment (B, 3, L, H, W)
        for k in range(n_seg):
            sl = slice(k * L, (k + 1) * L)
            has_motion = motion_frames and k > 0
            if has_motion:
                prev = frames[-1][:, :, -MOTION_FRAMES:]
                motion = self.vae.encode(prev)
                am = feats[:, k * L - MOTION_FRAMES : k * L]
            else:
                motion = torch.zeros_like(ref_lat).repeat(1, 1, 2, 1, 1)
                am = torch.zeros_like(feats[:, :MOTION_FRAMES])
            cond = {
                "reference": ref_lat,
                "motion": motion,
                "audio": feats[:, sl],
                "audio_motion": am,
                "keypoints": kp[:, sl] if kp is not None else None,
                "confidence": conf[:, sl] if conf is not None else None,
                "text": text.to(dev),
                "text_mask": mask.to(dev),
            }
            use = {
                c: torch.full((B,), c in active, dtype=torch.bool, device=dev)
                for c in ("text", "reference", "audio", "pose")
            }
            use["motion"] = torch.full((B,), has_motion, dtype=torch.bool, device=dev)
            shape = (B, ref_lat.shape[1], 1 + (L - 1) // 4, *ref_lat.shape[3:])
            x0 = (
                noise[k].to(dev) if noise is not None else torch.randn(shape, generator=gen).to(dev)
            )
            lat = self._sample(x0, cond, use, s)
            frames.append(self.vae.decode(lat).clamp(-1, 1))
            if progress:
                logger.info("omnihuman: segment %d/%d", k + 1, n_seg)
        video = torch.cat(frames, 2)  # (B, 3, total, H, W)
        return [from_video_tensor(video[i, :, : lengths[i]]) for i in range(B)]

    def _sample(self, x: Tensor, cond: dict, use: dict[str, Tensor], s: dict) -> Tensor:
        """Euler from noise to the segment's latents with annealed two-condition guidance."""
        B = x.shape[0]
        w_a = GuidanceSchedule(s["audio_guidance"], "linear", s["audio_guidance_end"])
        w_t = GuidanceSchedule(s["text_guidance"], "linear", s["text_guidance_end"])
        audio_on = bool(use["audio"].any())
        guided_audio = audio_on and not w_a.scale == w_a.end_scale == 1.0
        guided_text = not w_t.scale == w_t.end_scale == 1.0
        levels = [use]  # every active condition
        if audio_on and (guided_audio or guided_text):
            levels.append({**use, "audio": torch.zeros_like(use["audio"])})
        if guided_text:
            levels.append({**levels[-1], "text": torch.zeros_like(use["text"])})
        n = len(levels)
        big = {k: None if v is None else torch.cat([v] * n) for k, v in cond.items()}
        big["use"] = {k: torch.cat([lv[k] for lv in levels]) for k in use}
        grid = time_grid(int(s["steps"]), shift=float(s["shift"]), device=x.device)
        for i in range(grid.numel() - 1):
            t, dt = grid[i], grid[i + 1] - grid[i]
            v = self.model(torch.cat([x] * n), t.expand(B * n), None, big, None).split(B)
            v_full = v[0]
            v_na = v[1] if audio_on and n > 1 else v_full  # without audio
            v_nat = v[-1] if guided_text else v_na  # without audio and text
            # v_- + w_text (v_text - v_-) + w_audio (v_full - v_text); both weights 1: v_full
            x = x + dt * (v_nat + w_t(t) * (v_na - v_nat) + w_a(t) * (v_full - v_na))
        return x
