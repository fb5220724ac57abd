"""Bad-input campaign over flow_backbones' checkpoint loading and model entry points.

Every case must raise :class:`CheckpointError` (files) or :class:`FlowInputError` (tensors)
whose message names the file or argument (and the key when one is at fault). Failure
messages start with UNTYPED, SILENT or MESSAGE so a run on old code can be tallied. A path
that does not exist at all is covered by the no-network tests, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from flow_backbones import CheckpointError, DiT, FlowInputError, MMDiT, SpatialTemporalDenoiser

TYPED = (CheckpointError, FlowInputError)
CLASSES = {"mmdit": MMDiT, "dit": DiT, "st": SpatialTemporalDenoiser}


def expect_error(fn, *names, kind=TYPED):
    try:
        out = fn()
    except kind as e:
        msg = str(e)
        for n in names:
            assert str(n) in msg, f"MESSAGE: {msg[:300]!r} does not name {n!r}"
        return
    except Exception as e:
        pytest.fail(f"UNTYPED: {type(e).__name__}: {str(e)[:200]}")
    pytest.fail(f"SILENT: returned {type(out).__name__}")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for name, cls in CLASSES.items():
        cls.tiny().save_pretrained(root / name)
    return root


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.rglob("*"):
        if f.is_file():
            t = dst / f.relative_to(src)
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_bytes(f.read_bytes())
    return dst


def _edit_config(d: Path, fn):
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(fn(cfg)))


def _edit_tensors(d: Path, fn):
    # clone out of the memory map before the file is overwritten in place
    t = {k: v.clone() for k, v in load_file(str(d / "model.safetensors")).items()}
    fn(t)
    save_file(t, str(d / "model.safetensors"))


def _first_weight(t):
    return next(k for k in sorted(t) if k.endswith("weight") and t[k].ndim > 1)


FOLDER_CASES = [
    "folder_is_file",
    "no_config",
    "no_weights",
    "config_empty",
    "config_garbage",
    "config_list",
    "config_null",
    "config_unknown_key",
    "config_wrong_type",
    "config_negative",
    "config_nan",
    "config_mismatch",
    "weights_empty",
    "weights_garbage",
    "weights_truncated",
    "weights_pickle",
    "tensor_missing",
    "tensor_extra",
    "tensor_wrong_shape",
    "tensor_nan",
    "tensor_inf",
    "weights_directory",
]


def _folder_case(kind: str, src: Path, tmp: Path):
    d = tmp / "model"
    if kind == "folder_missing":
        return d, ()
    if kind == "folder_is_file":
        d.write_text("x")
        return d, ()
    d = _copy(src, d)
    cfg, w = d / "config.json", d / "model.safetensors"
    if kind == "no_config":
        cfg.unlink()
        return d, ("config.json",)
    if kind == "no_weights":
        w.unlink()
        return d, ("model.safetensors",)
    if kind == "weights_directory":
        w.unlink()
        w.mkdir()
        return d, ("model.safetensors",)
    if kind.startswith("config_"):
        what = kind[len("config_") :]
        text = {
            "empty": "",
            "garbage": "{not json",
            "list": "[1, 2]",
            "null": "null",
        }.get(what)
        if text is not None:
            cfg.write_text(text)
        elif what == "unknown_key":
            _edit_config(d, lambda c: {**c, "bogus_option": 3})
        elif what == "wrong_type":
            _edit_config(d, lambda c: {**c, "nb_code": "many"})
        elif what == "negative":
            _edit_config(d, lambda c: {**c, "nb_code": -4})
        elif what == "nan":
            cfg.write_text(cfg.read_text().replace("{", '{"quantize_dropout_prob": NaN, ', 1))
        elif what == "mismatch":
            _edit_config(d, lambda c: {**c, "width": c.get("width", 16) * 2})
        return d, ("config.json",)
    if kind == "weights_empty":
        w.write_bytes(b"")
        return d, ("model.safetensors",)
    if kind == "weights_garbage":
        w.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" * 5)
        return d, ("model.safetensors",)
    if kind == "weights_truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        return d, ("model.safetensors",)
    if kind == "weights_pickle":
        torch.save({k: v.clone() for k, v in load_file(str(w)).items()}, w)
        return d, ("model.safetensors",)
    key = {}

    def change(t):
        k = _first_weight(t)
        key["k"] = k
        if kind == "tensor_missing":
            del t[k]
        elif kind == "tensor_extra":
            t["extra.weight"] = torch.zeros(2)
            key["k"] = "extra.weight"
        elif kind == "tensor_wrong_shape":
            t[k] = torch.zeros(*t[k].shape[:-1], t[k].shape[-1] + 1)
        elif kind == "tensor_nan":
            t[k] = t[k].clone()
            t[k].view(-1)[0] = float("nan")
        elif kind == "tensor_inf":
            t[k] = t[k].clone()
            t[k].view(-1)[-1] = float("inf")

    _edit_tensors(d, change)
    return d, ("model.safetensors", key["k"]) if kind != "tensor_missing" else (key["k"],)


@pytest.mark.parametrize("kind", FOLDER_CASES)
@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_from_pretrained_bad(cls_name, kind, saved, tmp_path):
    d, names = _folder_case(kind, saved / cls_name, tmp_path)
    expect_error(lambda: CLASSES[cls_name].from_pretrained(d), *names, kind=CheckpointError)


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_from_pretrained_good(cls_name, saved):
    assert isinstance(CLASSES[cls_name].from_pretrained(saved / cls_name), CLASSES[cls_name])


@pytest.fixture(scope="module")
def mmdit():
    return MMDiT.tiny().eval()


def _xs():
    return {"gesture": torch.randn(2, 16, 8), "audio": torch.randn(2, 24, 4)}


MMDIT_CASES = {
    "unknown_stream": (lambda m: m({"bogus": torch.randn(2, 4, 8)}, {"bogus": 0.5}), "bogus"),
    "wrong_channels": (
        lambda m: m({**_xs(), "gesture": torch.randn(2, 16, 7)}, {"gesture": 0.5, "audio": 1.0}),
        "gesture",
    ),
    "x_2d": (
        lambda m: m({**_xs(), "gesture": torch.randn(16, 8)}, {"gesture": 0.5, "audio": 1.0}),
        "gesture",
    ),
    "t_out_of_range": (lambda m: m(_xs(), {"gesture": 2.0, "audio": 1.0}), "gesture"),
    "t_nan": (lambda m: m(_xs(), {"gesture": float("nan"), "audio": 1.0}), "gesture"),
    "t_wrong_batch": (lambda m: m(_xs(), {"gesture": torch.rand(3), "audio": 1.0}), "gesture"),
    "t_missing": (lambda m: m(_xs(), {"audio": 1.0}), "gesture"),
    "batch_mismatch": (
        lambda m: m({**_xs(), "audio": torch.randn(3, 24, 4)}, {"gesture": 0.5, "audio": 1.0}),
        "audio",
    ),
    "mask_wrong_shape": (
        lambda m: m(
            _xs(), {"gesture": 0.5, "audio": 1.0}, {"audio": torch.ones(2, 5, dtype=torch.bool)}
        ),
        "audio",
    ),
    "mask_float": (
        lambda m: m(_xs(), {"gesture": 0.5, "audio": 1.0}, {"audio": torch.ones(2, 24)}),
        "audio",
    ),
}


@pytest.mark.parametrize("kind", sorted(MMDIT_CASES))
def test_mmdit_inputs_bad(kind, mmdit):
    fn, name = MMDIT_CASES[kind]
    expect_error(lambda: fn(mmdit), name, kind=FlowInputError)
