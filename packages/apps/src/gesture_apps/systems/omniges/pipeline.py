"""``OmnigesPipeline``: the six directions between text, audio and gesture from one bundle.

``pipe(task="a2g", audio=wave)`` -> :class:`~gesture_data.motion.Motion`; ``"t2g"`` (prompt),
``"g2t"`` / ``"a2t"`` -> text, ``"g2a"`` / ``"t2a"`` -> a 16 kHz waveform. Generation is
OmniFlow's: only the target stream is integrated (Euler on the shifted grid, shift 3 by
default), the condition is given clean, the third stream is pure noise, and guidance is
"condition made absent" (:func:`flow_backbones.sample_any_to_any`).

Inputs longer than the training window are cut into windows (the last one padded: audio with
silence, motion with its last frame) that are generated in one batch and joined; text is one
transcript per window, joined with spaces.

The bundle (``save_pretrained`` / ``from_pretrained``): ``mmdit/`` (config, weights, EMA
weights), ``tokenizer/`` + ``normalizer/`` (gesture), ``audio_codec/``, ``text_vae/``; the
manifest's ``mmdit`` entry holds the stream geometry and sampling defaults.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import Tensor

from flow_backbones import MMDiT, sample_any_to_any
from gesture_apps.data.codec import decode_latents, load_normalizer, normalizer_config
from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.bundle import open_bundle, write_bundle
from gesture_apps.runtime.checkpoint import check_finite
from gesture_apps.runtime.device import resolve_device
from gesture_apps.systems.omniges.audio import AudioCodec
from gesture_apps.systems.omniges.config import TASKS
from gesture_apps.systems.omniges.model import PositionedMMDiT, StreamGeometry
from gesture_apps.systems.omniges.text_vae import TextVAE
from gesture_data import Normalizer
from gesture_data.motion import Motion
from motion_tokenizers import MultiPartTokenizer

SYSTEM = "omniges"
NAMES = {"t": "text", "a": "audio", "g": "gesture"}


@dataclass
class OmnigesOutput:
    """What a task returns: exactly one of ``motion``, ``audio`` (16 kHz float32) or
    ``text`` is set, by the task's target."""

    task: str
    motion: Motion | None = None
    audio: np.ndarray | None = None
    text: str | None = None


