"""Checkpoint folders: model weights + trainer state in safetensors + json (never pickles).

Layout of ``<run>/checkpoints/step_0000100/``::

    model.safetensors          the trained module's weights (``safetensors.torch.save_model``)
    trainer_state.safetensors  optimizer, scheduler, EMA, data position, every rank's RNG ...
    trainer_state.json         ... and the plain values, referring to the tensors by key
    run_config.json            the resolved recipe config (what ``--resume`` rebuilds from)
    <export>/                  whatever the recipe adds (e.g. ``model/`` via save_pretrained)

A sharded run (``train.fsdp``) writes the same files: its weights, optimizer state (keyed by
parameter name) and EMA are gathered to rank 0 first, so its ``model.safetensors`` loads into
the plain model.

``<run>/checkpoints/latest.txt`` names the newest one. A checkpoint folder is filled under a
hidden temporary name beside it and renamed into place whole, and ``latest.txt`` is replaced
only after that, so a process killed mid-save leaves the previous checkpoint as the latest
(and at most a hidden ``.step_*.tmp-*`` folder, which nothing reads).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions

from motion_tokenizers.errors import CheckpointError
from motion_tokenizers.io import atomic_write

from .ema import EMA

STATE_NAME = "trainer_state"
LATEST = "latest.txt"


def rng_state() -> dict[str, Any]:
    """Every RNG this process draws from (torch CPU, CUDA devices, numpy, python)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
            *[v.item() if hasattr(v, "item") else v for v in np_state[2:]],
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    keys = np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys, dtype=np.uint32)
    np.random.set_state((name, keys, *rest))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose ``checkpoints/latest.txt`` names one."""
    path = Path(path)
    if (path / f"{STATE_NAME}.json").is_file():
        return path
    for pointer in (path / "checkpoints" / LATEST, path / LATEST):
        if pointer.is_file():
            target = pointer.parent / pointer.read_text(encoding="utf-8").strip()
            if (target / f"{STATE_NAME}.json").is_file():
                return target
            raise CheckpointError(f"{pointer}: names {target.name!r}, which is not a checkpoint")
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    raise CheckpointError(f"{path}: not a checkpoint folder (no {STATE_NAME}.json)")


def write_latest(checkpoints_dir: Path, name: str) -> None:
    atomic_write(checkpoints_dir / LATEST, lambda p: p.write_text(name + "\n", encoding="utf-8"))


def read_run_config(checkpoint: str | Path) -> dict[str, Any]:
    """The ``run_config.json`` stored with a checkpoint (raises :class:`CheckpointError`)."""
    path = resolve_checkpoint(checkpoint) / "run_config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def check_finite(module: nn.Module, where: str | Path) -> None:
    """Refuse weights with NaN or inf: they load without complaint and turn every output into
    NaN (a run trains on with loss nan; generation writes NaN motion)."""
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {name!r} has non-finite values")


# gathered to rank 0 on the CPU (other ranks get empty dicts) / given in full to every rank
FULL_TO_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
FULL_EVERYWHERE = StateDictOptions(full_state_dict=True, strict=True)


def check_finite_tensors(tensors: dict[str, Tensor], where: Path) -> None:
    """:func:`check_finite` for a state dict read from ``where``."""
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {name!r} has non-finite values")


def ema_of(model: nn.Module, state: dict[str, Any]) -> EMA:
    """An EMA of an unsharded model holding a gathered EMA state."""
    ema = EMA(model, decay=state["decay"])
    ema.load_state_dict(state)
    return ema


def meta_copy(model: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """An unsharded copy of ``model`` without storage (meta device) plus the buffers its state
    dict leaves out (non-persistent ones such as position tables), kept as they are."""
    persistent = set(model.state_dict())
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if n not in persistent}
    return copy.deepcopy(model).to("meta"), buffers


def materialize(skeleton: nn.Module, buffers: dict[str, Tensor], weights: dict[str, Tensor]):
    """A new CPU model from a :func:`meta_copy` and a full state dict (``strict``)."""
    model = copy.deepcopy(skeleton).to_empty(device="cpu")
    model.load_state_dict(weights, strict=True)
    for name, b in buffers.items():  # not in the state dict: kept aside, put back
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = b.clone()
    return model
