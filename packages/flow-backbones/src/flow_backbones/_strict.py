"""Strict loading of a ``config.json`` + ``model.safetensors`` folder.

huggingface_hub's mixin loads a folder leniently: a config key the constructor does not
take is dropped, NaN weights load as they are, and every failure surfaces as whatever the
JSON, torch or safetensors layer raised, without saying which of the two files is at
fault. Here each check names the file, the key and what was expected.

This file exists twice, byte for byte: ``motion_tokenizers/_strict.py`` and
``flow_backbones/_strict.py``. Both libraries save models with the mixin and must refuse a bad
folder the same way, and libraries may not import each other (each installs alone), so neither
can borrow the other's. It holds only the four pieces both loaders call; motion-tokenizers'
``tests/test_strict.py`` fails when the two copies differ.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointError

# arguments the mixin passes to ``_from_pretrained`` that are about the Hub, not the model
HUB_ARGS = frozenset(
    {
        "revision",
        "cache_dir",
        "force_download",
        "proxies",
        "resume_download",
        "local_files_only",
        "token",
    }
)


def _non_finite(obj: Any, key: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return key or "<root>"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((f"{i}", v) for i, v in enumerate(obj))
    else:
        return None
    for k, v in items:
        bad = _non_finite(v, f"{key}.{k}" if key else str(k))
        if bad:
            return bad
    return None


def check_config(path: Path, cls: type) -> dict:
    """Read ``config.json`` and check it could be this class's constructor arguments."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: expected a JSON object of {cls.__name__} arguments, "
            f"found {type(config).__name__}"
        )
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(config) - set(params) - {"self"})
        if unknown:
            # a key the constructor does not take is a config from another class or version;
            # dropping it would build a different model than the one that was saved
            raise CheckpointError(f"{path}: unknown key(s) {unknown[:5]} for {cls.__name__}")
    bad = _non_finite(config)
    if bad:
        raise CheckpointError(f"{path}: key {bad!r} is NaN or infinite")
    return config


def build(cls: type, folder: Path, model_kwargs: dict) -> nn.Module:
    try:
        return cls(**model_kwargs)
    except Exception as e:  # the constructor's own checks, torch size errors, type errors
        raise CheckpointError(
            f"{folder / 'config.json'}: does not build a {cls.__name__} "
            f"({type(e).__name__}: {' '.join(str(e).split())})"
        ) from e


def load_weights(model: nn.Module, path: Path, map_location="cpu", strict: bool = True) -> None:
    """Load ``model.safetensors`` into ``model``: every tensor present, of the right shape and
    finite (a NaN weight makes every output NaN, which no later check would trace back here)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as e:  # SafetensorError, OSError: truncated, empty or not safetensors
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)}, the model config.json "
                f"describes needs {tuple(own[k].shape)}"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: tensor {k!r} holds NaN or infinite values")
    # save_pretrained stores a tensor shared by two names once; its twin is not missing
    loaded = {own[k].data_ptr() for k in state if k in own and own[k].numel()}
    missing = sorted(k for k in own.keys() - state.keys() if own[k].data_ptr() not in loaded)
    unexpected = sorted(state.keys() - own.keys())
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: does not match the {type(model).__name__} that config.json describes: "
            f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)
