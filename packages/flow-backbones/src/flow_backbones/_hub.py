"""Saving and loading: ``config.json`` + ``model.safetensors``, each written atomically.

Every backbone derives from :class:`HubModule`: ``nn.Module`` + huggingface_hub's
``PyTorchModelHubMixin``, whose typed keyword constructor is the saved config.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._strict import HUB_ARGS, build, check_config, load_weights
from .errors import CheckpointError


def _atomic_directory(directory: Path, write) -> None:
    # fill a sibling temp folder, then os.replace file by file: each file is whole, old or new
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        write(tmp)
        directory.mkdir(exist_ok=True)
        # config.json last: a reader that sees the new config also sees the new weights
        files = sorted(tmp.rglob("*"), key=lambda p: (p.name == "config.json", str(p)))
        for f in files:
            if f.is_file():
                dest = directory / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class HubModule(nn.Module, PyTorchModelHubMixin):
    """Base of the backbones: atomic ``save_pretrained``, checked ``from_pretrained`` and a
    ``gradient_checkpointing`` switch used by :meth:`_run_block`."""

    gradient_checkpointing: bool = False

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them."""
        self.gradient_checkpointing = enabled

    def _run_block(self, block: nn.Module, *args):
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def num_parameters(self) -> int:
        """Number of parameters (works on the ``meta`` device)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``save_directory`` atomically."""
        _atomic_directory(
            Path(save_directory),
            lambda tmp: PyTorchModelHubMixin.save_pretrained(self, tmp, **kwargs),
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Rebuild from a folder written by :meth:`save_pretrained` (strict key matching)."""
        path = Path(pretrained_model_name_or_path)
        if path.exists():
            for name in ("config.json", "model.safetensors"):
                if not (path / name).is_file():
                    raise CheckpointError(f"{path / name}: file not found")
        if path.is_dir():
            check_config(path / "config.json", cls)
        kwargs.setdefault("strict", True)
        try:
            return PyTorchModelHubMixin.from_pretrained.__func__(
                cls, pretrained_model_name_or_path, **kwargs
            )
        except CheckpointError:
            raise
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"{path}: cannot load checkpoint ({e})") from e
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # the mixin decoding config values (stream specs, ...) into constructor types
            raise CheckpointError(f"{path / 'config.json'}: cannot decode ({e!r})") from e

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location="cpu", strict=True, **kwargs):
        # called by the mixin with the config as keyword arguments; replaces its lenient
        # loader (and its print) with one that names the file and key at fault
        folder = Path(model_id)
        model = build(cls, folder, {k: v for k, v in kwargs.items() if k not in HUB_ARGS})
        load_weights(model, folder / "model.safetensors", map_location, strict)
        return model.eval()