class OmnigesPipeline:
    """Frozen codecs plus the MMDiT; see the module docstring."""

    def __init__(
        self,
        *,
        mmdit: MMDiT,
        geometry: StreamGeometry,
        tokenizer: MultiPartTokenizer,
        normalizer: Normalizer,
        codec: AudioCodec,
        text_vae: TextVAE,
        spec: dict[str, Any],
    ):
        self.mmdit, self.geo = mmdit.eval(), geometry
        self.net = PositionedMMDiT(self.mmdit, geometry)
        self.tokenizer, self.normalizer = tokenizer.eval(), normalizer
        self.codec, self.text_vae, self.spec = codec, text_vae.eval(), spec

    @property
    def device(self) -> torch.device:
        return next(self.mmdit.parameters()).device

    @property
    def pose_length(self) -> int:
        return int(self.spec["pose_length"])

    @property
    def window_samples(self) -> int:
        return round(self.pose_length * self.spec["sample_rate"] / self.spec["fps"])

    # ----- bundle ------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, *, ema_mmdit: MMDiT | None = None) -> Path:
        """Write the bundle ``folder`` (fresh or temporary; callers make it atomic)."""
        streams = {**self.spec, "geometry": self.geo.to_dict()}

        def write_mmdit(sub: Path) -> None:
            self.mmdit.save_pretrained(sub)
            if ema_mmdit is not None:
                save_model(ema_mmdit, str(sub / "model_ema.safetensors"))

        def write_streams(sub: Path) -> None:
            text = json.dumps(streams, indent=2)
            (sub / "streams.json").write_text(text, encoding="utf-8")

        return write_bundle(
            folder,
            system=SYSTEM,
            fps=float(self.spec["fps"]),
            sample_rate=int(self.spec["sample_rate"]),
            components={
                "mmdit": (None, write_mmdit),
                "streams": (streams, write_streams),
                "tokenizer": (None, self.tokenizer.save_pretrained),
                "normalizer": (
                    normalizer_config(self.normalizer),
                    lambda sub: self.normalizer.save(sub / "normalizer.npz"),
                ),
                "audio_codec": ({"class": "AudioCodec"}, self.codec.save_pretrained),
                "text_vae": (None, self.text_vae.save_pretrained),
            },
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, ema: bool = True, device: str | torch.device | None = "cpu"
    ) -> OmnigesPipeline:
        """Load a bundle (or the run folder that holds ``omniges/``); raises
        :class:`GenerationError` naming the file when it is not a complete Omniges bundle."""
        device = resolve_device(device)
        bundle = open_bundle(path, SYSTEM)
        if bundle.system != SYSTEM:
            raise GenerationError(f"{bundle.folder}: a {bundle.system!r} bundle, not {SYSTEM!r}")
        try:
            where = bundle.path("streams", "streams.json")
            config = json.loads(where.read_text(encoding="utf-8"))
            for key in ("geometry", "sample", "parts", "pose_length", "fps", "sample_rate"):
                if key not in config:
                    raise GenerationError(f"{where}: missing key {key!r}")
            geo = StreamGeometry.from_dict(config["geometry"])
            with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
                mmdit = MMDiT.from_pretrained(bundle.path("mmdit"))
            weights = bundle.path("mmdit", "model_ema.safetensors")
            if ema and weights.is_file():
                load_model(mmdit, str(weights), strict=True)
            check_finite(mmdit, weights if ema and weights.is_file() else bundle.path("mmdit"))
            with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
                tok = MultiPartTokenizer.from_pretrained(bundle.path("tokenizer"))
            check_finite(tok, bundle.path("tokenizer"))
            normalizer = load_normalizer(bundle, config["parts"])
            codec = AudioCodec.from_pretrained(bundle.path("audio_codec"))
            text_vae = TextVAE.from_pretrained(bundle.path("text_vae"))
        except GenerationError:
            raise
        except Exception as e:  # json, safetensors, torch and the loaders raise many types
            raise GenerationError(
                f"{bundle.folder}: corrupt Omniges bundle ({one_line(e, 300)})"
            ) from None
        spec = {k: v for k, v in config.items() if k != "geometry"}
        pipe = cls(
            mmdit=mmdit,
            geometry=geo,
            tokenizer=tok,
            normalizer=normalizer,
            codec=codec,
            text_vae=text_vae,
            spec=spec,
        )
        return pipe.to(device)

    def to(self, device: str | torch.device) -> OmnigesPipeline:
        self.mmdit.to(device)
        self.tokenizer.to(device)
        self.codec.to(device)
        self.text_vae.to(device)
        return self

    # ----- streams -------------------------------------------------------------------------

    def encode_audio(self, wave: np.ndarray) -> tuple[Tensor, int]:
        """Mono 16 kHz ``(S,)`` -> standardised tokens ``(W, La, Ca)`` of ``W`` windows."""
        wave = np.asarray(wave, np.float32).reshape(-1)
        if wave.size == 0 or not np.isfinite(wave).all():
            raise GenerationError("audio: expected a non-empty, finite mono waveform")
        n = self.window_samples
        windows = max(1, -(-wave.size // n))
        padded = np.zeros(windows * n, np.float32)
        padded[: wave.size] = wave
        with torch.no_grad():
            lat = self.codec.encode(torch.from_numpy(padded.reshape(windows, n)))
        tokens = self.geo.audio_to_tokens(lat.to(self.device))
        return self.geo.normalize("audio", tokens), windows

    def decode_audio(self, tokens: Tensor, samples: int) -> np.ndarray:
        lat = self.geo.tokens_to_audio(self.geo.denormalize("audio", tokens))
        with torch.no_grad():
            wave = self.codec.decode_audio(lat)  # (W, S_w')
        return wave.reshape(-1)[:samples].float().cpu().numpy()

    def encode_motion(self, motion: Motion) -> tuple[Tensor, int]:
        """Motion -> standardised gesture tokens ``(W, Ng, Dg)`` of ``W`` windows."""
        from gesture_data.datasets.windows import WindowDataset, collate
        from gesture_data.layout import trans_to_velocity
        from gesture_data.rotations import axis_angle_to_6d

        T = motion.num_frames
        L = self.pose_length
        windows = max(1, -(-T // L))
        idx = np.minimum(np.arange(windows * L), T - 1)  # the last frame repeated
        poses = torch.from_numpy(np.asarray(motion.poses, np.float64)[idx])
        prepared = {
            "rot6d": axis_angle_to_6d(poses).float().numpy(),
            "trans_v": trans_to_velocity(torch.from_numpy(np.asarray(motion.trans)[idx])).numpy(),
            "face": np.asarray(motion.expressions, np.float32)[idx],
            "words": np.zeros(windows * L, np.int64),
            "audio": np.zeros((0, 1), np.float32),
        }
        ds = WindowDataset([prepared], L, L, normalizer=self.normalizer)
        items = collate([ds[i] for i in range(windows)])
        parts = {n: items[n].to(self.device) for n in self.tokenizer.part_names}
        with torch.no_grad():
            lat = self.tokenizer.encode_continuous(parts)
        return self.geo.normalize("gesture", lat), windows

    def decode_motion(self, tokens: Tensor, frames: int) -> Motion:
        lat = self.geo.denormalize("gesture", tokens).reshape(1, -1, tokens.shape[-1])
        with torch.no_grad():
            return decode_latents(self.tokenizer, self.normalizer, lat, frames)

    def encode_text(self, texts: list[str]) -> Tensor:
        with torch.no_grad():
            lat = self.text_vae.encode(texts).to(self.device)
        return self.geo.normalize("text", lat)

    def _shape(self, name: str, windows: int) -> tuple[int, int, int]:
        g = self.geo
        return {
            "gesture": (windows, g.gesture_tokens, g.gesture_dim),
            "audio": (windows, g.audio_tokens, g.audio_dim),
            "text": (windows, g.text_tokens, g.text_dim),
        }[name]

    # ----- generation ------------------------------------------------------------------------

    def __call__(
        self,
        task: str,
        *,
        prompt: str | None = None,
        audio: np.ndarray | None = None,
        gesture: Motion | None = None,
        seconds: float | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> OmnigesOutput:
        """Run ``task`` (one of t2g, g2t, a2g, g2a, t2a, a2t) on its condition.

        ``prompt`` (text), ``audio`` (mono 16 kHz ``(S,)`` float) or ``gesture`` (a Motion)
        is the condition the task names; ``seconds`` is the length of the output for text
        conditions (default: one training window).
        """
        given = {"prompt": prompt, "audio": audio, "gesture": gesture, "seconds": seconds}
        kw = dict(steps=steps, shift=shift, guidance=guidance, seed=seed)
        return self.generate(task, [{k: v for k, v in given.items() if v is not None}], **kw)[0]

    def _condition(self, task: str, given: dict) -> tuple[Tensor, float]:
        """One request's condition tokens ``(W, L, C)`` and the output length in seconds."""
        src = NAMES[task[0]]
        flag = {"text": "prompt", "audio": "audio", "gesture": "gesture"}[src]
        if given.get(flag) is None:
            raise GenerationError(f"{task}: needs {flag}= (the {src} to start from)")
        extra = [k for k in given if k not in (flag, "seconds")]
        if extra:
            raise GenerationError(f"{task}: takes only the {src} condition, also got {extra}")
        fps, sr = float(self.spec["fps"]), int(self.spec["sample_rate"])
        if src == "audio":
            cond, _ = self.encode_audio(given["audio"])
            return cond, np.asarray(given["audio"]).size / sr
        if src == "gesture":
            if not isinstance(given["gesture"], Motion):
                raise GenerationError("gesture: expected a gesture_data Motion")
            cond, _ = self.encode_motion(given["gesture"])
            return cond, given["gesture"].num_frames / given["gesture"].fps
        prompt = given["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise GenerationError("prompt: expected a non-empty string")
        seconds = given.get("seconds", self.pose_length / fps)
        if not seconds > 0:
            raise GenerationError(f"seconds: expected a positive number, found {seconds}")
        windows = max(1, -(-round(seconds * fps) // self.pose_length))
        # one prompt conditions every window of the requested length
        return self.encode_text([prompt]).expand(windows, -1, -1), seconds

    def generate(
        self,
        task: str,
        requests: list[dict[str, Any]],
        *,
        steps: int | None = None,
        shift: float | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> list[OmnigesOutput]:
        """Run ``task`` on several requests in one batch (each a dict of the keyword arguments
        of :meth:`__call__`: the condition and ``seconds``). All windows of all requests are
        sampled together from one generator seeded with ``seed``, so a request's output
        depends on its place in the batch."""
        if task not in TASKS:
            raise GenerationError(f"task: expected one of {', '.join(TASKS)}, found {task!r}")
        served = self.spec.get("tasks", TASKS)
        if task not in served:  # e.g. a one-step student distilled for one direction
            raise GenerationError(
                f"task: this bundle serves only {', '.join(served)} (its streams.json 'tasks'), "
                f"not {task!r}"
            )
        if not requests:
            return []
        src, dst = NAMES[task[0]], NAMES[task[2]]
        conds, lengths = zip(*(self._condition(task, r) for r in requests), strict=True)
        counts = [c.shape[0] for c in conds]
        windows = sum(counts)
        sample = self.spec["sample"]
        third = next(n for n in NAMES.values() if n not in (src, dst))
        out = sample_any_to_any(
            self.net,
            {src: torch.cat(conds)},
            {dst: self._shape(dst, windows)},
            absent={third: self._shape(third, windows)},
            steps=int(steps or sample["steps"]),
            shift=float(shift if shift is not None else sample["shift"]),
            guidance=float(guidance if guidance is not None else sample["guidance"]),
            x1_streams=("text",) if self.spec.get("text_predicts_x1") else (),
            generator=torch.Generator().manual_seed(seed),
        )[dst]
        pieces = out.split(counts)
        fps, sr = float(self.spec["fps"]), int(self.spec["sample_rate"])
        if dst == "gesture":
            return [
                OmnigesOutput(task, motion=self.decode_motion(p, round(s * fps)))
                for p, s in zip(pieces, lengths, strict=True)
            ]
        if dst == "audio":
            return [
                OmnigesOutput(task, audio=self.decode_audio(p, round(s * sr)))
                for p, s in zip(pieces, lengths, strict=True)
            ]
        with torch.no_grad():  # one batched decode of every window's text
            texts = self.text_vae.decode(self.geo.denormalize("text", out))
        starts = np.cumsum([0, *counts])
        return [
            OmnigesOutput(
                task,
                text=" ".join(t.strip() for t in texts[a:b] if t.strip()),
            )
            for a, b in itertools.pairwise(starts)
        ]


def averaged_copy(trainer) -> MMDiT | None:
    """The EMA-averaged MMDiT of a trainer whose model is an ``OmnigesObjective``."""
    if trainer.ema is None:
        return None
    averaged = copy.deepcopy(trainer.raw_model)
    trainer.ema.copy_to(averaged)
    return averaged.net.mmdit
