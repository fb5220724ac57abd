"""Captions -> motion with a ``gesture train t2m-gpt`` bundle.

The GPT samples motion codes after the caption's embedding until End (each caption stops on
its own), the VQ-VAE decodes them, the bundle's Mean/Std restore units: ``(4 L, 263)``
HumanML3D features at 20 fps per caption. Generation length is the model's choice, as in
T2M-GPT; requested lengths are accepted and ignored (so evaluators that pass the ground
truth's lengths can call it).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.bundle import open_bundle
from gesture_apps.runtime.checkpoint import check_finite
from gesture_apps.runtime.device import resolve_device
from gesture_apps.systems.t2m_gpt.config import EXPORT
from gesture_apps.systems.t2m_gpt.model import MotionCodec, load_codec
from gesture_apps.systems.t2m_gpt.text import TextCondition
from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.priors import T2MGPT


class T2MPipeline:
    """A loaded bundle: ``pipe(captions) -> [(T_i, 263)]`` un-normalised features."""

    def __init__(self, prior: T2MGPT, codec: MotionCodec, text: TextCondition, stats, fps: float):
        self.prior, self.codec, self.text = prior.eval(), codec, text
        self.mean, self.std = stats
        self.fps = fps

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device=None, ema: bool = False) -> T2MPipeline:
        """Load a bundle, a ``gesture train t2m-gpt`` run folder or one of its checkpoints;
        ``ema=True`` takes the averaged prior when the bundle has one."""
        bundle = open_bundle(path, EXPORT)
        if bundle.system != "t2m_gpt":
            raise GenerationError(f"{bundle.folder}: a {bundle.system!r} bundle, not t2m_gpt")
        name = "prior_ema" if ema and bundle.has("prior_ema") else "prior"
        where = bundle.path(name)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                prior = T2MGPT.from_pretrained(where)
        except (ValueError, OSError):
            raise
        except Exception as e:
            raise CheckpointError(f"{where}: cannot load the GPT ({one_line(e, 200)})") from None
        check_finite(prior, where)
        codec = load_codec(bundle.folder)
        spec = bundle.config("text")
        if not isinstance(spec.get("encoder"), str):
            raise CheckpointError(f"{bundle.folder}/manifest.json: text.encoder missing")
        text = TextCondition.get(spec["encoder"])
        if text.dim != prior.clip_dim:
            raise CheckpointError(
                f"{bundle.folder}: the text encoder gives {text.dim}-d embeddings, the GPT "
                f"expects clip_dim={prior.clip_dim}"
            )
        stats_file = bundle.path("text", "caption_stats.npz")
        try:
            with np.load(stats_file, allow_pickle=False) as z:
                stats = (z["mean"].astype(np.float32), z["std"].astype(np.float32))
        except (OSError, KeyError, ValueError, EOFError) as e:
            raise CheckpointError(f"{stats_file}: unreadable ({one_line(e, 200)})") from None
        if stats[0].shape != (text.dim,) or not (stats[1] > 0).all():
            raise CheckpointError(
                f"{stats_file}: expected mean/std of shape ({text.dim},) with std > 0, found "
                f"{stats[0].shape}"
            )
        dev = resolve_device(device)
        prior.to(dev)
        codec.tokenizer.to(dev)
        return cls(prior, codec, text, stats, float(bundle.manifest["fps"]))

    def condition(self, captions: list[str]) -> Tensor:
        """``(B, clip_dim)`` standardised sentence embeddings."""
        e = (self.text.embed(captions) - self.mean) / self.std
        return torch.from_numpy(e.astype(np.float32)).to(next(self.prior.parameters()).device)

    def __call__(
        self,
        captions: list[str],
        *,
        seed: int = 0,
        greedy: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        batch_size: int = 64,
    ) -> list[np.ndarray]:
        """One ``(T_i, 263)`` float32 motion per caption (T_i = 4 x its code count; a caption
        whose first token is End gets one code's worth of the mean pose)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise GenerationError("captions: expected a list of strings")
        if any(not c.strip() for c in captions):
            raise GenerationError("captions: an empty caption (expected some text)")
        cond = self.condition(list(captions))
        g = torch.Generator(cond.device).manual_seed(seed)
        out: list[np.ndarray] = []
        unit = self.codec.tokenizer.downsample_factor
        for s in range(0, len(captions), batch_size):
            codes, lengths = self.prior.sample(
                cond[s : s + batch_size],
                greedy=greedy,
                temperature=temperature,
                top_k=top_k,
                generator=g,
            )
            for row, n in zip(codes, lengths.tolist(), strict=True):
                if n == 0:  # End first: nothing to decode, the dataset's mean pose
                    out.append(np.repeat(self.codec.mean[None], unit, 0).astype(np.float32))
                    continue
                out.append(self.codec.decode(row[:n]).astype(np.float32))
        return out


def generate_from_bundle(
    bundle_dir: str | Path,
    captions: list[str],
    lengths: Tensor | None = None,
    *,
    seed: int = 0,
    greedy: bool = False,
    device=None,
) -> list[np.ndarray]:
    """``[(T_i, 263)]`` un-normalised HumanML3D features, one per caption. ``lengths`` (frames)
    are ignored: T2M-GPT stops at End (the argument lets ``evaluate_t2m`` call it).

    The loaded bundle is kept for the next call with the same folder and device (evaluation
    calls this once per batch); a re-exported bundle (a newer manifest) is read again."""
    del lengths
    folder = open_bundle(bundle_dir, EXPORT).folder.resolve()
    key = (str(folder), str(device), (folder / "manifest.json").stat().st_mtime_ns)
    if _LOADED.get("key") != key:
        _LOADED.clear()
        _LOADED.update(key=key, pipe=T2MPipeline.from_pretrained(folder, device=device))
    return _LOADED["pipe"](captions, seed=seed, greedy=greedy)


_LOADED: dict = {}  # the last bundle generate_from_bundle loaded
