"""The one export format: a bundle folder.

::

    manifest.json       {"format": "gesture-bundle/1", "system": "gesturelsm", "layout": "beat2",
                         "fps": 30.0, "sample_rate": 16000,
                         "components": {"generator": {"config": {...}}, "tokenizer": {...}, ...}}
    generator/          config.json + model.safetensors (+ model_ema.safetensors)
    tokenizer/          config.json + model.safetensors (save_pretrained)
    normalizer/         normalizer.npz
    vocabulary/         vocab.txt

Every exported model is one: :func:`write_bundle` writes it (whole, into a temporary sibling
that replaces the target; see :func:`~motion_tokenizers.io.atomic_directory` for the caller's
run folder) and :func:`open_bundle` reads it. ``gesture generate --checkpoint B`` dispatches on
``system``. The manifest holds each component's full config, so a reader knows every size
without building a network.

The first release wrote ``lsm/`` (``config.json``, weights, ``vocab.txt``, ``normalizer.npz``
and ``tokenizer/`` side by side) and ``tokenizer/`` (``model/``, ``model_ema/``,
``normalizer.npz``); :func:`open_bundle` reads both as bundles of their system.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gesture_apps.errors import GenerationError, one_line
from gesture_apps.runtime.checkpoint import resolve_checkpoint

FORMAT = "gesture-bundle/1"
MANIFEST = "manifest.json"
# manifest keys and their types; a hand-edited or foreign manifest fails here, naming the key
_KEYS = {
    "format": str,
    "system": str,
    "layout": str,
    "fps": (int, float),
    "sample_rate": int,
    "components": dict,
}


@dataclass(frozen=True)
class Bundle:
    """An exported model on disk: ``manifest`` plus where each component's files live."""

    folder: Path
    manifest: dict[str, Any]
    dirs: dict[str, Path] = field(default_factory=dict)
    legacy: bool = False

    @property
    def system(self) -> str:
        return self.manifest["system"]

    def config(self, component: str) -> dict[str, Any]:
        """The full config the manifest stores for ``component``."""
        return self.manifest["components"][component]["config"]

    def has(self, component: str) -> bool:
        return component in self.dirs

    def path(self, component: str, name: str = "") -> Path:
        """``component``'s folder (or the file ``name`` in it)."""
        if component not in self.dirs:
            raise GenerationError(
                f"{self.folder}: the bundle has no {component!r} component "
                f"(it has {sorted(self.dirs)})"
            )
        return self.dirs[component] / name if name else self.dirs[component]


def write_bundle(
    folder: str | Path,
    *,
    system: str,
    components: dict[str, tuple[dict[str, Any] | None, Callable[[Path], None]]],
    layout: str = "beat2",
    fps: float = 30.0,
    sample_rate: int = 16000,
) -> Path:
    """Write a bundle into ``folder`` (a fresh or temporary folder; callers make it atomic).

    ``components`` maps a name to ``(full config, write(subfolder))``; a config of ``None``
    is the ``config.json`` that ``write`` saved (``save_pretrained`` components)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configs = {}
    for name, (cfg, write) in components.items():
        sub = folder / name
        sub.mkdir()
        write(sub)
        configs[name] = cfg if cfg is not None else json.loads((sub / "config.json").read_text())
    manifest = {
        "format": FORMAT,
        "system": system,
        "layout": layout,
        "fps": float(fps),
        "sample_rate": int(sample_rate),
        "components": {name: {"config": cfg} for name, cfg in configs.items()},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def find_bundle(path: str | Path, export: str | None = None) -> Path:
    """The bundle folder of a bundle, a run folder (its ``export`` entry) or a checkpoint."""
    p = Path(path).expanduser()
    if not p.exists():
        raise GenerationError(f"{p}: checkpoint not found")
    names = [export] if export else ["lsm", "tokenizer"]
    if _looks_like_bundle(p):
        return p
    for name in names:
        if _looks_like_bundle(p / name):
            return p / name
    if (p / "checkpoints").is_dir() or (p / "trainer_state.json").is_file():
        ck = resolve_checkpoint(p)  # CheckpointError (a ValueError) for broken runs
        for name in names:
            if _looks_like_bundle(ck / name):
                return ck / name
    raise GenerationError(
        f"{p}: not an exported model (expected a bundle with {MANIFEST}, a run folder or a "
        "checkpoints/step_* folder)"
    )


def open_bundle(path: str | Path, export: str | None = None) -> Bundle:
    """Read the manifest of the bundle at ``path`` (see :func:`find_bundle`); first-release
    ``lsm/`` and ``tokenizer/`` exports open as bundles of their system."""
    folder = find_bundle(path, export)
    if not (folder / MANIFEST).is_file():
        return _legacy(folder)
    where = folder / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenerationError(f"{where}: unreadable manifest ({one_line(e, 200)})") from None
    if not isinstance(manifest, dict):
        raise GenerationError(f"{where}: expected a JSON object")
    for key, kind in _KEYS.items():
        if key not in manifest:
            raise GenerationError(f"{where}: missing key {key!r}")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise GenerationError(f"{where}: {key!r} has the wrong type")
    if manifest["format"] != FORMAT:
        raise GenerationError(
            f"{where}: format {manifest['format']!r} is not {FORMAT!r} (written by a newer "
            "gesture-apps?)"
        )
    dirs = {}
    for name, entry in manifest["components"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise GenerationError(f"{where}: components.{name}.config must be an object")
        if not (folder / name).is_dir():
            raise GenerationError(f"{folder / name}: component folder missing")
        dirs[name] = folder / name
    return Bundle(folder, manifest, dirs)


def _looks_like_bundle(p: Path) -> bool:
    return (p / MANIFEST).is_file() or _legacy_kind(p) is not None


def _legacy_kind(p: Path) -> str | None:
    if (p / "config.json").is_file() and (p / "tokenizer").is_dir():
        return "gesturelsm"
    if (p / "normalizer.npz").is_file() and (p / "model").is_dir():
        return "tokenizer"
    return None


def _legacy(folder: Path) -> Bundle:
    """A first-release export as a bundle: the same files, found where that release put
    them; the manifest is rebuilt from them."""
    kind = _legacy_kind(folder)
    if kind == "gesturelsm":
        try:
            spec = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GenerationError(
                f"{folder / 'config.json'}: corrupt checkpoint ({one_line(e, 200)})"
            ) from None
        dirs = {
            "generator": folder,
            "tokenizer": folder / "tokenizer",
            "normalizer": folder,
            "vocabulary": folder,
        }
        configs = {"generator": spec, "tokenizer": {}, "normalizer": {}, "vocabulary": {}}
    else:
        dirs = {"tokenizer": folder / "model", "normalizer": folder}
        if (folder / "model_ema").is_dir():
            dirs["tokenizer_ema"] = folder / "model_ema"
        configs = {k: {} for k in dirs}
    manifest = {
        "format": FORMAT,
        "system": kind,
        "layout": "beat2",
        "fps": 30.0,
        "sample_rate": 16000,
        "components": {k: {"config": v} for k, v in configs.items()},
    }
    return Bundle(folder, manifest, dirs, legacy=True)
