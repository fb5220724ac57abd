"""OmniFlow import: its transformer as an :class:`~flow_backbones.MMDiT`.

Li et al. 2025, "OmniFlow: Any-to-Any Generation with Multi-Modal Rectified Flows"
(arXiv:2412.01169, github jacklishufan/OmniFlows). OmniFlow's ``OmniFlowTransformerModel`` is an
SD3 MMDiT with three streams, in this token order: image (2x2 patches of a ``(B, C, H, W)``
latent + a centre-cropped 2D sin-cos table), text (``context_embedder``, no positions) and audio
(2x2 patches of a ``(B, Ca, 256, 16)`` audio-VAE latent + its own cropped table). Each stream has
its own diffusers ``CombinedTimestepTextProjEmbeddings`` (time + pooled vector). The text stream
is ``context_pre_only`` in the last block and its head is ``Linear(D, J)``, AdaLN-continuous at
width J, ``Linear(J, T)``.

Mapping onto :class:`~flow_backbones.MMDiT` (``from_omniflow``):

* a ``Conv2d(k=p, s=p)`` patch embedding is the stream's input Linear over :func:`patchify`
  tokens (channels ordered ``(hp, wp, c)``), and the output Linear's tokens go through
  :func:`unpatchify`, the order of OmniFlow's ``proj_out`` rearrange;
* the 2D tables become ``pos="learned"`` tables: the image keeps all ``M * M`` rows and
  :func:`omniflow_forward` passes the cropped rows as ``positions``; the audio table keeps only
  the 1024 rows its fixed ``256 x 16`` latent uses (the full 192 x 192 grid is 36864 rows);
* OmniFlow's outputs are SD3 velocities (``noise - data``) at ``1000 * sigma`` timesteps; the
  imported image/audio output Linears are negated so that ``MMDiT.forward`` returns library
  velocities (``data - noise``) at library times (``time_input="sigma"`` does the time side).
  The text head is OmniFlow's as trained (an x0 prediction with ``--precondition_text_output``).

A real checkpoint may carry ``text_decoder.*`` keys (the text-VAE decoder): they are skipped.
"""

from __future__ import annotations

import json
import logging
import math
from os import PathLike
from pathlib import Path

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .errors import CheckpointError, FlowInputError
from .flow import sigma_to_t, velocity_to_diffusers
from .mmdit import MMDiT, StreamSpec  # mmdit imports this module only inside its methods

log = logging.getLogger(__name__)

AUDIO_HW = (256, 16)  # OmniFlow hard-codes its audio latent to 256 x 16, in 2x2 patches
AUDIO_PATCH = 2
AUDIO_GRID = 192  # its audio sin-cos table covers a 192 x 192 patch grid ...
AUDIO_BASE = 128  # ... scaled as if the grid were 256 // 2 wide
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
)

