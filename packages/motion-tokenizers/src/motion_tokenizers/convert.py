"""Import tokenizer checkpoints trained with the reference code.

Reads ``.pth`` files written by MoMask (``{"vq_model": state_dict, ...}``), GestureLSM
(``{"net": state_dict}``, RVQ layers with an ``embedding_proj`` Linear on the codebook) and
T2M-GPT (``{"net": state_dict}`` of ``HumanVQVAE``, keys under ``vqvae.``), with
``torch.load(weights_only=True)``, never a full unpickle. The convolution weights load unchanged
(our module layout keeps their key names); each EMA codebook is copied into
vector-quantize-pytorch's buffers. GestureLSM's ``embedding_proj`` is folded into the codebook
(``proj(codebook)`` is the set of vectors its forward pass both searches and outputs), so forward,
encode and decode all agree with its forward pass.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from .base import MotionTokenizer
from .errors import CheckpointError
from .rvqvae import RVQVAE
from .sg_rvq import SGRVQVAE, is_sg_rvq_checkpoint
from .vqvae import VQVAE

_CODEBOOK = re.compile(
    r"^quantizer\.(?:layers\.(\d+)\.)?(codebook|embedding_proj\.weight|embedding_proj\.bias)$"
)


def read_reference_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The model state dict inside a MoMask / GestureLSM / T2M-GPT ``.pth`` file (under
    ``vq_model``, ``net``, ``model_state_dict``, ``model`` or ``state_dict``), with the DDP
    ``module.`` and T2M-GPT ``vqvae.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, a pickle that needs code, ...
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({e})") from e
    if isinstance(obj, dict):
        for key in ("vq_model", "net", "model_state_dict", "model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: no state dict under 'vq_model', 'net', 'model_state_dict' or 'model'"
        )
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise CheckpointError(
                f"{path}: key {k!r} holds {type(v).__name__}, expected a tensor under a str key"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            # a NaN weight makes every code and reconstruction NaN
            raise CheckpointError(f"{path}: key {k!r} holds NaN or infinite values")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "vqvae."):  # DDP wrapper, T2M-GPT's HumanVQVAE
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _codebooks(state: dict[str, Tensor], source: str, raw: bool = False) -> list[Tensor]:
    """Each RVQ layer's codebook as its forward pass uses it (GestureLSM's ``embedding_proj``
    applied), or as stored with ``raw``."""
    layers: dict[int, dict[str, Tensor]] = {}
    for k, v in state.items():
        m = _CODEBOOK.match(k)
        if m:
            layers.setdefault(int(m.group(1) or 0), {})[m.group(2)] = v
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(
            f"{source}: missing quantizer codebook keys (quantizer.layers.N.codebook)"
        )
    books = []
    for i in range(len(layers)):
        entry = layers[i]
        if "codebook" not in entry:
            raise CheckpointError(f"{source}: missing key quantizer.layers.{i}.codebook")
        cb = entry["codebook"].float()
        if cb.ndim != 2:
            raise CheckpointError(
                f"{source}: key quantizer.layers.{i}.codebook expected shape (nb_code, code_dim), "
                f"found {tuple(cb.shape)}"
            )
        if "embedding_proj.weight" in entry and not raw:  # GestureLSM
            if "embedding_proj.bias" not in entry:
                raise CheckpointError(
                    f"{source}: missing key quantizer.layers.{i}.embedding_proj.bias"
                )
            cb = (
                cb @ entry["embedding_proj.weight"].float().t()
                + entry["embedding_proj.bias"].float()
            )
        books.append(cb)
    return books


def infer_config(state: dict[str, Tensor], source: str = "state dict") -> dict:
    """Constructor arguments implied by a reference state dict's shapes."""
    books = _codebooks(state, source)
    first = state["encoder.model.0.weight"]
    down = sorted(
        {int(m.group(1)) for k in state if (m := re.match(r"encoder\.model\.(\d+)\.0\.weight$", k))}
    )
    depth = len(
        {m.group(1) for k in state if (m := re.match(r"encoder\.model\.2\.1\.model\.(\d+)\.", k))}
    )
    return dict(
        input_dim=first.shape[1],
        width=first.shape[0],
        nb_code=books[0].shape[0],
        code_dim=books[0].shape[1],
        num_quantizers=len(books),
        down_t=len(down),
        depth=depth,
    )


