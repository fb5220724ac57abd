"""Typed configs: dataclasses filled from named yaml presets plus dotted overrides.

A preset is ``<name>.yaml`` in the package's ``gesture_apps/configs/`` folder (the one source of
truth; the repository's top-level ``configs/README.md`` points there) or any path to a yaml file.
Overrides are ``section.key=value`` strings whose value is parsed as yaml (``train.lr=1e-3``,
``train.milestones=[10,20]``, ``model.parts=[upper,hands]``). Every unknown key, unknown preset
and wrongly typed value raises :class:`ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gesture_apps.errors import one_line

from ..errors import ConfigError

T = TypeVar("T")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def presets_dir() -> Path:
    """The folder holding the shipped presets, ``<system>/<preset>.yaml``."""
    return Path(str(resources.files("gesture_apps") / "configs"))


# flat names of the first release (``lsm_tiny``) -> ``<system>/<preset>``; saved commands and
# scripts keep working
_LEGACY_PREFIX = {
    "tokenizer": "tokenizer",
    "lsm": "gesturelsm",
    "reflow": "reflow",
    "distill": "distill",
}


def list_presets(system: str | None = None) -> list[str]:
    """Preset names ``<system>/<preset>`` (only ``system``'s when given). accelerate launch
    configs shipped beside the presets (``omniges/fsdp.yaml``, what ``train.fsdp=default``
    reads) are not recipe presets and are left out."""
    root = presets_dir()
    paths = [p for p in root.glob("*/*.yaml") if not is_launch_config(p)]
    names = sorted(f"{p.parent.name}/{p.stem}" for p in paths)
    return [n for n in names if system is None or n.split("/")[0] == system]


def is_launch_config(path: Path) -> bool:
    """Whether a yaml file is an accelerate launch config (a top-level ``distributed_type``)
    rather than a recipe preset (sections such as ``train:``)."""
    text = path.read_text(encoding="utf-8")
    return re.search(r"^distributed_type:", text, re.MULTILINE) is not None


def preset_path(name_or_path: str, system: str | None = None) -> Path:
    """The yaml file of a preset: ``gesturelsm/tiny``, ``tiny`` within ``system``, a first-
    release flat name (``lsm_tiny``) or a yaml path; errors name it."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    name = name_or_path
    prefix, _, rest = name.partition("_")
    if "/" not in name and prefix in _LEGACY_PREFIX and rest:
        name = f"{_LEGACY_PREFIX[prefix]}/{rest}"
    elif "/" not in name and system is not None:
        name = f"{system}/{name}"
    path = presets_dir() / f"{name}.yaml"
    if "/" not in name or not path.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r} (available: {', '.join(list_presets(system))})"
        )
    return path


