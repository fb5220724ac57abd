"""Bad-input campaign over motion_tokenizers' loaders and tensor entry points.

Every case must raise :class:`CheckpointError` (files) or :class:`TokenizerInputError`
(tensors) whose message names the file or argument (and the key when one is at fault).
Failure messages start with UNTYPED (another exception escaped), SILENT (a result came back)
or MESSAGE (typed but does not say where) so a run on old code can be tallied.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from motion_tokenizers import (
    RVQVAE,
    VQVAE,
    CheckpointError,
    MultiPartTokenizer,
    TokenizerInputError,
    from_reference_checkpoint,
)
from motion_tokenizers.io import load_state, save_state

TYPED = (CheckpointError, TokenizerInputError)


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
    RVQVAE.tiny(12).save_pretrained(root / "rvq")
    VQVAE.tiny(12).save_pretrained(root / "vq")
    MultiPartTokenizer.tiny({"upper": 12, "hands": 6}).save_pretrained(root / "multi")
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
    "folder_missing",
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
            _edit_config(d, lambda c: {**c, "code_dim": float("nan")})  # json writes NaN
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
@pytest.mark.parametrize("cls_name", ["rvq", "vq"])
def test_from_pretrained_bad(cls_name, kind, saved, tmp_path):
    cls = {"rvq": RVQVAE, "vq": VQVAE}[cls_name]
    d, names = _folder_case(kind, saved / cls_name, tmp_path)
    expect_error(lambda: cls.from_pretrained(d), *names, kind=CheckpointError)


def test_from_pretrained_good(saved):
    m = RVQVAE.from_pretrained(saved / "rvq")
    assert isinstance(m, RVQVAE)


MULTI_CASES = [
    "config_garbage",
    "no_parts",
    "parts_not_list",
    "part_not_object",
    "part_no_name",
    "unknown_class",
    "part_folder_missing",
    "part_escapes_folder",
    "latent_scale_text",
    "latent_scale_nan",
    "latent_scale_zero",
    "part_tensor_nan",
    "duplicate_part",
]


def _multi_case(kind: str, src: Path, tmp: Path):
    d = _copy(src, tmp / "multi")
    cfg = d / "config.json"
    c = json.loads(cfg.read_text())
    part = c["parts"][0]
    if kind == "config_garbage":
        cfg.write_text("{")
    elif kind == "no_parts":
        del c["parts"]
    elif kind == "parts_not_list":
        c["parts"] = "upper"
    elif kind == "part_not_object":
        c["parts"] = ["upper"]
    elif kind == "part_no_name":
        del part["name"]
    elif kind == "unknown_class":
        part["class"] = "Transformer"
    elif kind == "part_folder_missing":
        import shutil

        shutil.rmtree(d / part["name"])
        return d, (part["name"],)
    elif kind == "part_escapes_folder":
        part["name"] = "../../etc"
    elif kind == "latent_scale_text":
        c["latent_scale"] = "five"
    elif kind == "latent_scale_nan":
        c["latent_scale"] = float("nan")
    elif kind == "latent_scale_zero":
        c["latent_scale"] = 0.0
    elif kind == "part_tensor_nan":
        pd = d / part["name"]

        def nan(t):
            k = _first_weight(t)
            t[k] = torch.full_like(t[k], float("nan"))

        _edit_tensors(pd, nan)
        return d, ("model.safetensors",)
    elif kind == "duplicate_part":
        c["parts"].append(dict(part))
    if kind != "config_garbage":
        cfg.write_text(json.dumps(c))
    return d, ("config.json",)


@pytest.mark.parametrize("kind", MULTI_CASES)
def test_multipart_from_pretrained_bad(kind, saved, tmp_path):
    d, names = _multi_case(kind, saved / "multi", tmp_path)
    expect_error(lambda: MultiPartTokenizer.from_pretrained(d), *names, kind=CheckpointError)


# ---------------------------------------------------------------------------------------
# reference checkpoints (.pth): weights_only=True, nothing arbitrary is ever unpickled
def _ref_state():
    ours = RVQVAE(12, nb_code=16, code_dim=8, num_quantizers=2, width=16, depth=2)
    g = torch.Generator().manual_seed(0)
    s = {
        k: torch.randn(v.shape, generator=g) * 0.1
        for k, v in ours.state_dict().items()
        if not k.startswith("quantizer.")
    }
    for i in range(2):
        s[f"quantizer.layers.{i}.codebook"] = torch.randn(16, 8, generator=g) * 0.3
    return s


class Evil:
    """Unpickling this runs code: a checkpoint holding it must be refused unread."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/_gesture_bad_input_pwned",))