def load_reference_weights(
    model: MotionTokenizer, state: dict[str, Tensor], source: str = "checkpoint"
) -> None:
    """Copy a reference state dict into ``model`` (same architecture), codebooks included."""
    books = _codebooks(state, source)
    if len(books) != model.num_quantizers:
        raise CheckpointError(
            f"{source}: {len(books)} codebooks, the model has {model.num_quantizers}"
        )
    conv = {k: v for k, v in state.items() if not k.startswith("quantizer.")}
    own = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("quantizer.") and k != "reference_codebooks"
    }
    missing, unexpected = sorted(own.keys() - conv.keys()), sorted(conv.keys() - own.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    for k, v in conv.items():
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
    model.load_state_dict(conv, strict=False)
    q = model.quantizer.q
    layers = [q] if model.quantizer.kind == "vq" else list(q.layers)
    with torch.no_grad():
        for layer, cb in zip(layers, books, strict=True):
            book = layer._codebook
            want = tuple(book.embed.shape[1:])
            if want != tuple(cb.shape):
                raise CheckpointError(f"{source}: codebook {tuple(cb.shape)}, expected {want}")
            # MoMask keeps its EMA statistics outside the state dict; restart them from count 1
            # per code (its own initial state) so further training behaves like theirs
            book.embed.copy_(cb.unsqueeze(0))
            book.cluster_size.fill_(1.0)
            book.embed_avg.copy_(cb.unsqueeze(0))
            book.initted.fill_(True)
        if getattr(model, "reference_codebooks", None) is not None:
            model.reference_codebooks.copy_(torch.stack(_codebooks(state, source, raw=True)))


def from_reference_checkpoint(path: str | os.PathLike, **overrides) -> MotionTokenizer | SGRVQVAE:
    """Build an :class:`RVQVAE` (MoMask, GestureLSM) or :class:`VQVAE` (T2M-GPT) from a ``.pth``,
    or an :class:`SGRVQVAE` from Semantic Gesticulator's ``rqvae.pt`` (recognised by its
    ``vqvae_body.`` / ``vqvae_hands.`` keys; its sizes come from the config it carries).

    Sizes are read from the tensors; pass ``activation``/``norm``/``dilation_growth_rate`` etc.
    when they differ from the MoMask defaults.
    """
    if is_sg_rvq_checkpoint(path):
        if overrides:
            raise CheckpointError(
                f"{path}: an SG rqvae.pt takes no overrides, found {sorted(overrides)}"
            )
        return SGRVQVAE.from_reference_checkpoint(path)
    state = read_reference_state_dict(path)
    try:
        cfg = infer_config(state, str(path))
    except KeyError as e:
        raise CheckpointError(f"{path}: missing key {e}") from e
    except (IndexError, RuntimeError) as e:  # a tensor of the wrong rank where a size is read
        raise CheckpointError(f"{path}: tensor shapes do not fit a tokenizer ({e})") from e
    single = "quantizer.codebook" in state
    if single:
        cfg.pop("num_quantizers")
        model: MotionTokenizer = VQVAE(cfg.pop("input_dim"), **{**cfg, **overrides})
    else:
        # GestureLSM: keep the raw codebooks for decode_indices(reference=True)
        cfg["reference_codebooks"] = any("embedding_proj" in k for k in state)
        model = RVQVAE(cfg.pop("input_dim"), **{**cfg, **overrides})
    try:
        load_reference_weights(model, state, str(path))
    except RuntimeError as e:  # load_state_dict / copy_ on shapes the checks above missed
        raise CheckpointError(f"{path}: {' '.join(str(e).split())}") from e
    return model.eval()
