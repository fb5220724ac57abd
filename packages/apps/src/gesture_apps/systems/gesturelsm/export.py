"""The GestureLSM bundle: written by training, reflow and distillation, read by generation.

Components: ``generator`` (the saved config, ``model.safetensors`` and, when training kept
one, ``model_ema.safetensors``), ``tokenizer`` (the frozen tokenizers), ``normalizer`` and
``vocabulary``. See :mod:`gesture_apps.runtime.bundle` for the folder format.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from gesture_apps.data.codec import load_normalizer, normalizer_config
from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.bundle import open_bundle, write_bundle
from gesture_apps.runtime.checkpoint import check_finite
from gesture_apps.runtime.device import resolve_device
from gesture_apps.systems.gesturelsm.config import EXPORT
from gesture_apps.systems.gesturelsm.model import LSMGenerator
from gesture_data import Normalizer
from gesture_data.datasets.beat2 import Vocabulary
from motion_tokenizers import MultiPartTokenizer, canonical_part_name

SYSTEM = "gesturelsm"
# generator config keys generation reads, with their types (a hand-edited or foreign export
# fails here with the key named instead of deep inside the model)
SPEC_KEYS = {
    "parts": list,
    "pose_length": int,
    "factor": int,
    "vocab_size": int,
    "sample": dict,
}
# and per network layout: ours (frame-aligned) or the released GestureLSM's (an import)
LAYOUT_KEYS = {
    "ours": {"audio_channels": list, "audio_dim": int, "word_dim": int, "denoiser": dict},
    "reference": {"reference": dict},
}


def build_generator(spec: dict[str, Any]) -> nn.Module:
    """The untrained network a generator config describes (weights are loaded after)."""
    if spec.get("layout", "ours") == "reference":
        from gesture_apps.systems.gesturelsm.release import GestureLSM

        return GestureLSM(**spec["reference"])
    return LSMGenerator(spec)


@dataclass
class LSMBundle:
    """A loaded GestureLSM bundle, ready to generate."""

    generator: nn.Module  # LSMGenerator, or reference.GestureLSM for an imported release
    tokenizer: MultiPartTokenizer
    normalizer: Normalizer
    vocab: Vocabulary
    spec: dict
    folder: Path


def write_lsm_bundle(
    folder: Path,
    *,
    spec: dict[str, Any],
    generator: nn.Module,
    tokenizer: MultiPartTokenizer,
    normalizer: Normalizer,
    vocab: Vocabulary,
    ema_generator: nn.Module | None = None,
) -> Path:
    """Write the bundle ``folder`` (fresh or temporary; the trainer swaps it in whole)."""

    def write_generator(sub: Path) -> None:
        (sub / "config.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
        save_model(generator, str(sub / "model.safetensors"))
        if ema_generator is not None:
            save_model(ema_generator, str(sub / "model_ema.safetensors"))

    return write_bundle(
        folder,
        system=SYSTEM,
        components={
            "generator": (spec, write_generator),
            "tokenizer": (None, tokenizer.save_pretrained),
            "normalizer": (
                normalizer_config(normalizer),
                lambda sub: normalizer.save(sub / "normalizer.npz"),
            ),
            "vocabulary": ({"size": len(vocab)}, lambda sub: vocab.save(sub / "vocab.txt")),
        },
    )


def find_export(path: str | Path) -> Path:
    """The bundle folder of a bundle, a run folder or a checkpoint folder."""
    return open_bundle(path, EXPORT).folder


def load_lsm(path: str | Path, *, ema: bool = True, device: str | torch.device | None = "cpu"):
    """Load a GestureLSM bundle (a bundle, run or checkpoint folder; first-release ``lsm/``
    exports too) onto ``device`` (``None``: CUDA when present, else the CPU); raises
    :class:`GenerationError` if broken. The default stays the CPU for the callers that feed it
    CPU tensors (reflow and distillation build their pairs there); generation picks the
    device."""
    device = resolve_device(device)
    bundle = open_bundle(path, EXPORT)
    if bundle.system != SYSTEM:
        raise GenerationError(f"{bundle.folder}: a {bundle.system!r} bundle, not {SYSTEM!r}")
    gen_dir = bundle.path("generator")
    # the files' modification times are part of the cache key: a retrained export reloads
    stamp = tuple(
        f.stat().st_mtime_ns if f.exists() else 0
        for f in (
            gen_dir / n for n in ("config.json", "model.safetensors", "model_ema.safetensors")
        )
    )
    return _load_lsm(str(bundle.folder.resolve()), ema, str(device), stamp)


@lru_cache(maxsize=4)
def _load_lsm(folder_s: str, ema: bool, device: str, stamp: tuple = ()) -> LSMBundle:
    bundle = open_bundle(folder_s)
    folder = bundle.folder
    try:
        where = bundle.path("generator", "config.json")
        spec = json.loads(where.read_text(encoding="utf-8"))
        _check_spec(spec, where)
        if not bundle.legacy and spec != bundle.config("generator"):
            raise GenerationError(f"{where}: differs from the generator config in manifest.json")
        # first-release exports name BEAT2's lower body `lower_trans`; the tokenizers load it
        # under today's name
        spec = {**spec, "parts": [canonical_part_name(p) for p in spec["parts"]]}
        gen = build_generator(spec)
        weights = bundle.path("generator", "model_ema.safetensors" if ema else "model.safetensors")
        if not weights.is_file():
            weights = bundle.path("generator", "model.safetensors")
        load_model(gen, str(weights), strict=True)
        check_finite(gen, weights)
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
            tok = MultiPartTokenizer.from_pretrained(bundle.path("tokenizer"))
        check_finite(tok, bundle.path("tokenizer"))
        if list(tok.part_names) != list(spec["parts"]):
            raise GenerationError(
                f"{folder}: tokenizer parts {tok.part_names} do not match the generator's "
                f"{spec['parts']}"
            )
        normalizer = load_normalizer(bundle, spec["parts"])
        vocab = Vocabulary.load(bundle.path("vocabulary", "vocab.txt"))
    except GenerationError:
        raise
    except Exception as e:  # json, safetensors, torch and our loaders raise many types
        raise GenerationError(f"{folder}: corrupt checkpoint ({one_line(e, 300)})") from None
    if len(vocab) != spec.get("vocab_size"):
        raise GenerationError(f"{folder}: vocab.txt does not match config.json")
    gen.eval().to(device)
    tok.eval().to(device)
    return LSMBundle(gen, tok, normalizer, vocab, spec, folder)


def _check_spec(spec: Any, path: Path) -> None:
    """The generator config must be an object holding :data:`SPEC_KEYS` with sane values."""
    if not isinstance(spec, dict):
        raise GenerationError(f"{path}: expected a JSON object, found {type(spec).__name__}")
    layout = spec.get("layout", "ours")
    if layout not in LAYOUT_KEYS:
        raise GenerationError(
            f"{path}: 'layout' must be one of {sorted(LAYOUT_KEYS)}, found {layout!r}"
        )
    for key, kind in {**SPEC_KEYS, **LAYOUT_KEYS[layout]}.items():
        if key not in spec:
            raise GenerationError(f"{path}: missing key {key!r}")
        value = spec[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GenerationError(
                f"{path}: {key!r} must be {kind.__name__}, found {type(value).__name__}"
            )
        if kind is int and value < 1:
            raise GenerationError(f"{path}: {key!r} must be at least 1, found {value}")
    if spec["pose_length"] % spec["factor"]:
        raise GenerationError(f"{path}: 'pose_length' is not a multiple of 'factor'")