class Custom:
    def __init__(self):
        self.state = {"a": torch.zeros(2)}


REF_CASES = [
    "missing",
    "directory",
    "empty",
    "garbage",
    "truncated",
    "legacy_pickle_evil",
    "zip_evil",
    "custom_class",
    "numpy_array",
    "plain_list",
    "no_state_dict",
    "non_tensor_values",
    "no_encoder_key",
    "no_codebook",
    "codebook_gap",
    "proj_without_bias",
    "wrong_conv_shape",
    "codebook_1d",
    "tensor_nan",
    "codebook_inf",
    "int_keys",
]


def _ref_case(kind: str, tmp: Path):
    p = tmp / "net.pth"
    s = _ref_state()
    if kind == "missing":
        return p, ()
    if kind == "directory":
        p.mkdir()
        return p, ()
    if kind == "empty":
        p.write_bytes(b"")
        return p, ()
    if kind == "garbage":
        p.write_bytes(b"\x80\x04garbage" * 10)
        return p, ()
    if kind == "truncated":
        torch.save({"net": s}, p)
        p.write_bytes(p.read_bytes()[:1000])
        return p, ()
    if kind == "legacy_pickle_evil":
        p.write_bytes(pickle.dumps({"net": Evil()}))
        return p, ()
    if kind == "zip_evil":
        torch.save({"net": s, "extra": Evil()}, p)
        return p, ()
    if kind == "custom_class":
        torch.save({"net": Custom()}, p)
        return p, ()
    if kind == "numpy_array":
        torch.save({"net": {k: v.numpy() for k, v in s.items()}}, p)
        return p, ()
    if kind == "plain_list":
        torch.save([1, 2, 3], p)
        return p, ()
    if kind == "no_state_dict":
        torch.save({"epoch": 3}, p)
        return p, ()
    if kind == "non_tensor_values":
        s["encoder.model.0.weight"] = [1.0, 2.0]
        torch.save({"net": s}, p)
        return p, ("encoder.model.0.weight",)
    if kind == "int_keys":
        torch.save({"net": {0: torch.zeros(2)}}, p)
        return p, ()
    names: tuple = ()
    if kind == "no_encoder_key":
        del s["encoder.model.0.weight"]
        names = ("encoder.model.0.weight",)
    elif kind == "no_codebook":
        del s["quantizer.layers.0.codebook"], s["quantizer.layers.1.codebook"]
        names = ("codebook",)
    elif kind == "codebook_gap":
        s["quantizer.layers.3.codebook"] = s.pop("quantizer.layers.1.codebook")
        names = ("codebook",)
    elif kind == "proj_without_bias":
        s["quantizer.layers.0.embedding_proj.weight"] = torch.eye(8)
        s["quantizer.layers.1.embedding_proj.weight"] = torch.eye(8)
        names = ("embedding_proj.bias",)
    elif kind == "wrong_conv_shape":
        s["decoder.model.0.weight"] = torch.zeros(3, 3, 3)
        names = ("decoder.model.0.weight",)
    elif kind == "codebook_1d":
        s["quantizer.layers.0.codebook"] = torch.zeros(16)
        names = ("quantizer.layers.0.codebook",)
    elif kind == "tensor_nan":
        s["decoder.model.0.weight"] = s["decoder.model.0.weight"].clone()
        s["decoder.model.0.weight"].view(-1)[3] = float("nan")
        names = ("decoder.model.0.weight",)
    elif kind == "codebook_inf":
        s["quantizer.layers.1.codebook"] = s["quantizer.layers.1.codebook"].clone()
        s["quantizer.layers.1.codebook"][2, 2] = float("inf")
        names = ("quantizer.layers.1.codebook",)
    torch.save({"net": s}, p)
    return p, names


@pytest.mark.parametrize("kind", REF_CASES)
def test_reference_checkpoint_bad(kind, tmp_path):
    marker = Path("/tmp/_gesture_bad_input_pwned")
    marker.unlink(missing_ok=True)
    p, names = _ref_case(kind, tmp_path)
    expect_error(lambda: from_reference_checkpoint(p), p.name, *names, kind=CheckpointError)
    assert not marker.exists(), "a checkpoint ran code while loading"


