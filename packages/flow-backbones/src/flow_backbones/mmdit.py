"""N-stream MMDiT.

Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
(SD3, arXiv:2403.03206): every modality keeps its own weights (AdaLN-Zero modulation, q/k/v,
RMS q/k norm, feed-forward) and all modalities meet in one joint attention. OmniFlow
(Li et al. 2025, arXiv:2412.01169) extends SD3 to three streams with per-modality timesteps; Omniges
swaps its image stream for gesture latents.

Here the number of streams is a config value: ``MMDiT(streams={"gesture": StreamSpec(512),
"audio": StreamSpec(32), ...})``. At call time any subset of streams may be present; absent
streams are skipped (no zero-filled tokens), padded tokens are hidden from attention by key
masks, and each stream may carry its own time ``t`` in the library convention (0 = noise,
1 = data; see :mod:`flow_backbones.flow`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Literal

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import PixArtAlphaTextProjection, apply_rotary_emb
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, RMSNorm
from torch import Tensor, nn

from ._attention import masked_sdpa, merge_heads, zero_init
from ._hub import HubModule
from .embeddings import RotaryEmbedding, TimeEmbedding, sincos_1d
from .errors import FlowInputError
from .flow import check_t, expand_t


@dataclass(frozen=True)
class StreamSpec:
    """One modality of an :class:`MMDiT`.

    Args:
        in_dim: channels of the stream's tokens ``(B, L, in_dim)``.
        out_dim: channels of its velocity output (default ``in_dim``).
        max_len: longest sequence accepted (the size of the sin-cos table when ``pos="sincos"``,
            the number of rows of the table when ``pos="learned"``).
        pos: ``"rope"`` (rotary on q/k), ``"sincos"`` (fixed, added to the tokens),
            ``"learned"`` (a ``(max_len, dim)`` parameter added to the tokens; ``positions``
            picks its rows, e.g. OmniFlow's centre-cropped 2D patch table) or ``"none"``.
        generate: give the stream an output head; its velocity is returned by ``forward``.
        context_only_last: in the last layer the stream only provides keys and values (SD3's
            ``context_pre_only``); saves one output projection and feed-forward. If it is
            generated, its head reads the states it had before the last block (OmniFlow's text).
        head_width: the head first projects ``dim -> head_width``, then applies the
            time-modulated norm and the output Linear at that width (OmniFlow's text head:
            ``context_decoder.projection``, ``norm_out_text``, ``text_output``). None: no
            intermediate projection.
    """

    in_dim: int
    out_dim: int | None = None
    max_len: int = 4096
    pos: Literal["rope", "sincos", "learned", "none"] = "rope"
    generate: bool = True
    context_only_last: bool = False
    head_width: int | None = None

    @property
    def output_dim(self) -> int:
        return self.out_dim if self.out_dim is not None else self.in_dim


class StreamBranch(nn.Module):
    """The per-stream weights of one joint block.

    ``pre_only`` branches (a context-only stream in the last block) keep only the modulated
    norm and the q/k/v projections.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        ff_mult: float,
        qk_norm: bool,
        pre_only: bool,
        qk_norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.pre_only = pre_only
        hd = dim // heads
        # AdaLN-Zero: modulation starts at zero so that every block starts as the identity
        # (diffusers leaves these random)
        if pre_only:
            self.norm1 = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        else:
            self.norm1 = AdaLayerNormZero(dim)
        zero_init(self.norm1.linear)
        self.to_qkv = nn.Linear(dim, 3 * dim)
        # per-stream RMS q/k norm (SD3.5, OmniFlow "rms_norm"); the shared "layer_norm" kind
        # lives in JointBlock because it is applied to all streams at once
        self.norm_q = RMSNorm(hd, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(hd, eps=qk_norm_eps) if qk_norm else nn.Identity()
        if not pre_only:
            self.to_out = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff = FeedForward(
                dim,
                mult=int(ff_mult),
                activation_fn="gelu-approximate",
                inner_dim=int(dim * ff_mult),
            )


QKNorm = Literal["rms_norm", "layer_norm"] | None


def qk_norm_kind(qk_norm: bool | str | None) -> QKNorm:
    """``True``/``"rms_norm"`` -> per-stream RMSNorm, ``"layer_norm"`` -> one shared affine
    LayerNorm after the streams are joined (OmniFlow's default), ``False``/``None`` -> none."""
    if qk_norm is True or qk_norm == "rms_norm":
        return "rms_norm"
    if qk_norm is False or qk_norm is None:
        return None
    if qk_norm == "layer_norm":
        return "layer_norm"
    raise FlowInputError(
        f"qk_norm: expected True, False, None, 'rms_norm' or 'layer_norm', found {qk_norm!r}"
    )


class JointBlock(nn.Module):
    """One MMDiT block over any subset of its streams.

    ``forward(hidden, cond, ropes, key_mask)``:
        hidden: ``{name: (B, L_s, dim)}`` for the present streams, in declaration order.
        cond: ``{name: (B, dim)}`` the modulation vector of each stream.
        ropes: ``{name: (cos, sin)}`` each ``(L_s, head_dim)``, or None for no rotary.
        key_mask: ``(B, sum L_s)`` bool (True = real token) or None.
    Returns the updated ``{name: (B, L_s, dim)}`` (pre-only streams are left out).
    """

    def __init__(
        self,
        names: list[str],
        dim: int,
        heads: int,
        *,
        ff_mult: float,
        qk_norm: bool | str | None,
        pre_only: set[str],
        qk_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.heads = heads
        kind = qk_norm_kind(qk_norm)
        self.branches = nn.ModuleDict(
            {
                n: StreamBranch(
                    dim,
                    heads,
                    ff_mult=ff_mult,
                    qk_norm=kind == "rms_norm",
                    pre_only=n in pre_only,
                    qk_norm_eps=qk_norm_eps,
                )
                for n in names
            }
        )
        # OmniFlow "layer_norm": ONE affine LayerNorm over the head width, applied to the
        # joined queries/keys, so every stream's heads share the same norm weights
        self.norm_q: nn.LayerNorm | None = None
        self.norm_k: nn.LayerNorm | None = None
        if kind == "layer_norm":
            self.norm_q = nn.LayerNorm(dim // heads, eps=qk_norm_eps)
            self.norm_k = nn.LayerNorm(dim // heads, eps=qk_norm_eps)

    def forward(
        self,
        hidden: dict[str, Tensor],
        cond: dict[str, Tensor],
        ropes: dict[str, tuple[Tensor, Tensor] | None],
        key_mask: Tensor | None,
    ) -> dict[str, Tensor]:
        qs, ks, vs, lens, mods = [], [], [], [], {}
        for name, h in hidden.items():
            br = self.branches[name]
            if br.pre_only:
                x = br.norm1(h, cond[name])
            else:
                x, gate_msa, shift_mlp, scale_mlp, gate_mlp = br.norm1(h, emb=cond[name])
                mods[name] = (gate_msa, shift_mlp, scale_mlp, gate_mlp)
            # fused q/k/v, kept token-major (B, L_s, H, hd): the joined sequence is then one
            # cat along L and one transposed view for SDPA, no per-stream transposes
            q, k, v = br.to_qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(2)
            q, k = br.norm_q(q), br.norm_k(k)
            if ropes[name] is not None:
                q = apply_rotary_emb(q, ropes[name], use_real_unbind_dim=-1, sequence_dim=1)
                k = apply_rotary_emb(k, ropes[name], use_real_unbind_dim=-1, sequence_dim=1)
            qs.append(q)
            ks.append(k)
            vs.append(v)
            lens.append(h.shape[1])
        q, k, v = (torch.cat(z, dim=1) for z in (qs, ks, vs))  # (B, sum L, H, hd)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        # one attention over the concatenation of all present streams
        out = masked_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), key_mask)
        outs = merge_heads(out).split(lens, dim=1)

        new: dict[str, Tensor] = {}
        for (name, h), a in zip(hidden.items(), outs, strict=True):
            br = self.branches[name]
            if br.pre_only:
                continue
            gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[name]
            h = h + gate_msa[:, None] * br.to_out(a)
            x = br.norm2(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            new[name] = h + gate_mlp[:, None] * br.ff(x)
        return new


@dataclass
class MMDiTOutput:
    """What :meth:`MMDiT.forward_with_states` returns.

    Attributes:
        velocity: ``{name: (B, L_s, out_dim_s)}`` head output of each present stream that was
            asked for (by default every present generated stream).
        states: ``{name: (B, L_s, dim)}`` final token states of every present stream, before
            its head; a ``context_only_last`` stream's are its states before the last block.
    """

    velocity: dict[str, Tensor]
    states: dict[str, Tensor]


class MMDiT(HubModule):
    """Multi-stream diffusion transformer: velocity for every present generated stream.

    Args:
        streams: ``{name: StreamSpec}`` in a fixed order (dicts with the same fields are
            accepted; the saved config stores a list of ``{"name": ..., **fields}`` because JSON
            writers may sort object keys and the order is part of the model). The order is
            the order of the tokens in the joint attention.
        dim: model width (all streams share it inside the joint attention).
        depth: number of joint blocks.
        num_heads: attention heads (``dim`` must divide evenly).
        ff_mult: feed-forward expansion.
        qk_norm: ``True`` or ``"rms_norm"``: RMS-normalise queries and keys per head with
            per-stream weights (SD3.5, OmniFlow ``rms_norm``); ``"layer_norm"``: one affine
            LayerNorm shared by all streams, applied after they are joined (OmniFlow's
            default); ``False``/``None``: none (SD3.0).
        qk_norm_eps: epsilon of the q/k norm (OmniFlow uses 1e-5).
        per_stream_time: each stream is modulated by its own time embedding (OmniFlow's
            ``split_cond=True``); otherwise all streams share the sum of the present streams'
            time embeddings (OmniFlow's default). ``forward`` can override it per call.
        pooled_dim: width of an optional pooled condition vector (e.g. CLIP pooled text); its
            projection is added to every stream's conditioning.
        pooled_per_stream: each stream projects the pooled vector with its own MLP and adds it
            to its own time embedding before any summing (OmniFlow's per-stream diffusers
            ``CombinedTimestepTextProjEmbeddings``); otherwise one projection is added once.
        step_size_cond: the time embeddings also take a step size ``d`` (shortcut / MeanFlow).
        time_scale: the sinusoid reads ``time_scale * t`` (1000 as in SD3).
        time_input: ``"t"``: the sinusoid reads the library time ``t`` (0 = noise);
            ``"sigma"``: it reads the noise level ``sigma = 1 - t``, as SD3 / OmniFlow feed
            ``1000 * sigma``. Either way ``forward`` takes library times.
        rope_theta: rotary base period.

    Example:
        >>> m = MMDiT.tiny()
        >>> x = {"gesture": torch.randn(2, 16, 8), "audio": torch.randn(2, 24, 4)}
        >>> t = {"gesture": torch.rand(2), "audio": torch.ones(2)}
        >>> m(x, t)["gesture"].shape
        torch.Size([2, 16, 8])
    """

    def __init__(
        self,
        streams: dict[str, StreamSpec | dict] | list[dict],
        *,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        ff_mult: float = 4.0,
        qk_norm: bool | str | None = True,
        qk_norm_eps: float = 1e-6,
        per_stream_time: bool = False,
        pooled_dim: int | None = None,
        pooled_per_stream: bool = False,
        step_size_cond: bool = False,
        time_scale: float = 1000.0,
        time_input: Literal["t", "sigma"] = "t",
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if not streams:
            raise FlowInputError("streams: expected at least one stream, found none")
        if isinstance(streams, list | tuple):
            streams = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in streams}
        specs = {n: s if isinstance(s, StreamSpec) else StreamSpec(**s) for n, s in streams.items()}
        for n, s in specs.items():
            if s.pos not in ("rope", "sincos", "learned", "none"):
                raise FlowInputError(
                    f"streams[{n!r}].pos: expected 'rope', 'sincos', 'learned' or 'none', "
                    f"found {s.pos!r}"
                )
        if dim % num_heads or (dim // num_heads) % 2:
            raise FlowInputError(
                f"dim: expected a multiple of num_heads={num_heads} with an even head width, "
                f"found {dim}"
            )
        if depth < 1:
            raise FlowInputError(f"depth: expected >= 1, found {depth}")
        if time_input not in ("t", "sigma"):
            raise FlowInputError(f"time_input: expected 't' or 'sigma', found {time_input!r}")
        qk_norm_kind(qk_norm)  # validate early
        self.specs = specs
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.per_stream_time, self.pooled_dim = per_stream_time, pooled_dim
        self.time_input = time_input
        # the config must be JSON: store the stream specs as plain dicts
        if getattr(self, "_hub_mixin_config", None) is not None:
            self._hub_mixin_config["streams"] = [{"name": n, **asdict(s)} for n, s in specs.items()]

        names = list(specs)
        self.in_proj = nn.ModuleDict({n: nn.Linear(s.in_dim, dim) for n, s in specs.items()})
        self.time_embed = nn.ModuleDict(
            {n: TimeEmbedding(dim, step_size_cond=step_size_cond, scale=time_scale) for n in names}
        )
        self.pooled_proj = None
        self.pooled_embed = None
        if pooled_dim is not None and pooled_per_stream:
            self.pooled_embed = nn.ModuleDict(
                {n: PixArtAlphaTextProjection(pooled_dim, dim, act_fn="silu") for n in names}
            )
        elif pooled_dim is not None:
            self.pooled_proj = nn.Sequential(
                nn.Linear(pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
            )
        for n, s in specs.items():
            if s.pos == "sincos":
                self.register_buffer(f"sincos_{n}", sincos_1d(dim, s.max_len), persistent=False)
        # learned tables start small (ViT's 0.02) so a new stream starts near position-free
        self.pos_table = nn.ParameterDict(
            {
                n: nn.Parameter(torch.randn(s.max_len, dim) * 0.02)
                for n, s in specs.items()
                if s.pos == "learned"
            }
        )
        self.rope = RotaryEmbedding(dim // num_heads, theta=rope_theta)
        pre_only_last = {n for n, s in specs.items() if s.context_only_last}
        self.blocks = nn.ModuleList(
            [
                JointBlock(
                    names,
                    dim,
                    num_heads,
                    ff_mult=ff_mult,
                    qk_norm=qk_norm,
                    pre_only=pre_only_last if i == depth - 1 else set(),
                    qk_norm_eps=qk_norm_eps,
                )
                for i in range(depth)
            ]
        )
        gen = [n for n, s in specs.items() if s.generate]
        width = {n: specs[n].head_width or dim for n in gen}
        self.head_proj = nn.ModuleDict(
            {n: nn.Linear(dim, specs[n].head_width) for n in gen if specs[n].head_width}
        )
        self.norm_out = nn.ModuleDict(
            {
                n: AdaLayerNormContinuous(width[n], dim, elementwise_affine=False, eps=1e-6)
                for n in gen
            }
        )
        # zero output heads: the untrained model predicts v = 0 (DiT's initialisation)
        self.proj_out = nn.ModuleDict(
            {n: zero_init(nn.Linear(width[n], specs[n].output_dim)) for n in gen}
        )

    # ----- presets ---------------------------------------------------------------------------

    @classmethod
    def tiny(cls, **overrides) -> MMDiT:
        """Two streams (gesture 8-d, audio 4-d), width 32, 2 blocks: a CPU-test size."""
        cfg = dict(
            streams={"gesture": StreamSpec(8), "audio": StreamSpec(4)},
            dim=32,
            depth=2,
            num_heads=4,
        )
        cfg.update(overrides)
        return cls(**cfg)

    @classmethod
    def omniges(
        cls, *, gesture_dim: int = 512, audio_dim: int = 32, text_dim: int = 4096, **overrides
    ) -> MMDiT:
        """Omniges / OmniFlow size: 24 blocks, 24 heads x 64 = 1536 wide, 3 streams.

        Streams: gesture (4-part RVQ latents, 512-d at T/4, up to 128 tokens), audio
        (OmniFlow's 8-channel audio-VAE latent in 2x2 patches = 32-d, 1024 tokens), text
        (4096-d text-VAE latents as OmniFlow zero-pads them). All three are generated (Omniges
        trains t2g, g2t, a2g, g2a, t2a, a2t). A pooled 2048-d vector (CLIP-style) conditions all.
        To start from OmniFlow's weights use :meth:`from_omniflow` with ``keep_image=False``.
        """
        cfg = dict(
            streams={
                "gesture": StreamSpec(gesture_dim, max_len=128),
                "audio": StreamSpec(audio_dim, max_len=1024),
                "text": StreamSpec(text_dim, max_len=77),
            },
            dim=1536,
            depth=24,
            num_heads=24,
            pooled_dim=2048,
        )
        cfg.update(overrides)
        return cls(**cfg)

    @classmethod
    def omniflow(
        cls,
        *,
        keep_image: bool = True,
        qk_norm: str | None = "layer_norm",
        depth: int = 24,
        num_heads: int = 24,
        head_dim: int = 64,
        joint_dim: int = 4096,
        pooled_dim: int = 2048,
        in_channels: int = 16,
        patch_size: int = 2,
        pos_embed_max_size: int = 96,
        audio_channels: int = 8,
        text_out_dim: int = 1536,
        gesture_dim: int = 512,
        gesture_max_len: int = 128,
    ) -> MMDiT:
        """OmniFlow's transformer architecture, freshly initialised (paper size: 24 blocks,
        24 heads x 64 = 1536 wide, as its SD3-medium base). OmniFlow's config names:
        ``num_layers`` = depth, ``attention_head_dim`` = head_dim, ``joint_attention_dim`` =
        joint_dim, ``pooled_projection_dim`` = pooled_dim, ``audio_input_dim`` =
        audio_channels; ``text_out_dim`` is its text VAE's width. ``keep_image=False``: the
        Omniges layout (gesture, text, audio). :meth:`from_omniflow` fills it with weights.
        """
        from .omniflow import build_omniflow  # omniflow.py builds on this module

        return build_omniflow(
            cls,
            dim=num_heads * head_dim,
            depth=depth,
            num_heads=num_heads,
            joint_dim=joint_dim,
            pooled_dim=pooled_dim,
            in_channels=in_channels,
            out_channels=in_channels,
            patch_size=patch_size,
            pos_embed_max_size=pos_embed_max_size,
            audio_channels=audio_channels,
            text_out_dim=text_out_dim,
            qk_norm=qk_norm,
            keep_image=keep_image,
            gesture_dim=gesture_dim,
            gesture_max_len=gesture_max_len,
        )

    @classmethod
    def from_omniflow(
        cls,
        folder: str | PathLike,
        keep_image: bool = True,
        *,
        gesture_dim: int = 512,
        gesture_max_len: int = 128,
        num_heads: int | None = None,
    ) -> MMDiT:
        """Import an OmniFlow transformer (Li et al. 2025, github jacklishufan/OmniFlows).

        ``folder``: OmniFlow's ``transformer/`` folder (``config.json`` +
        ``diffusion_pytorch_model.safetensors`` or ``.bin``) or a plain state-dict file
        (``.safetensors``, or ``.bin``/``.pt`` read with ``torch.load(weights_only=True)``).
        ``keep_image=True`` gives OmniFlow's streams ``image`` (2x2 patch tokens), ``text``
        and ``audio``; ``keep_image=False`` replaces the image stream by a new ``gesture``
        stream (``(B, T, gesture_dim)``, learned positions, ``gesture_max_len`` tokens) that
        starts from the image branch's block, time-embedding and output-norm weights.
        ``num_heads`` is needed only for a plain file without q/k-norm weights. Weights load
        as float32 (cast with ``.to(dtype)`` after). See
        :mod:`flow_backbones.omniflow` for the mapping and :func:`~flow_backbones.omniflow.
        omniflow_forward` for OmniFlow's own call convention.
        """
        # omniflow.py builds on this module, so it cannot be imported at the top
        from .omniflow import load_omniflow

        return load_omniflow(
            cls,
            folder,
            keep_image=keep_image,
            gesture_dim=gesture_dim,
            gesture_max_len=gesture_max_len,
            num_heads=num_heads,
        )

    # ----- forward ---------------------------------------------------------------------------

    def _check(
        self,
        streams: dict[str, Tensor],
        timesteps: dict[str, Tensor | float | None],
        masks: dict[str, Tensor] | None,
    ) -> int:
        if not isinstance(streams, dict) or not streams:
            raise FlowInputError("streams: expected a non-empty dict {name: (B, L, C)} tensor")
        unknown = [n for n in streams if n not in self.specs]
        if unknown:
            raise FlowInputError(
                f"streams: unknown stream name(s) {unknown}; this model has {list(self.specs)}"
            )
        B = None
        for n, x in streams.items():
            s = self.specs[n]
            if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != s.in_dim:
                found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise FlowInputError(
                    f"streams[{n!r}]: expected shape (B, L, {s.in_dim}), found {found}"
                )
            if x.shape[1] > s.max_len or x.shape[1] == 0:
                raise FlowInputError(
                    f"streams[{n!r}]: expected 1 <= L <= max_len={s.max_len}, found L={x.shape[1]}"
                )
            if B is None:
                B = x.shape[0]
            elif x.shape[0] != B:
                raise FlowInputError(
                    f"streams[{n!r}]: batch size {x.shape[0]} differs from the other streams' {B}"
                )
        extra_t = [n for n in timesteps if n not in self.specs]
        if extra_t:
            raise FlowInputError(
                f"timesteps: unknown stream name(s) {extra_t}; this model has {list(self.specs)}"
            )
        missing = [n for n in streams if n not in timesteps]
        if missing:
            raise FlowInputError(f"timesteps: no time given for present stream(s) {missing}")
        if all(timesteps[n] is None for n in streams):
            raise FlowInputError(
                "timesteps: every present stream has time None; at least one needs a time"
            )
        for n, m in (masks or {}).items():
            if n not in streams:
                raise FlowInputError(
                    f"masks[{n!r}]: no such stream present; present streams are {list(streams)}"
                )
            L = streams[n].shape[1]
            if not isinstance(m, Tensor) or m.shape != (B, L) or m.dtype != torch.bool:
                found = (tuple(m.shape), m.dtype) if isinstance(m, Tensor) else type(m).__name__
                raise FlowInputError(
                    f"masks[{n!r}]: expected a bool tensor of shape ({B}, {L}), found {found}"
                )
        return B

    def conditioning(
        self,
        timesteps: dict[str, Tensor | None],
        present: list[str],
        pooled: Tensor | None = None,
        step_sizes: dict[str, Tensor] | None = None,
        *,
        per_stream_time: bool | None = None,
    ) -> dict[str, Tensor]:
        """The modulation vector ``(B, dim)`` each present stream receives.

        A stream whose time is None has no embedding of its own: in the summed form it adds
        nothing; in the per-stream form it takes the first timed stream's vector (OmniFlow's
        text with ``use_text_output=False`` takes the image's).
        """
        step_sizes = step_sizes or {}
        per_stream = self.per_stream_time if per_stream_time is None else per_stream_time
        timed = [n for n in present if timesteps[n] is not None]
        temb = {}
        for n in timed:
            t = timesteps[n]
            # "sigma": SD3/OmniFlow feed 1000 * sigma; a float64 t keeps that exact before the
            # sinusoid casts to float32
            e = self.time_embed[n](1 - t if self.time_input == "sigma" else t, step_sizes.get(n))
            if self.pooled_embed is not None and pooled is not None:
                e = e + self.pooled_embed[n](pooled)
            temb[n] = e
        extra = 0 if pooled is None or self.pooled_proj is None else self.pooled_proj(pooled)
        if per_stream:
            cond = {n: e + extra for n, e in temb.items()}
            return {n: cond[n] if n in cond else cond[timed[0]] for n in present}
        shared = sum(temb.values()) + extra
        return {n: shared for n in present}

    def forward(
        self,
        streams: dict[str, Tensor],
        timesteps: dict[str, Tensor | float | None],
        masks: dict[str, Tensor] | None = None,
        *,
        pooled: Tensor | None = None,
        step_sizes: dict[str, Tensor | float] | None = None,
        positions: dict[str, Tensor] | None = None,
        per_stream_time: bool | None = None,
    ) -> dict[str, Tensor]:
        """Velocity of every present generated stream.

        Args:
            streams: ``{name: (B, L_s, in_dim_s)}``, any non-empty subset of the model's streams.
            timesteps: ``{name: (B,) or scalar}`` time in ``[0, 1]`` for every present stream
                (1 for a clean condition, 0 for pure noise). None: the stream has no time
                embedding of its own (see :meth:`conditioning`).
            masks: optional ``{name: (B, L_s) bool}``, True = real token. Padded keys are hidden
                from every query; outputs at padded positions are meaningless.
            pooled: ``(B, pooled_dim)`` when the model has ``pooled_dim``.
            step_sizes: ``{name: (B,) or scalar}`` step size ``d`` (models with
                ``step_size_cond``); missing names mean ``d = 0``.
            positions: optional ``{name: (L_s,)}``. Rotary streams: positions, e.g. audio
                frame times in gesture-frame units so that both streams share one clock.
                Learned-table streams: integer rows of the table. Default ``arange(L_s)``.
            per_stream_time: override the model's ``per_stream_time`` for this call.

        Returns:
            ``{name: (B, L_s, out_dim_s)}`` for the present streams with ``generate=True``.
        """
        return self.forward_with_states(
            streams,
            timesteps,
            masks,
            pooled=pooled,
            step_sizes=step_sizes,
            positions=positions,
            per_stream_time=per_stream_time,
        ).velocity

    def _time(self, t: Tensor | float, B: int, device, name: str) -> Tensor:
        # a float64 tensor stays float64 (exact OmniFlow timesteps); anything else -> float32
        if isinstance(t, Tensor) and t.dtype == torch.float64:
            t = t.to(device)
            t = t.expand(B) if t.ndim == 0 else t
            if t.shape != (B,):
                raise FlowInputError(
                    f"{name}: expected shape ({B},) or a scalar, found {tuple(t.shape)}"
                )
        else:
            t = expand_t(t, B, device, name)
        check_t(t, name)
        return t

    def forward_with_states(
        self,
        streams: dict[str, Tensor],
        timesteps: dict[str, Tensor | float | None],
        masks: dict[str, Tensor] | None = None,
        *,
        pooled: Tensor | None = None,
        step_sizes: dict[str, Tensor | float] | None = None,
        positions: dict[str, Tensor] | None = None,
        per_stream_time: bool | None = None,
        heads: Iterable[str] | None = None,
    ) -> MMDiTOutput:
        """:meth:`forward` that also returns the final token states of every stream.

        ``heads``: the present streams whose output head runs (default: every present
        generated stream); the others still return their ``states``.
        """
        B = self._check(streams, timesteps, masks)
        present = [n for n in self.specs if n in streams]  # declaration order, not call order
        device = next(iter(streams.values())).device
        ts = {
            n: None
            if timesteps[n] is None
            else self._time(timesteps[n], B, device, f"timesteps[{n!r}]")
            for n in present
        }
        for arg, given in (("step_sizes", step_sizes), ("positions", positions)):
            absent = [n for n in (given or {}) if n not in streams]
            if absent:
                raise FlowInputError(
                    f"{arg}: name(s) {absent} are not present streams; present: {present}"
                )
        ds = {n: expand_t(d, B, device) for n, d in (step_sizes or {}).items()}
        if (pooled is None) != (self.pooled_dim is None):
            raise FlowInputError(
                f"pooled: model pooled_dim={self.pooled_dim}, found "
                f"{None if pooled is None else tuple(pooled.shape)}"
            )
        if pooled is not None and pooled.shape != (B, self.pooled_dim):
            raise FlowInputError(
                f"pooled: expected shape ({B}, {self.pooled_dim}), found {tuple(pooled.shape)}"
            )
        if heads is None:
            heads = [n for n in present if n in self.proj_out]
        else:
            heads = list(heads)
            bad = [n for n in heads if n not in present or n not in self.proj_out]
            if bad:
                raise FlowInputError(
                    f"heads: {bad} are not present generated streams; present: {present}, "
                    f"generated: {list(self.proj_out)}"
                )
        cond = self.conditioning(ts, present, pooled, ds, per_stream_time=per_stream_time)

        hidden, ropes = {}, {}
        for n in present:
            x, s = streams[n], self.specs[n]
            L = x.shape[1]
            h = self.in_proj[n](x)
            pos = (positions or {}).get(n)
            if pos is not None and pos.shape != (L,):
                raise FlowInputError(
                    f"positions[{n!r}]: expected shape ({L},), found {tuple(pos.shape)}"
                )
            if s.pos == "sincos":
                h = h + getattr(self, f"sincos_{n}")[:L].to(h.dtype)
            elif s.pos == "learned":
                table = self.pos_table[n]
                if pos is None:
                    h = h + table[:L].to(h.dtype)
                else:
                    h = h + table[self._rows(pos, s.max_len, n, device)].to(h.dtype)
            hidden[n] = h
            if s.pos == "rope":
                pos = torch.arange(L, device=device) if pos is None else pos.to(device)
                ropes[n] = self.rope.freqs(pos)
            else:
                ropes[n] = None
        key_mask = None
        if masks:
            key_mask = torch.cat(
                [
                    masks[n]
                    if n in masks
                    else torch.ones(B, streams[n].shape[1], dtype=torch.bool, device=device)
                    for n in present
                ],
                dim=1,
            )

        for block in self.blocks:
            out = self._run_block(block, hidden, cond, ropes, key_mask)
            # a context-only stream keeps its states from before the last block
            hidden = {n: out.get(n, hidden[n]) for n in hidden}

        result = {}
        for n in heads:
            h = self.head_proj[n](hidden[n]) if n in self.head_proj else hidden[n]
            result[n] = self.proj_out[n](self.norm_out[n](h, cond[n]))
        return MMDiTOutput(velocity=result, states=hidden)

    @staticmethod
    def _rows(pos: Tensor, max_len: int, name: str, device) -> Tensor:
        if pos.dtype.is_floating_point or pos.dtype == torch.bool:
            raise FlowInputError(
                f"positions[{name!r}]: a learned table takes integer rows, found {pos.dtype}"
            )
        if pos.device.type != "meta" and len(pos) and (pos.min() < 0 or pos.max() >= max_len):
            raise FlowInputError(
                f"positions[{name!r}]: rows must lie in [0, {max_len}), found "
                f"{int(pos.min())}..{int(pos.max())}"
            )
        return pos.to(device)