def read_preset(name_or_path: str) -> dict[str, Any]:
    """Raw mapping of a preset name (``tokenizer_tiny``) or a path to a yaml file."""
    path = preset_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid yaml ({one_line(e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {_kind(data)}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], 0.001)``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value is not valid yaml") from None
    # yaml 1.1 reads "1e-3" as a string (no dot before the exponent); take it as a number
    if isinstance(parsed, str) and _NUMBER.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Copy of ``data`` with each dotted override set (intermediate mappings are created)."""
    data = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def from_dict(
    cls: type[T],
    data: dict[str, Any],
    where: str = "",
    *,
    source: str | Path | None = None,
    complete: bool = False,
) -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and value types recursively.

    ``source`` (the file the mapping came from) prefixes every error, so the message names
    both the file and the key. ``complete=True`` also refuses a missing key: a config saved
    by a run (``run_config.json``) must rebuild that run, and a default silently standing in
    for a lost key would train or load a different model.
    """
    if source is None:
        return _from_dict(cls, data, where, complete)
    try:
        return _from_dict(cls, data, where, complete)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


BACKFILL = "backfill"
"""Field metadata key: ``field(default=..., metadata={BACKFILL: True})`` lets a saved run
config without that key resume with the default (the default reproduces the older runs)."""


def _from_dict(cls: type[T], data: Any, where: str, complete: bool) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, found {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"unknown config key {key!r} (known: {', '.join(fields)})")
    if complete:
        # a key added after a run was saved may be missing when its default is exactly the
        # behaviour the older code had (field metadata ``BACKFILL``)
        missing = [k for k in fields if k not in data and not fields[k].metadata.get(BACKFILL)]
        if missing:
            key = f"{where}.{missing[0]}" if where else missing[0]
            raise ConfigError(f"missing config key {key!r}")
    kwargs = {
        k: _coerce(hints[k], v, f"{where}.{k}" if where else k, complete) for k, v in data.items()
    }
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {one_line(e)}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain mapping (tuples become lists) that :func:`from_dict` reads back."""
    return _plain(dataclasses.asdict(obj))


def load_config(
    cls: type[T], preset: str | dict[str, Any], overrides: list[str] | None = None
) -> T:
    """Preset name, yaml path or mapping + overrides -> validated ``cls`` instance."""
    data = read_preset(preset) if isinstance(preset, str) else preset
    source = preset_path(preset) if isinstance(preset, str) else None
    return from_dict(cls, apply_overrides(data, list(overrides or [])), source=source)


# ----- helpers ---------------------------------------------------------------------------


def _coerce(tp: Any, value: Any, where: str, complete: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, complete)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}: unexpected value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(repr, choices))}, found {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, {} if value is None and not complete else value, where, complete)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {_kind(value)} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
            return tuple(
                _coerce(a, v, f"{where}[{i}]", complete)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]", complete) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {_kind(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, found {value!r}")
        # yaml spells .nan and .inf; no setting means them, and a NaN slips through every
        # range check (nan <= 0 is False) into a run that trains on NaN
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, found {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # "data.source=1" parses as a number
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return value
    return value


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _deep_copy(x: Any) -> Any:
    return _plain(x)


def _kind(x: Any) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(x), type(x).__name__)


# accelerate config keys (fsdp_config section) -> FullyShardedDataParallelPlugin fields; the
# same names `accelerate launch --config_file` reads, so one file serves both ways
_FSDP_KEYS = {
    "fsdp_version": "fsdp_version",
    "fsdp_auto_wrap_policy": "auto_wrap_policy",
    "fsdp_transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap",
    "fsdp_min_num_params": "min_num_params",
    "fsdp_reshard_after_forward": "reshard_after_forward",
    "fsdp_state_dict_type": "state_dict_type",
    "fsdp_offload_params": "cpu_offload",
    "fsdp_activation_checkpointing": "activation_checkpointing",
    "fsdp_cpu_ram_efficient_loading": "cpu_ram_efficient_loading",
}


def fsdp_config_path(spec: str) -> Path:
    """The accelerate FSDP config a ``train.fsdp`` value names (``"default"``: the shipped
    ``configs/omniges/fsdp.yaml``; a system's name, e.g. ``omnihuman``: its shipped
    ``configs/<name>/fsdp.yaml``); raises :class:`ConfigError` for a missing file."""
    if spec == "default":
        return presets_dir() / "omniges" / "fsdp.yaml"
    if "/" not in spec and (presets_dir() / spec / "fsdp.yaml").is_file():
        return presets_dir() / spec / "fsdp.yaml"
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"train.fsdp: {path}: accelerate FSDP config file not found")
    return path


def read_fsdp_config(spec: str) -> tuple[Path, dict[str, Any]]:
    """The file ``train.fsdp`` names and the ``FullyShardedDataParallelPlugin`` keyword
    arguments of its ``fsdp_config`` section (the trainer builds the plugin; this module
    imports no torch).

    Only FSDP2 with full-state-dict checkpoints is supported (what the Trainer's checkpoints
    are tested with); every other value is an error naming the file and the key."""
    path = fsdp_config_path(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable yaml file ({one_line(e, 200)})") from None
    if not isinstance(data, dict) or data.get("distributed_type") != "FSDP":
        found = data.get("distributed_type") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{path}: distributed_type: expected FSDP, found {found!r}")
    section = data.get("fsdp_config")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: fsdp_config: expected a mapping, found {section!r}")
    unknown = sorted(set(section) - set(_FSDP_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: fsdp_config: unsupported key(s) {unknown} (supported: {sorted(_FSDP_KEYS)})"
        )
    if section.get("fsdp_version") != 2:
        raise ConfigError(
            f"{path}: fsdp_config.fsdp_version: expected 2 (FSDP2, fully_shard), "
            f"found {section.get('fsdp_version')!r}"
        )
    state_dict_type = str(section.get("fsdp_state_dict_type", "FULL_STATE_DICT"))
    if state_dict_type.upper() != "FULL_STATE_DICT":
        raise ConfigError(
            f"{path}: fsdp_config.fsdp_state_dict_type: expected FULL_STATE_DICT (checkpoints "
            f"are gathered to rank 0), found {state_dict_type!r}"
        )
    kwargs = {_FSDP_KEYS[k]: v for k, v in section.items()}
    names = kwargs.get("transformer_cls_names_to_wrap")
    if isinstance(names, str):
        kwargs["transformer_cls_names_to_wrap"] = [n.strip() for n in names.split(",")]
    return path, kwargs