def test_reference_checkpoint_good(tmp_path):
    torch.save({"net": _ref_state()}, tmp_path / "net.pth")
    assert from_reference_checkpoint(tmp_path / "net.pth").num_quantizers == 2


# ---------------------------------------------------------------------------------------
# pickle-free training state
STATE_CASES = [
    "missing_json",
    "garbage_json",
    "garbage_tensors",
    "unknown_tensor_ref",
    "bad_intkeys",
    "bad_tuple",
    "json_not_utf8",
]


def _state_case(kind: str, tmp: Path):
    save_state({"step": 3, "opt": {0: {"m": torch.zeros(2)}}, "t": (1, 2)}, tmp)
    j = tmp / "state.json"
    if kind == "missing_json":
        j.unlink()
    elif kind == "garbage_json":
        j.write_text("{")
    elif kind == "garbage_tensors":
        (tmp / "state.safetensors").write_bytes(b"garbage")
    elif kind == "unknown_tensor_ref":
        j.write_text(json.dumps({"m": {"__tensor__": "t99"}}))
    elif kind == "bad_intkeys":
        j.write_text(json.dumps({"opt": {"__intkeys__": 5}}))
    elif kind == "bad_tuple":
        j.write_text(json.dumps({"t": {"__tuple__": 7}}))
    elif kind == "json_not_utf8":
        j.write_bytes(b"\xff\xfe{}")
    return tmp, ("state",)


@pytest.mark.parametrize("kind", STATE_CASES)
def test_load_state_bad(kind, tmp_path):
    d, names = _state_case(kind, tmp_path)
    expect_error(lambda: load_state(d), *names, kind=CheckpointError)


# ---------------------------------------------------------------------------------------
# tensors at the public API
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RVQVAE.tiny(12).eval()


def _x(T=16, C=12):
    return torch.randn(2, T, C)


TENSOR_CASES = {
    "encode_nan": lambda m: m.encode(_x().index_fill(1, torch.tensor([3]), float("nan"))),
    "encode_wrong_channels": lambda m: m.encode(_x(C=11)),
    "encode_2d": lambda m: m.encode(torch.randn(16, 12)),
    "encode_odd_length": lambda m: m.encode(_x(T=15)),
    "encode_numpy": lambda m: m.encode(_x().numpy()),
    "encode_int": lambda m: m.encode(torch.zeros(2, 16, 12, dtype=torch.long)),
    "forward_inf": lambda m: m(_x().index_fill(2, torch.tensor([0]), float("inf"))),
    "encode_continuous_empty": lambda m: m.encode_continuous(_x(T=0)),
    "decode_indices_out_of_range": lambda m: m.decode_indices(
        torch.full((1, 4, m.num_quantizers), 10_000)
    ),
    "decode_indices_negative": lambda m: m.decode_indices(torch.full((1, 4, 1), -5)),
    "decode_indices_float": lambda m: m.decode_indices(torch.zeros(1, 4, 1)),
    "decode_indices_too_many_layers": lambda m: m.decode_indices(
        torch.zeros(1, 4, m.num_quantizers + 1, dtype=torch.long)
    ),
    "decode_indices_2d": lambda m: m.decode_indices(torch.zeros(4, 1, dtype=torch.long)),
    "decode_indices_num_layers_0": lambda m: m.decode_indices(
        torch.zeros(1, 4, 1, dtype=torch.long), num_layers=0
    ),
    "decode_latent_nan": lambda m: m.decode_latent(torch.full((1, 4, m.code_dim), float("nan"))),
    "decode_latent_wrong_dim": lambda m: m.decode_latent(torch.zeros(1, 4, m.code_dim + 1)),
    "decode_nan": lambda m: m.decode(torch.full((1, 4, m.code_dim), float("nan"))),
}


@pytest.mark.parametrize("kind", sorted(TENSOR_CASES))
def test_tensor_inputs_bad(kind, model):
    arg = (
        "indices"
        if "indices" in kind
        else "latent"
        if "latent" in kind or kind == ("decode_nan")
        else "x"
    )
    if kind == "decode_indices_num_layers_0":
        arg = "num_layers"
    expect_error(lambda: TENSOR_CASES[kind](model), arg, kind=TokenizerInputError)
