"""Saving and loading: ``config.json`` + ``model.safetensors``, each written atomically.

Every backbone derives from :class:`HubModule`: ``nn.Module`` + huggingface_hub's
``PyTorchModelHubMixin``, whose typed keyword constructor is the saved config.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._strict import HUB_ARGS, build, check_config, load_weights
from .errors import CheckpointError


def _atomic_directory(directory: Path, write) -> None:
    """Fill a new hidden sibling folder with ``write(tmp)``, then swap it in whole: no file of
    an earlier save survives, and a reader sees the old folder or the new one, never a mix.
    Modes follow the umask (0755 / 0644 under umask 022). The same scheme as
    ``motion_tokenizers.io.atomic_directory``; libraries do not import each other."""
    directory = Path(directory).resolve()
    if directory.exists() and Path.cwd().resolve().is_relative_to(directory):
        raise CheckpointError(f"{directory}: refusing to replace the working directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling_dir(directory)
    trash: list[Path] = []
    try:
        dir_mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o777 & ~umask, applied by the kernel
        write(tmp)
        _set_modes(tmp, dir_mode)
        for _ in range(10):
            try:
                os.rename(tmp, directory)  # replaces only an absent or empty folder
                break
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or directory.is_symlink():
                    raise
            old = directory.parent / f".{directory.name}.old-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.rename(directory, old)
                trash.append(old)
        else:
            raise CheckpointError(f"{directory}: replaced by other writers 10 times in a row")
    finally:
        for old in [tmp, *trash]:
            shutil.rmtree(old, ignore_errors=True)


def _set_modes(root: Path, dir_mode: int) -> None:
    """Give every folder under ``root`` ``dir_mode`` and every file ``dir_mode & 0o666``: what
    the umask gives a plain ``mkdir``/``open`` (``dir_mode`` is the kernel's own answer, read
    off a folder we just made with 0o777). Some writers (safetensors >= 0.8) leave 0600 files."""
    file_mode = dir_mode & 0o666
    for parent, dirs, files in os.walk(root):
        for name, want in [*((d, dir_mode) for d in dirs), *((f, file_mode) for f in files)]:
            entry = os.path.join(parent, name)
            st = os.lstat(entry)
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != want:
                os.chmod(entry, want)


def _new_sibling_dir(target: Path) -> Path:
    # os.mkdir(0o777) lets the kernel apply the umask (mkdtemp would force 0700); the
    # folder sits beside the target so the final rename never crosses file systems
    for _ in range(100):
        candidate = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
        try:
            os.mkdir(candidate, 0o777)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


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
        """Rebuild from a local folder written by :meth:`save_pretrained` (strict key matching).

        Only local folders: a missing path raises :class:`CheckpointError` at once instead
        of being taken for a Hub repository id (nothing is downloaded at run time)."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder not found")
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: file not found")
        check_config(path / "config.json", cls)
        kwargs.setdefault("strict", True)
        kwargs["local_files_only"] = True  # a second guard: the Hub client must not dial out
        try:
            return PyTorchModelHubMixin.from_pretrained.__func__(cls, path, **kwargs)
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
