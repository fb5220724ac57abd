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

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, RMSNorm
from torch import Tensor, nn

from ._attention import masked_sdpa, merge_heads, split_heads, zero_init
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
        max_len: longest sequence accepted (the size of the sin-cos table when ``pos="sincos"``).
        pos: ``"rope"`` (rotary on q/k), ``"sincos"`` (added to the tokens) or ``"none"``.
        generate: give the stream an output head; its velocity is returned by ``forward``.
        context_only_last: in the last layer the stream only provides keys and values (SD3's
            ``context_pre_only``); saves one output projection and feed-forward. Such a stream
            cannot be generated.
    """

    in_dim: int
    out_dim: int | None = None
    max_len: int = 4096
    pos: Literal["rope", "sincos", "none"] = "rope"
    generate: bool = True
    context_only_last: bool = False

    @property
    def output_dim(self) -> int:
        return self.out_dim if self.out_dim is not None else self.in_dim


class StreamBranch(nn.Module):
    """The per-stream weights of one joint block.

    ``pre_only`` branches (a context-only stream in the last block) keep only the modulated
    norm and the q/k/v projections.
    """

    def __init__(self, dim: int, heads: int, *, ff_mult: float, qk_norm: bool, pre_only: bool):
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
        self.norm_q = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        if not pre_only:
            self.to_out = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff = FeedForward(
                dim,
                mult=int(ff_mult),
                activation_fn="gelu-approximate",
                inner_dim=int(dim * ff_mult),
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
        qk_norm: bool,
        pre_only: set[str],
    ) -> None:
        super().__init__()
        self.heads = heads
        self.branches = nn.ModuleDict(
            {
                n: StreamBranch(
                    dim, heads, ff_mult=ff_mult, qk_norm=qk_norm, pre_only=n in pre_only
                )
                for n in names
            }
        )

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
            q, k, v = (split_heads(z, self.heads) for z in br.to_qkv(x).chunk(3, dim=-1))
            q, k = br.norm_q(q), br.norm_k(k)
            if ropes[name] is not None:
                q = RotaryEmbedding.apply(q, ropes[name])
                k = RotaryEmbedding.apply(k, ropes[name])
            qs.append(q)
            ks.append(k)
            vs.append(v)
            lens.append(h.shape[1])
        # one attention over the concatenation of all present streams: (B, H, sum L, hd)
        out = masked_sdpa(torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2), key_mask)
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


class MMDiT(HubModule):
    """Multi-stream diffusion transformer: velocity for every present generated stream.

    Args:
        streams: ``{name: StreamSpec}`` in a fixed order (dicts with the same fields are
            accepted; the saved config stores a list of ``{"name": ..., **fields}`` because JSON
            writers may sort object keys and the order is part of the model).
        dim: model width (all streams share it inside the joint attention).
        depth: number of joint blocks.
        num_heads: attention heads (``dim`` must divide evenly).
        ff_mult: feed-forward expansion.
        qk_norm: RMS-normalise queries and keys per head (SD3.5 / OmniFlow ``rms_norm``).
        per_stream_time: each stream is modulated by its own time embedding (OmniFlow's
            ``split_cond=True``); otherwise all streams share the sum of the present streams'
            time embeddings (OmniFlow's default).
        pooled_dim: width of an optional pooled condition vector (e.g. CLIP pooled text); its
            projection is added to every stream's conditioning.
        step_size_cond: the time embeddings also take a step size ``d`` (shortcut / MeanFlow).
        time_scale: ``t`` is multiplied by this before the sinusoid (1000 as in SD3).
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
        qk_norm: bool = True,
        per_stream_time: bool = False,
        pooled_dim: int | None = None,
        step_size_cond: bool = False,
        time_scale: float = 1000.0,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if not streams:
            raise FlowInputError("streams: expected at least one stream, found none")
        if isinstance(streams, list | tuple):
            streams = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in streams}
        specs = {n: s if isinstance(s, StreamSpec) else StreamSpec(**s) for n, s in streams.items()}
        for n, s in specs.items():
            if s.context_only_last and s.generate:
                raise FlowInputError(
                    f"streams[{n!r}]: a context_only_last stream cannot be generated; "
                    "set generate=False"
                )
        if dim % num_heads or (dim // num_heads) % 2:
            raise FlowInputError(
                f"dim: expected a multiple of num_heads={num_heads} with an even head width, "
                f"found {dim}"
            )
        if depth < 1:
            raise FlowInputError(f"depth: expected >= 1, found {depth}")
        self.specs = specs
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.per_stream_time, self.pooled_dim = per_stream_time, pooled_dim
        # the config must be JSON: store the stream specs as plain dicts
        if getattr(self, "_hub_mixin_config", None) is not None:
            self._hub_mixin_config["streams"] = [{"name": n, **asdict(s)} for n, s in specs.items()]

        names = list(specs)
        self.in_proj = nn.ModuleDict({n: nn.Linear(s.in_dim, dim) for n, s in specs.items()})
        self.time_embed = nn.ModuleDict(
            {n: TimeEmbedding(dim, step_size_cond=step_size_cond, scale=time_scale) for n in names}
        )
        self.pooled_proj = None
        if pooled_dim is not None:
            self.pooled_proj = nn.Sequential(
                nn.Linear(pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim)
            )
        for n, s in specs.items():
            if s.pos == "sincos":
                self.register_buffer(f"sincos_{n}", sincos_1d(dim, s.max_len), persistent=False)
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
                )
                for i in range(depth)
            ]
        )
        gen = [n for n, s in specs.items() if s.generate]
        self.norm_out = nn.ModuleDict(
            {n: AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6) for n in gen}
        )
        # zero output heads: the untrained model predicts v = 0 (DiT's initialisation)
        self.proj_out = nn.ModuleDict(
            {n: zero_init(nn.Linear(dim, specs[n].output_dim)) for n in gen}
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

    # ----- forward ---------------------------------------------------------------------------

    def _check(
        self,
        streams: dict[str, Tensor],
        timesteps: dict[str, Tensor | float],
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
        timesteps: dict[str, Tensor],
        present: list[str],
        pooled: Tensor | None = None,
        step_sizes: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The modulation vector ``(B, dim)`` each present stream receives."""
        step_sizes = step_sizes or {}
        temb = {n: self.time_embed[n](timesteps[n], step_sizes.get(n)) for n in present}
        extra = 0 if pooled is None or self.pooled_proj is None else self.pooled_proj(pooled)
        if self.per_stream_time:
            return {n: e + extra for n, e in temb.items()}
        shared = sum(temb.values()) + extra
        return {n: shared for n in present}

    def forward(
        self,
        streams: dict[str, Tensor],
        timesteps: dict[str, Tensor | float],
        masks: dict[str, Tensor] | None = None,
        *,
        pooled: Tensor | None = None,
        step_sizes: dict[str, Tensor | float] | None = None,
        positions: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Velocity of every present generated stream.

        Args:
            streams: ``{name: (B, L_s, in_dim_s)}``, any non-empty subset of the model's streams.
            timesteps: ``{name: (B,) or scalar}`` time in ``[0, 1]`` for every present stream
                (1 for a clean condition, 0 for pure noise).
            masks: optional ``{name: (B, L_s) bool}``, True = real token. Padded keys are hidden
                from every query; outputs at padded positions are meaningless.
            pooled: ``(B, pooled_dim)`` when the model has ``pooled_dim``.
            step_sizes: ``{name: (B,) or scalar}`` step size ``d`` (models with
                ``step_size_cond``); missing names mean ``d = 0``.
            positions: optional ``{name: (L_s,)}`` rotary positions, e.g. audio frame times in
                gesture-frame units so that both streams share one clock. Default ``arange(L_s)``.

        Returns:
            ``{name: (B, L_s, out_dim_s)}`` for the present streams with ``generate=True``.
        """
        B = self._check(streams, timesteps, masks)
        present = [n for n in self.specs if n in streams]  # declaration order, not call order
        device = next(iter(streams.values())).device
        ts = {}
        for n in present:
            ts[n] = expand_t(timesteps[n], B, device, f"timesteps[{n!r}]")
            check_t(ts[n], f"timesteps[{n!r}]")
        for arg, given in (("step_sizes", step_sizes), ("positions", positions)):
            absent = [n for n in (given or {}) if n not in streams]
            if absent:
                raise FlowInputError(
                    f"{arg}: name(s) {absent} are not present streams; present: {present}"
                )
        ds = {n: expand_t(d, B, device) for n, d in (step_sizes or {}).items()}
        if (pooled is None) != (self.pooled_proj is None):
            raise FlowInputError(
                f"pooled: model pooled_dim={self.pooled_dim}, found "
                f"{None if pooled is None else tuple(pooled.shape)}"
            )
        if pooled is not None and pooled.shape != (B, self.pooled_dim):
            raise FlowInputError(
                f"pooled: expected shape ({B}, {self.pooled_dim}), found {tuple(pooled.shape)}"
            )
        cond = self.conditioning(ts, present, pooled, ds)

        hidden, ropes = {}, {}
        for n in present:
            x, s = streams[n], self.specs[n]
            L = x.shape[1]
            h = self.in_proj[n](x)
            if s.pos == "sincos":
                h = h + getattr(self, f"sincos_{n}")[:L].to(h.dtype)
            hidden[n] = h
            if s.pos == "rope":
                pos = (positions or {}).get(n)
                if pos is None:
                    pos = torch.arange(L, device=device)
                elif pos.shape != (L,):
                    raise FlowInputError(
                        f"positions[{n!r}]: expected shape ({L},), found {tuple(pos.shape)}"
                    )
                ropes[n] = self.rope.freqs(pos.to(device))
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
            # a context-only stream leaves after the last block; keep it in the key mask order
            hidden = {n: out.get(n, hidden[n]) for n in hidden}

        result = {}
        for n in present:
            if n in self.proj_out:
                result[n] = self.proj_out[n](self.norm_out[n](hidden[n], cond[n]))
        return result