# OmniFlow's per-stream module names: (block norm, q, k, v, attention out, feed-forward,
# RMS q norm, RMS k norm, time embedder, output norm, output Linear)
_NAMES = {
    "image": dict(
        norm1="norm1",
        qkv=("attn.to_q", "attn.to_k", "attn.to_v"),
        out="attn.to_out.0",
        ff="ff",
        rms=("attn.norm_q", "attn.norm_k"),
        time="time_text_embed",  # the IMAGE timestep, despite the name
        norm_out="norm_out",
        proj_out="proj_out",
    ),
    "text": dict(
        norm1="norm1_context",
        qkv=("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
        out="attn.to_add_out",
        ff="ff_context",
        rms=("attn.norm_added_q", "attn.norm_added_k"),
        time="time_image_embed",  # the TEXT timestep (names swapped in OmniFlow)
        norm_out="norm_out_text",
        proj_out="text_output",
    ),
    "audio": dict(
        norm1="norm1_audio",
        qkv=("attn.aud_q_proj", "attn.aud_k_proj", "attn.aud_v_proj"),
        out="attn.to_aud_out",
        ff="ff_audio",
        rms=("attn.norm_aud_q", "attn.norm_aud_k"),
        time="time_aud_embed",
        norm_out="norm_out_aud",
        proj_out="proj_out_aud",
    ),
}


# ----- patch tokens ----------------------------------------------------------------------------


def patchify(latents: Tensor, patch: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p) * (W/p), p * p * C)`` tokens, row-major over the patch
    grid, channels ordered ``(hp, wp, c)``: a ``Conv2d(C, D, k=p, s=p)`` equals a Linear over
    these tokens with weight ``conv.weight.permute(0, 2, 3, 1).reshape(D, -1)``."""
    if not isinstance(latents, Tensor) or latents.ndim != 4:
        found = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
        raise FlowInputError(f"latents: expected shape (B, C, H, W), found {found}")
    B, C, H, W = latents.shape
    if H % patch or W % patch:
        raise FlowInputError(
            f"latents: expected H and W divisible by patch={patch}, found {(H, W)}"
        )
    x = latents.reshape(B, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)


def unpatchify(tokens: Tensor, channels: int, height: int, width: int, patch: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, (H/p) * (W/p), p * p * C)`` -> ``(B, C, H, W)``."""
    h, w = height // patch, width // patch
    want = (h * w, patch * patch * channels)
    if (
        not isinstance(tokens, Tensor)
        or tokens.ndim != 3
        or tuple(tokens.shape[1:]) != want
        or height % patch
        or width % patch
    ):
        found = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise FlowInputError(
            f"tokens: expected shape (B, {want[0]}, {want[1]}) for a {channels} x {height} x "
            f"{width} latent in {patch}x{patch} patches, found {found}"
        )
    x = tokens.reshape(tokens.shape[0], h, w, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(tokens.shape[0], channels, height, width)


def crop_rows(grid: int, height: int, width: int, device=None) -> Tensor:
    """Rows of a ``(grid * grid, D)`` row-major table that OmniFlow (diffusers ``PatchEmbed``)
    adds to an ``height x width`` patch grid: the centred crop, flattened row-major."""
    if height > grid or width > grid:
        raise FlowInputError(
            f"latents: a {height} x {width} patch grid is larger than the position table's "
            f"{grid} x {grid}"
        )
    top, left = (grid - height) // 2, (grid - width) // 2
    rows = torch.arange(top, top + height, device=device)[:, None] * grid
    return (rows + torch.arange(left, left + width, device=device)[None]).reshape(-1)


def _sincos_2d(dim: int, grid: int, base: int) -> Tensor:
    # the table diffusers' PatchEmbed keeps as a buffer: (grid * grid, dim)
    return get_2d_sincos_pos_embed(dim, grid, base_size=base, output_type="pt").float()


# ----- reading a checkpoint --------------------------------------------------------------------


def _read(path: Path) -> tuple[dict[str, Tensor], dict, Path]:
    """State dict (``module.`` stripped), config (empty without one) and the weights file."""
    if not path.exists():
        raise CheckpointError(f"{path}: OmniFlow transformer folder or file not found")
    config: dict = {}
    if path.is_dir():
        cfg = path / "config.json"
        if cfg.is_file():
            try:
                config = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{cfg}: not a readable JSON file ({e})") from e
            if not isinstance(config, dict):
                raise CheckpointError(f"{cfg}: expected a JSON object, found {type(config)}")
        found = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
        if not found:
            raise CheckpointError(f"{path}: no weights file; expected one of {WEIGHT_FILES}")
        path = found[0]
    try:
        if path.suffix == ".safetensors":
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, SafetensorError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd, config, path


class _Source:
    """Takes tensors out of a state dict, naming the file and key in every error."""

    def __init__(self, sd: dict[str, Tensor], path: Path):
        self.sd, self.path, self.used = sd, path, set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def __call__(self, key: str, shape: tuple[int, ...] | None = None) -> Tensor:
        if key not in self.sd:
            raise CheckpointError(f"{self.path}: missing key {key!r}")
        v = self.sd[key]
        if shape is not None and tuple(v.shape) != tuple(shape):
            raise CheckpointError(
                f"{self.path}: key {key!r} expected shape {tuple(shape)}, found {tuple(v.shape)}"
            )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{self.path}: key {key!r} holds NaN or infinite values")
        self.used.add(key)
        return v.float()


def build_omniflow(
    cls: type[MMDiT],
    *,
    dim: int,
    depth: int,
    num_heads: int,
    ff_mult: float = 4.0,
    joint_dim: int,
    pooled_dim: int,
    in_channels: int,
    out_channels: int,
    patch_size: int,
    pos_embed_max_size: int,
    audio_channels: int,
    text_out_dim: int,
    qk_norm: str | None,
    keep_image: bool = True,
    gesture_dim: int = 512,
    gesture_max_len: int = 128,
) -> MMDiT:
    """A freshly initialised :class:`~flow_backbones.MMDiT` shaped like an OmniFlow transformer
    (the architecture :func:`load_omniflow` fills; OmniFlow's config names in the docstring of
    :meth:`MMDiT.omniflow <flow_backbones.MMDiT.omniflow>`)."""
    p, M = patch_size, pos_embed_max_size
    if keep_image:
        first = (
            "image",
            StreamSpec(
                p * p * in_channels, out_dim=p * p * out_channels, max_len=M * M, pos="learned"
            ),
        )
    else:
        first = "gesture", StreamSpec(gesture_dim, max_len=gesture_max_len, pos="learned")
    streams = {
        first[0]: first[1],
        # text: no positions, only keys/values in the last block, head D -> J -> T
        "text": StreamSpec(
            joint_dim,
            out_dim=text_out_dim,
            pos="none",
            context_only_last=True,
            head_width=joint_dim,
        ),
        "audio": StreamSpec(AUDIO_PATCH**2 * audio_channels, max_len=1024, pos="learned"),
    }
    return cls(
        streams,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        ff_mult=ff_mult,
        qk_norm=qk_norm,
        qk_norm_eps=1e-5,
        per_stream_time=False,
        pooled_dim=pooled_dim,
        pooled_per_stream=True,
        time_scale=1000.0,
        time_input="sigma",
    )


def load_omniflow(
    cls: type[MMDiT],
    folder: str | PathLike,
    *,
    keep_image: bool = True,
    gesture_dim: int = 512,
    gesture_max_len: int = 128,
    num_heads: int | None = None,
) -> MMDiT:
    """Build ``cls`` (an :class:`~flow_backbones.MMDiT`) from OmniFlow weights; see
    :meth:`MMDiT.from_omniflow <flow_backbones.MMDiT.from_omniflow>`."""
    sd, config, path = _read(Path(folder))
    sd = {k: v for k, v in sd.items() if not k.startswith("text_decoder.")}
    take = _Source(sd, path)
    if config.get("use_audio_mae") or config.get("dual_attention_layers"):
        raise CheckpointError(
            f"{path}: use_audio_mae / dual_attention_layers variants are not supported "
            f"(found {config.get('use_audio_mae')!r}, {config.get('dual_attention_layers')!r})"
        )
    if config.get("add_audio") is False:
        raise CheckpointError(f"{path}: add_audio=False checkpoints are not supported")

    D, J = take("context_embedder.weight").shape
    conv = take("pos_embed.proj.weight")
    if conv.ndim != 4 or conv.shape[0] != D or conv.shape[2] != conv.shape[3]:
        raise CheckpointError(
            f"{path}: key 'pos_embed.proj.weight' expected shape ({D}, C, p, p), "
            f"found {tuple(conv.shape)}"
        )
    C, p = conv.shape[1], conv.shape[2]
    a_conv = take("audio_embedder.proj.weight")
    if a_conv.ndim != 4 or a_conv.shape[0] != D or a_conv.shape[2:] != (2, 2):
        raise CheckpointError(
            f"{path}: key 'audio_embedder.proj.weight' expected shape ({D}, Ca, 2, 2), "
            f"found {tuple(a_conv.shape)}"
        )
    Ca = a_conv.shape[1]
    P = take("time_text_embed.text_embedder.linear_1.weight").shape[1]
    out_img = take("proj_out.weight").shape[0]
    T = take("text_output.weight").shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    if depth == 0:
        raise CheckpointError(f"{path}: missing key 'transformer_blocks.0.*' (no joint blocks)")
    inner = take("transformer_blocks.0.ff.net.0.proj.weight").shape[0]
    if take("transformer_blocks.0.norm1.linear.weight").shape[0] != 6 * D:
        raise CheckpointError(
            f"{path}: key 'transformer_blocks.0.norm1.linear.weight' expected {6 * D} rows "
            "(AdaLN-Zero; SD3.5 dual attention is not supported)"
        )
    b0 = "transformer_blocks.0.attn."
    if "qk_norm" in config:
        kind = config["qk_norm"]
    elif take.has(b0 + "norm_added_q.weight"):
        kind = "rms_norm"
    elif take.has(b0 + "norm_q.bias"):
        kind = "layer_norm"
    else:
        kind = None
    if kind not in ("rms_norm", "layer_norm", None):
        raise CheckpointError(f"{path}: qk_norm {kind!r} is not supported")
    if config.get("attention_head_dim"):
        hd = int(config["attention_head_dim"])
    elif num_heads:
        hd = D // num_heads
    elif kind is not None:
        hd = take(b0 + "norm_q.weight").shape[0]
    else:
        raise CheckpointError(
            f"{path}: no config.json and no q/k-norm weights: pass num_heads to tell the head count"
        )
    if D % hd:
        raise CheckpointError(f"{path}: width {D} is not a multiple of the head width {hd}")

    first = "image" if keep_image else "gesture"
    img_table = None
    if keep_image:
        if out_img % (p * p):
            raise CheckpointError(
                f"{path}: key 'proj_out.weight' expected a multiple of {p * p} rows, "
                f"found {out_img}"
            )
        if take.has("pos_embed.pos_embed"):
            img_table = take("pos_embed.pos_embed")[0]
        elif "pos_embed_max_size" in config and "sample_size" in config:
            M = int(config["pos_embed_max_size"])
            img_table = _sincos_2d(D, M, int(config["sample_size"]) // p)
        else:
            raise CheckpointError(
                f"{path}: missing key 'pos_embed.pos_embed' (and no config.json to rebuild it)"
            )
        M = math.isqrt(img_table.shape[0])
        if img_table.shape[0] != M * M or img_table.shape[1] != D:
            raise CheckpointError(
                f"{path}: key 'pos_embed.pos_embed' expected shape (1, M*M, {D}), "
                f"found {tuple(img_table.shape)}"
            )
    model = build_omniflow(
        cls,
        dim=D,
        depth=depth,
        num_heads=D // hd,
        ff_mult=inner / D,
        joint_dim=J,
        pooled_dim=P,
        in_channels=C,
        out_channels=out_img // (p * p),
        patch_size=p,
        pos_embed_max_size=math.isqrt(img_table.shape[0]) if keep_image else 1,
        audio_channels=Ca,
        text_out_dim=T,
        qk_norm=kind,
        keep_image=keep_image,
        gesture_dim=gesture_dim,
        gesture_max_len=gesture_max_len,
    )

    new: dict[str, Tensor] = {}

    def lin(dst: str, src: str, sign: float = 1.0) -> None:
        new[dst + ".weight"] = sign * take(src + ".weight")
        new[dst + ".bias"] = sign * take(src + ".bias")

    names = {first: "image", "text": "text", "audio": "audio"}
    for ours, theirs in names.items():
        o = _NAMES[theirs]
        t = o["time"]
        lin(f"time_embed.{ours}.mlp.linear_1", f"{t}.timestep_embedder.linear_1")
        lin(f"time_embed.{ours}.mlp.linear_2", f"{t}.timestep_embedder.linear_2")
        lin(f"pooled_embed.{ours}.linear_1", f"{t}.text_embedder.linear_1")
        lin(f"pooled_embed.{ours}.linear_2", f"{t}.text_embedder.linear_2")
        lin(f"norm_out.{ours}.linear", o["norm_out"] + ".linear")
        for i in range(depth):
            src, dst = f"transformer_blocks.{i}.", f"blocks.{i}.branches.{ours}."
            pre = theirs == "text" and i == depth - 1
            lin(dst + "norm1.linear", src + o["norm1"] + ".linear")
            # separate q, k, v Linears -> one fused Linear (one matmul per stream)
            new[dst + "to_qkv.weight"] = torch.cat(
                [take(f"{src}{q}.weight", (D, D)) for q in o["qkv"]]
            )
            new[dst + "to_qkv.bias"] = torch.cat([take(f"{src}{q}.bias", (D,)) for q in o["qkv"]])
            if kind == "rms_norm":
                new[dst + "norm_q.weight"] = take(src + o["rms"][0] + ".weight", (hd,))
                new[dst + "norm_k.weight"] = take(src + o["rms"][1] + ".weight", (hd,))
            if pre:
                # OmniFlow builds ff_context in the last block too but never uses it
                for k in list(sd):
                    if k.startswith(src + o["ff"] + "."):
                        take.used.add(k)
                continue
            lin(dst + "to_out", src + o["out"])
            lin(dst + "ff.net.0.proj", src + o["ff"] + ".net.0.proj")
            lin(dst + "ff.net.2", src + o["ff"] + ".net.2")
    if kind == "layer_norm":
        for i in range(depth):
            for nq in ("norm_q", "norm_k"):
                lin(f"blocks.{i}.{nq}", f"transformer_blocks.{i}.attn.{nq}")

    # stream entries, positions and heads
    lin("in_proj.text", "context_embedder")
    new["in_proj.audio.weight"] = a_conv.permute(0, 2, 3, 1).reshape(D, -1)
    new["in_proj.audio.bias"] = take("audio_embedder.proj.bias", (D,))
    if take.has("audio_embedder.pos_embed"):
        a_table = take("audio_embedder.pos_embed", (1, AUDIO_GRID**2, D))[0]
    else:
        # a deterministic buffer: rebuild it as diffusers' PatchEmbed does
        log.info("%s: no audio_embedder.pos_embed; rebuilding the sin-cos table", path)
        a_table = _sincos_2d(D, AUDIO_GRID, AUDIO_BASE)
    hw = (AUDIO_HW[0] // AUDIO_PATCH, AUDIO_HW[1] // AUDIO_PATCH)
    new["pos_table.audio"] = a_table[crop_rows(AUDIO_GRID, *hw)]
    lin("head_proj.text", "context_decoder.projection")
    lin("proj_out.text", "text_output")
    # SD3 velocity (noise - data) -> library velocity (data - noise): negate the Linears
    lin("proj_out.audio", "proj_out_aud", sign=-1.0)
    if keep_image:
        new["in_proj.image.weight"] = conv.permute(0, 2, 3, 1).reshape(D, -1)
        new["in_proj.image.bias"] = take("pos_embed.proj.bias", (D,))
        new["pos_table.image"] = img_table
        lin("proj_out.image", "proj_out", sign=-1.0)
    else:
        # the image's entry, table and output Linear have no gesture counterpart
        for k in sd:
            if k.startswith(("pos_embed.", "proj_out.")):
                take.used.add(k)

    unused = sorted(set(sd) - take.used - {"audio_embedder.pos_embed", "pos_embed.pos_embed"})
    if unused:
        raise CheckpointError(
            f"{path}: unexpected key(s) {unused[:5]}{' ...' if len(unused) > 5 else ''} "
            "for an OmniFlow transformer"
        )
    ours = model.state_dict()
    fresh = {f"in_proj.{first}.weight", f"in_proj.{first}.bias", f"pos_table.{first}"}
    fresh |= {f"proj_out.{first}.weight", f"proj_out.{first}.bias"}
    missing = sorted(set(ours) - set(new) - (set() if keep_image else fresh))
    if missing:  # a model layout this importer does not know
        raise CheckpointError(f"{path}: no OmniFlow weights for {missing[:5]}")
    for k, v in new.items():
        if k not in ours or ours[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: {k} does not fit the model built from it (found {tuple(v.shape)})"
            )
    model.load_state_dict(new, strict=False)
    return model.eval()


# ----- OmniFlow's own call ---------------------------------------------------------------------


def _omni_time(tau: Tensor | float | None, name: str) -> Tensor:
    # OmniFlow's 1000 * sigma -> library t, in float64 so that MMDiT's "sigma" input rebuilds
    # the same float32 timestep before its sinusoid
    if tau is None:
        raise FlowInputError(f"{name}: expected OmniFlow timesteps (B,) in [0, 1000], found None")
    tau = torch.as_tensor(tau).double()
    if tau.device.type != "meta" and ((tau < 0).any() or (tau > 1000).any()):
        raise FlowInputError(
            f"{name}: OmniFlow timesteps lie in [0, 1000] (1000 * sigma), found "
            f"{float(tau.min()):.4g}..{float(tau.max()):.4g}"
        )
    return sigma_to_t(tau / 1000)


def omniflow_forward(
    model: MMDiT,
    *,
    hidden_states: Tensor | None = None,
    encoder_hidden_states: Tensor | None = None,
    pooled_projections: Tensor | None = None,
    timestep: Tensor | float | None = None,
    timestep_text: Tensor | float | None = None,
    timestep_audio: Tensor | float | None = None,
    audio_hidden_states: Tensor | None = None,
    split_cond: bool = False,
    drop_image: bool = False,
    drop_text: bool = False,
    drop_audio: bool = False,
    use_text_output: bool = True,
) -> dict[str, Tensor | None]:
    """``OmniFlowTransformerModel.forward`` with OmniFlow's arguments and conventions, run by
    an :class:`~flow_backbones.MMDiT` from :meth:`~flow_backbones.MMDiT.from_omniflow`.

    Args:
        hidden_states: image latents ``(B, C, H, W)`` (a ``keep_image=False`` model takes
            gesture latents ``(B, T, gesture_dim)`` here).
        encoder_hidden_states: text ``(B, L, J)``.
        pooled_projections: ``(B, P)``.
        timestep, timestep_text, timestep_audio: ``(B,)`` or scalars, ``1000 * sigma``
            (1000 = pure noise).
        audio_hidden_states: audio latents ``(B, Ca, 256, 16)``; None while the audio stream
            is on means zeros at ``timestep_audio = 0 * timestep_text``, as OmniFlow does.
        split_cond: each stream modulated by its own embedding (else by their sum).
        drop_image, drop_text, drop_audio: leave that stream out entirely.
        use_text_output: run the text head; otherwise text gets no time embedding and
            ``encoder_hidden_states`` returns the raw text states ``(B, L, D)``.

    Returns:
        ``{"output": (B, C, H, W), "model_pred_text": (B, L, T), "encoder_hidden_states":
        (B, L, T) or (B, L, D), "audio_hidden_states": (B, Ca, 256, 16)}``, None for a stream
        left out. ``output`` and ``audio_hidden_states`` are SD3 velocities (noise - data).
    """
    specs = model.specs
    first = "image" if "image" in specs else "gesture" if "gesture" in specs else None
    if first is None or "text" not in specs or "audio" not in specs:
        raise FlowInputError(
            f"model: expected OmniFlow's streams (image or gesture, text, audio), found "
            f"{list(specs)}; build it with MMDiT.from_omniflow"
        )
    if drop_image and not split_cond:
        # OmniFlow's own forward fails here: its blocks get no conditioning for text and audio
        raise FlowInputError("split_cond: OmniFlow needs split_cond=True without the image stream")
    if drop_image and not drop_text and not use_text_output:
        raise FlowInputError(
            "use_text_output: OmniFlow needs use_text_output=True for text without the image "
            "stream (text has no conditioning otherwise)"
        )
    if drop_image and drop_text and drop_audio:
        raise FlowInputError("drop_*: every stream is dropped")
    streams, times, positions, heads = {}, {}, {}, []
    image_hw = None
    if not drop_image:
        x = hidden_states
        if first == "image":
            if not isinstance(x, Tensor) or x.ndim != 4:
                found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise FlowInputError(f"hidden_states: expected (B, C, H, W), found {found}")
            C, H, W = x.shape[1:]
            p = math.isqrt(specs["image"].in_dim // C)
            if p * p * C != specs["image"].in_dim:
                raise FlowInputError(
                    f"hidden_states: {C} channels do not fit the model's "
                    f"{specs['image'].in_dim}-d patch tokens"
                )
            image_hw = (C, H, W, p)
            x = patchify(x, p)
            M = math.isqrt(specs["image"].max_len)
            positions["image"] = crop_rows(M, H // p, W // p, device=x.device)
        streams[first] = x
        times[first] = _omni_time(timestep, "timestep")
        heads.append(first)
    if not drop_text:
        streams["text"] = encoder_hidden_states
        times["text"] = _omni_time(timestep_text, "timestep_text") if use_text_output else None
        if use_text_output:
            heads.append("text")
    if not drop_audio:
        Ca = specs["audio"].in_dim // AUDIO_PATCH**2
        a = audio_hidden_states
        if a is None:
            like = next((v for v in (encoder_hidden_states, hidden_states) if v is not None), None)
            if like is None:
                raise FlowInputError("audio_hidden_states: None, and no other input to size it")
            a = torch.zeros(like.shape[0], Ca, *AUDIO_HW, dtype=like.dtype, device=like.device)
            timestep_audio = torch.as_tensor(timestep_text) * 0
        if not isinstance(a, Tensor) or a.ndim != 4 or tuple(a.shape[1:]) != (Ca, *AUDIO_HW):
            found = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            raise FlowInputError(
                f"audio_hidden_states: expected (B, {Ca}, {AUDIO_HW[0]}, {AUDIO_HW[1]}), "
                f"found {found}"
            )
        streams["audio"] = patchify(a, AUDIO_PATCH)
        times["audio"] = _omni_time(timestep_audio, "timestep_audio")
        heads.append("audio")

    res = model.forward_with_states(
        streams,
        times,
        pooled=pooled_projections,
        positions=positions,
        per_stream_time=split_cond,
        heads=heads,
    )
    v = res.velocity
    out = dict.fromkeys(
        ("output", "model_pred_text", "encoder_hidden_states", "audio_hidden_states")
    )
    if first in v:
        y = velocity_to_diffusers(v[first])
        if image_hw is not None:
            C, H, W, p = image_hw
            y = unpatchify(y, y.shape[-1] // (p * p), H, W, p)
        out["output"] = y
    if "text" in v:
        out["model_pred_text"] = out["encoder_hidden_states"] = v["text"]
    elif "text" in res.states:
        out["encoder_hidden_states"] = res.states["text"]
    if "audio" in v:
        out["audio_hidden_states"] = unpatchify(
            velocity_to_diffusers(v["audio"]), Ca, *AUDIO_HW, AUDIO_PATCH
        )
    return out
