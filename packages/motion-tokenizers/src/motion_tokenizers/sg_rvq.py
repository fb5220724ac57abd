"""Semantic Gesticulator's two-part residual VQ-VAE motion tokenizer.

Zhang et al., "Semantic Gesticulator: Semantics-Aware Co-Speech Gesture Synthesis", SIGGRAPH 2024
(https://arxiv.org/abs/2405.09814), official code ``LuMen-ze/Semantic-Gesticulator-Official``
``SG_code/Model/{sep_vqvae_ddp_2part,vqvae,encdec,resnet,bottleneck,residual_vq}.py``.

Two parts (body, hands), each a Jukebox-style VQ-VAE: a strided Conv1d encoder with dilated
residual blocks (``stride_t ** down_t`` = 8x fewer frames), a transformer over the latent frames,
a 4-layer residual quantizer of Jukebox EMA codebooks, a second transformer and a
ConvTranspose1d decoder. Inputs longer than ``window`` latent frames go through both
transformers as overlapping windows with stride 1: the first window is kept whole, every later
window contributes its last frame (what the reference's ``encode``/``decode``/``inference`` do;
its training ``forward`` runs the transformers on the whole sequence).

**The reference's layout.** A frame is ``(joint_num + 1) * joint_channel`` numbers: ``joint_num +
1`` slots of ``joint_channel`` values. In SG's data (``motion_rvq_*.yaml``: 72 joints, 3 channels,
219 numbers) slot ``joint_num`` (72) is the root translation and belongs to the body part;
``body_joints`` and ``hands_joints`` list the slots each part reads (in their order), slots in
neither (SG's finger tips) decode as zeros. Nothing here assumes SG's numbers: an SMPL-X
axis-angle layout is ``joint_num=55`` (55 joints + translation in slot 55).

Public tensors are ``(B, T, C)`` motion and ``(B, N, Q)`` codes with ``N = T // 8``; the
reference holds codes as ``(Q, B, N)`` and only decodes a batch of one.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from .base import LocalPretrained
from .errors import CheckpointError, TokenizerInputError

__all__ = [
    "SGRVQVAE",
    "SG_BODY_JOINTS",
    "SG_HANDS_JOINTS",
    "clean_sg_state",
    "is_sg_rvq_checkpoint",
    "read_sg_checkpoint",
]

# Config/motion_rvq_inference.yaml: 21 body joints + the root translation slot (72)
SG_BODY_JOINTS = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 44, 45, 46, 47, 72]
# the 38 finger joints of both hands (the tips 23, 28, ... are in neither part)
SG_HANDS_JOINTS = [20, 21, 22, 24, 25, 26, 27, 29, 30, 31, 32, 34, 35, 36, 37, 39, 40, 41, 42]
SG_HANDS_JOINTS += [48, 49, 50, 52, 53, 54, 55, 57, 58, 59, 60, 62, 63, 64, 65, 67, 68, 69, 70]

Filter = Literal["savgol", "gaussian"]
# (window_length, polyorder) / sigma per filter position, as vqvae.py hard-codes them
_SAVGOL = {"rq_code": (5, 2), "motion_info": (24, 4)}
_SIGMA = {"rq_code": 2.0, "motion_info": 5.0}
# where each filter acts when the caller does not say: generate_semantic_gestures.py smooths
# the rhythmic codes with savgol on the code vectors and the injected result with gaussian on
# the motion
_DEFAULT_POS = {"savgol": "rq_code", "gaussian": "motion_info"}


# ---------------------------------------------------------------- Jukebox conv encoder/decoder


class _ResConv1D(nn.Module):
    """ReLU -> dilated conv(k3) -> ReLU -> conv(k1), plus the skip (Jukebox, no norm/dropout)."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        # indices 1 and 3 hold the convolutions, as in the reference's state dict
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(width, width, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(width, width, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.model(x)


class _Resnet1D(nn.Module):
    def __init__(self, width: int, depth: int, growth: int, reverse: bool = False):
        super().__init__()
        blocks = [_ResConv1D(width, growth**d) for d in range(depth)]
        self.model = nn.Sequential(*(blocks[::-1] if reverse else blocks))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _kernel(stride_t: int) -> tuple[int, int]:
    return (3, 1) if stride_t == 1 else (stride_t * 2, stride_t // 2)


class _Encoder(nn.Module):
    """``(B, C, T) -> (B, emb, T / stride_t**down_t)``: [strided conv, Resnet1D] x down_t, conv."""

    def __init__(self, c_in, emb, width, depth, growth, down_t, stride_t):
        super().__init__()
        k, p = _kernel(stride_t)
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv1d(c_in if i == 0 else width, width, k, stride_t, p),
                _Resnet1D(width, depth, growth),
            )
            for i in range(down_t)
        ]
        blocks.append(nn.Conv1d(width, emb, 3, 1, 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class _Decoder(nn.Module):
    """``(B, emb, N) -> (B, C, N * stride_t**down_t)``: conv, [Resnet1D, ConvTranspose1d] x down_t,
    conv. The last transposed conv outputs ``emb`` channels, as in the reference."""

    def __init__(self, c_out, emb, width, depth, growth, down_t, stride_t, reverse_dilation):
        super().__init__()
        k, p = _kernel(stride_t)
        blocks: list[nn.Module] = [nn.Conv1d(emb, width, 3, 1, 1)]
        for i in range(down_t):
            blocks.append(
                nn.Sequential(
                    _Resnet1D(width, depth, growth, reverse=reverse_dilation),
                    nn.ConvTranspose1d(width, emb if i == down_t - 1 else width, k, stride_t, p),
                )
            )
        self.model = nn.Sequential(*blocks)
        self.out = nn.Conv1d(emb, c_out, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.model(x))


# ---------------------------------------------------------------- latent transformer


class _SinCos(nn.Module):
    def __init__(self, dim: int, max_len: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"emb_width: the sin-cos table needs an even width, found {dim}")
        pos = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2).float() * (-np.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(pos * div)
        pe[0, :, 1::2] = torch.cos(pos * div)
        # a frozen Parameter, not a buffer: the reference's layout (and parameter count)
        self.pe = nn.Parameter(pe, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[:, : x.shape[1], :]


class _LatentTransformer(nn.Module):
    """encdec.Transformer_block: sin-cos positions, post-norm GELU encoder (batch_first),
    LayerNorm, Linear. ``(B, L, D) -> (B, L, D)``, ``L <= max_len``."""

    def __init__(self, dim: int, heads: int, depth: int, dropout: float, max_len: int):
        super().__init__()
        self.pos_embed = _SinCos(dim, max_len)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.lxm_embed = nn.Linear(dim, dim)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.lxm_embed(self.norm(self.encoder(self.dropout(self.pos_embed(x)))))


def _windowed(
    tf: nn.Module,
    x: Tensor,
    window: int,
    stride: int = 1,
    insert_windows: list[tuple[int, int]] | None = None,
) -> Tensor:
    """Run ``tf`` on ``x (B, L, D)`` as SG does for L > window: windows ``[i, i + window)`` every
    ``stride`` frames (plus the last window when ``stride`` does not reach it); the output is the
    first window whole, then the last ``stride`` frames of each later window (and the remainder
    from the last one). ``insert_windows`` (decode only): each ``(s, e)`` re-runs the window
    ending at ``e`` (the first one when ``e <= window``) alone and pastes it whole over the
    stitched result, so an injected gesture is decoded with its own context."""
    b, n, d = x.shape
    if n <= window:
        return tf(x)
    starts = list(range(0, n - window + 1, stride))
    rem = (n - window) % stride
    if rem:
        starts.append(n - window)
    wins = torch.stack([x[:, s : s + window] for s in starts], 1)  # (B, W, window, D)
    y = tf(wins.reshape(b * len(starts), window, d)).reshape(b, len(starts), window, -1)
    later = y[:, 1 : len(starts) - (1 if rem else 0), -stride:].reshape(b, -1, y.shape[-1])
    pieces = [y[:, 0], later]
    if rem:
        pieces.append(y[:, -1, -rem:])
    out = torch.cat(pieces, 1)
    for _, e in insert_windows or []:  # the reference keys the window on its end only
        lo = 0 if e <= window else e - window
        out[:, lo : lo + window] = tf(x[:, lo : lo + window])
    return out


# ---------------------------------------------------------------- Jukebox EMA residual quantizer


class _EMACodebook(nn.Module):
    """bottleneck.BottleneckBlock: nearest code by squared distance, EMA (``mu``) of per-code
    sums and counts, codes used less than ``threshold`` (1.0) times on the EMA count are replaced
    by random input vectors at every training step; initialised from the first training batch."""

    def __init__(self, k_bins: int, dim: int, mu: float, threshold: float = 1.0):
        super().__init__()
        self.k_bins, self.dim, self.mu, self.threshold = k_bins, dim, mu, threshold
        self.register_buffer("codebook", torch.zeros(k_bins, dim))
        # EMA state: kept in the state dict so training resumes (the reference does not save it,
        # so its first training step after a load re-initialises the codebook from the batch)
        self.register_buffer("ema_sum", torch.zeros(k_bins, dim))
        self.register_buffer("ema_count", torch.zeros(k_bins))
        self.register_buffer("initted", torch.tensor(False))

    def _tile(self, x: Tensor) -> Tensor:
        n, w = x.shape
        if n < self.k_bins:
            x = x.repeat((self.k_bins + n - 1) // n, 1)
            x = x + torch.randn_like(x) * (0.01 / np.sqrt(w))
        return x

    def _random_codes(self, x: Tensor) -> Tensor:
        # the reference draws from the global RNG in this order (randn_like, then randperm);
        # the same order gives the same codebooks under the same seed
        y = self._tile(x)
        return y[torch.randperm(y.shape[0])][: self.k_bins]

    @staticmethod
    def _distributed() -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    @torch.no_grad()
    def _init_codes(self, x: Tensor) -> None:
        k = self._random_codes(x)
        if self._distributed():
            torch.distributed.broadcast(k, 0)  # every rank starts from rank 0's codebook
        self.codebook.copy_(k)
        self.ema_sum.copy_(k)
        self.ema_count.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, x: Tensor, idx: Tensor) -> dict[str, Tensor]:
        onehot = torch.zeros(self.k_bins, x.shape[0], device=x.device)
        onehot.scatter_(0, idx.view(1, -1), 1)
        k_sum = onehot @ x
        k_elem = onehot.sum(-1)
        k_rand = self._random_codes(x)
        if self._distributed():
            # every rank must hold the same codebook (the reference's dist_adapter calls)
            torch.distributed.broadcast(k_rand, 0)
            torch.distributed.all_reduce(k_sum)
            torch.distributed.all_reduce(k_elem)
        old = self.codebook.clone()
        mu = self.mu
        self.ema_sum.copy_(mu * self.ema_sum + (1.0 - mu) * k_sum)
        self.ema_count.copy_(mu * self.ema_count + (1.0 - mu) * k_elem)
        usage = (self.ema_count.view(-1, 1) >= self.threshold).float()
        self.codebook.copy_(
            usage * (self.ema_sum / self.ema_count.view(-1, 1)) + (1 - usage) * k_rand
        )
        prob = k_elem / k_elem.sum()
        return dict(
            entropy=-(prob * torch.log(prob + 1e-8)).sum(),
            used_curr=(k_elem >= self.threshold).sum(),
            usage=usage.sum(),
            dk=torch.norm(self.codebook - old) / np.sqrt(np.prod(old.shape)),
        )

    def forward(self, x: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """x ``(M, D)`` -> indices ``(M,)``, straight-through codes ``(M, D)``, commit loss,
        metrics."""
        prenorm = torch.norm(x - torch.mean(x)) / np.sqrt(np.prod(x.shape))
        if update and not bool(self.initted):
            self._init_codes(x)
        k_w = self.codebook.t()
        # the reference's expansion of |x - k|^2; the same formula keeps near-ties the same
        dist = (x**2).sum(-1, keepdim=True) - 2 * (x @ k_w) + (k_w**2).sum(0, keepdim=True)
        min_dist, idx = torch.min(dist, dim=-1)
        xd = nn.functional.embedding(idx, self.codebook)
        metrics = self._update(x, idx) if update else {}
        commit = torch.norm(xd.detach() - x) ** 2 / np.prod(x.shape)
        xd = x + (xd - x).detach()
        return idx, xd, commit, dict(fit=min_dist.mean(), pn=prenorm, **metrics)


class _ResidualQuantizer(nn.Module):
    """residual_vq.ResidualVQ over Jukebox codebooks (no projections, no quantize dropout)."""

    def __init__(self, num_quantizers: int, k_bins: int, dim: int, mu: float, commit: float):
        super().__init__()
        self.commit = commit
        self.layers = nn.ModuleList(_EMACodebook(k_bins, dim, mu) for _ in range(num_quantizers))

    def forward(self, z: Tensor, update: bool):
        """z ``(B, N, D)`` -> quantized ``(B, N, D)``, indices ``(B, N, Q)``, per-layer commit
        losses ``(Q,)`` (times ``commit``), per-layer metrics."""
        B, N, D = z.shape
        residual = z.reshape(B * N, D)
        out: Tensor | float = 0.0
        codes, losses, metrics = [], [], []
        for layer in self.layers:
            idx, q, commit, m = layer(residual, update)
            residual = residual - q.detach()
            out = out + q
            codes.append(idx)
            losses.append(commit * self.commit)
            metrics.append(m)
        assert isinstance(out, Tensor)
        return (
            out.view(B, N, D),
            torch.stack(codes, -1).view(B, N, -1),
            torch.stack(losses),
            metrics,
        )

    def decode(self, codes: Tensor) -> Tensor:
        """codes ``(..., Q)`` -> the sum of the code vectors ``(..., D)``, layer 0 first."""
        out = None
        for q, layer in enumerate(self.layers):
            v = nn.functional.embedding(codes[..., q], layer.codebook)
            out = v if out is None else out + v
        assert out is not None
        return out


# ---------------------------------------------------------------- one part


class _SGPart(nn.Module):
    """vqvae.VQVAE with the rqvae bottleneck and both transformers: one body part."""

    def __init__(self, c_in, *, emb, l_bins, width, depth, growth, down_t, stride_t, q, mu, commit,
                 heads, tf_depth, dropout, max_len, reverse_dilation):  # fmt: skip
        super().__init__()
        self.encoder = _Encoder(c_in, emb, width, depth, growth, down_t, stride_t)
        self.encoder_transformer = _LatentTransformer(emb, heads, tf_depth, dropout, max_len)
        self.decoder_transformer = _LatentTransformer(emb, heads, tf_depth, dropout, max_len)
        self.quantizer = _ResidualQuantizer(q, l_bins, emb, mu, commit)
        self.decoder = _Decoder(c_in, emb, width, depth, growth, down_t, stride_t, reverse_dilation)

    def encode_latent(self, x: Tensor, window: int | None) -> Tensor:
        """x ``(B, T, C)`` -> pre-quantisation latent ``(B, N, D)`` (windowed when ``window``)."""
        z = self.encoder(x.permute(0, 2, 1).float()).permute(0, 2, 1)
        return (
            self.encoder_transformer(z)
            if window is None
            else _windowed(self.encoder_transformer, z, window)
        )

    def decode_latent(
        self, zq: Tensor, window: int | None, stride: int = 1, inserts=None
    ) -> Tensor:
        """quantized latent ``(B, N, D)`` -> motion ``(B, T, C)``."""
        if window is None:
            h = self.decoder_transformer(zq)
        else:
            h = _windowed(self.decoder_transformer, zq, window, stride, inserts)
        return self.decoder(h.permute(0, 2, 1)).permute(0, 2, 1)


# ---------------------------------------------------------------- smoothing filters


def _savgol(x: np.ndarray, window_length: int, polyorder: int) -> np.ndarray:
    """scipy.signal.savgol_filter(x, window_length, polyorder, axis=0) in its default 'interp'
    mode (least-squares polynomial fits, the edges from one fit to the first / last window), for
    ``x (T, C)``; scipy is not a dependency of this library."""
    T = x.shape[0]
    xd = x.astype(np.float64)
    half = window_length // 2
    pos = half - 0.5 if window_length % 2 == 0 else half
    pts = np.arange(-pos, window_length - pos)
    A = pts[None, :] ** np.arange(polyorder + 1)[:, None]  # (p+1, wl)
    e0 = np.zeros(polyorder + 1)
    e0[0] = 1.0
    coeffs = np.linalg.lstsq(A, e0, rcond=None)[0]  # value of the fit at pos
    c = (window_length - 1) // 2  # scipy's convolve1d alignment (also for even windows)
    y = np.zeros_like(xd)
    for j in range(window_length):
        y[c : T - window_length + 1 + c] += coeffs[j] * xd[j : T - window_length + 1 + j]
    V = np.arange(window_length, dtype=np.float64)[:, None] ** np.arange(polyorder + 1)[None, :]
    fit = np.linalg.pinv(V)  # (p+1, wl): least-squares polynomial coefficients of a window
    y[:half] = V[:half] @ (fit @ xd[:window_length])
    y[T - half :] = V[window_length - half :] @ (fit @ xd[T - window_length :])
    return y.astype(x.dtype)


def _gaussian(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d(x, sigma, axis=0) (mode 'reflect': d c b a | a b c d)."""
    radius = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 / sigma**2 * np.arange(-radius, radius + 1) ** 2)
    k /= k.sum()
    T = x.shape[0]
    padded = np.pad(x.astype(np.float64), ((radius, radius), (0, 0)), mode="symmetric")
    y = np.zeros((T, x.shape[1]))
    for j in range(2 * radius + 1):
        y += k[j] * padded[j : j + T]
    return y.astype(x.dtype)


def _smooth(x: Tensor, name: str, pos: str) -> Tensor:
    """Filter ``x (B, L, D)`` along L per batch item (numpy, as the reference does)."""
    length = x.shape[1]
    if name == "savgol":
        wl, order = _SAVGOL[pos]
        if length < wl:
            raise TokenizerInputError(
                f"decode: filter 'savgol' at {pos!r} needs at least {wl} "
                f"{'tokens' if pos == 'rq_code' else 'frames'}, found {length}"
            )
        fn = lambda a: _savgol(a, wl, order)  # noqa: E731
    else:
        fn = lambda a: _gaussian(a, _SIGMA[pos])  # noqa: E731
    arr = x.detach().cpu().numpy()
    return torch.from_numpy(np.stack([fn(a) for a in arr])).to(x.device)


# ---------------------------------------------------------------- the model


class SGRVQVAE(LocalPretrained, nn.Module, PyTorchModelHubMixin):
    """SG's ``SepVQVAE_DDP_body_hands``: body and hands tokenized separately, 8x fewer frames,
    ``num_quantizers`` residual codes per token and part.

    ``motion (B, T, C)`` with ``C = (joint_num + 1) * joint_channel`` and ``T`` a multiple of
    ``downsample``; codes ``{"body": (B, T // 8, Q), "hands": (B, T // 8, Q)}``.

    Training (``forward`` in train mode) initialises each codebook from the first batch and
    updates it by EMA (``l_mu``) with dead-code replacement, drawing from torch's global RNG
    exactly as the reference; the optimizer only sees the conv/transformer weights.
    """

    parts: ClassVar[tuple[str, str]] = ("body", "hands")

    def __init__(
        self,
        *,
        joint_channel: int = 3,
        joint_num: int = 72,
        body_joints: list[int] = SG_BODY_JOINTS,
        hands_joints: list[int] = SG_HANDS_JOINTS,
        emb_width: int = 512,
        l_bins: int = 512,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        down_t: int = 3,
        stride_t: int = 2,
        num_quantizers: int = 4,
        l_mu: float = 0.95,
        commit: float = 0.02,
        body_transformer_depth: int = 3,
        hands_transformer_depth: int = 2,
        transformer_heads: int = 4,
        transformer_dropout: float = 0.0,
        window: int = 15,
        max_len: int = 120,
        body_weight: float = 3.0,
        hands_weight: float = 2.0,
        vel: float = 1.0,
        acc: float = 1.0,
        reg: float = 0.0,
        reverse_decoder_dilation: bool = True,
    ):
        super().__init__()
        slots = joint_num + 1
        for name, idx in (("body_joints", body_joints), ("hands_joints", hands_joints)):
            if not idx or any(not isinstance(i, int) or not 0 <= i < slots for i in idx):
                raise ValueError(f"{name}: expected slot indices in [0, {slots}), found {idx}")
        overlap = sorted(set(body_joints) & set(hands_joints))
        if overlap:
            raise ValueError(f"body_joints and hands_joints share slots {overlap}")
        if window > max_len:
            raise ValueError(f"window {window} exceeds the position table max_len {max_len}")
        self.joint_channel, self.joint_num = joint_channel, joint_num
        self.joints = {"body": list(body_joints), "hands": list(hands_joints)}
        self.num_quantizers, self.l_bins, self.emb_width = num_quantizers, l_bins, emb_width
        self.window, self.max_len = window, max_len
        self.downsample = stride_t**down_t
        self.weights = {"body": body_weight, "hands": hands_weight}
        self.vel, self.acc, self.reg = vel, acc, reg
        shared = dict(
            emb=emb_width, l_bins=l_bins, width=width, depth=depth, growth=dilation_growth_rate,
            down_t=down_t, stride_t=stride_t, q=num_quantizers, mu=l_mu, commit=commit,
            heads=transformer_heads, dropout=transformer_dropout, max_len=max_len,
            reverse_dilation=reverse_decoder_dilation,
        )  # fmt: skip
        self.body = _SGPart(
            len(body_joints) * joint_channel, tf_depth=body_transformer_depth, **shared
        )
        self.hands = _SGPart(
            len(hands_joints) * joint_channel, tf_depth=hands_transformer_depth, **shared
        )

    @property
    def input_dim(self) -> int:
        return (self.joint_num + 1) * self.joint_channel

    # ------------------------------------------------------------ presets

    @classmethod
    def sg(cls, **kw) -> SGRVQVAE:
        """SG's released size (``Config/motion_rvq_inference.yaml``): 72 joints + translation."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw) -> SGRVQVAE:
        """CPU-test size on a 12-joint + translation layout (slot 4 in neither part)."""
        cfg: dict[str, Any] = dict(
            joint_num=12, body_joints=[0, 1, 2, 3, 5, 6, 12], hands_joints=[7, 8, 9, 10, 11],
            emb_width=16, l_bins=16, width=16, depth=2, body_transformer_depth=1,
            hands_transformer_depth=1,
        )  # fmt: skip
        return cls(**{**cfg, **kw})

    # ------------------------------------------------------------ checks and layout

    def _part(self, name: str) -> _SGPart:
        if name not in self.parts:
            raise TokenizerInputError(f"part: expected one of {self.parts}, found {name!r}")
        return getattr(self, name)

    def _check_motion(self, motion: Tensor, what: str = "motion") -> None:
        if not isinstance(motion, Tensor) or motion.ndim != 3:
            shape = tuple(motion.shape) if isinstance(motion, Tensor) else type(motion).__name__
            raise TokenizerInputError(f"{what}: expected (B, T, {self.input_dim}), found {shape}")
        _, t, c = motion.shape
        if c != self.input_dim:
            raise TokenizerInputError(
                f"{what}: expected (B, T, {self.input_dim}) = (joint_num + 1) * joint_channel "
                f"channels, found {tuple(motion.shape)}"
            )
        if t == 0 or t % self.downsample:
            raise TokenizerInputError(
                f"{what}: T must be a positive multiple of {self.downsample}, found T={t}"
            )
        if not motion.is_floating_point() or not bool(torch.isfinite(motion).all()):
            raise TokenizerInputError(f"{what}: expected finite float values (NaN or inf found)")

    def _split(self, motion: Tensor) -> dict[str, Tensor]:
        B, T, _ = motion.shape
        slots = motion.reshape(B, T, -1, self.joint_channel)
        return {p: slots[:, :, self.joints[p]].reshape(B, T, -1) for p in self.parts}

    def _merge(self, parts: dict[str, Tensor]) -> Tensor:
        B, T, _ = parts["body"].shape
        out = parts["body"].new_zeros(B, T, self.joint_num + 1, self.joint_channel)
        for p in self.parts:
            out[:, :, self.joints[p]] = parts[p].reshape(B, T, -1, self.joint_channel)
        return out.reshape(B, T, -1)

    def _check_codes(self, codes: Tensor, what: str) -> None:
        if not isinstance(codes, Tensor) or codes.dtype not in (torch.int32, torch.int64):
            raise TokenizerInputError(f"{what}: expected an integer tensor of codes")
        if codes.shape[-1:] != (self.num_quantizers,):
            raise TokenizerInputError(
                f"{what}: expected (..., {self.num_quantizers}) codes, found {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.l_bins):
            raise TokenizerInputError(
                f"{what}: codes must lie in [0, {self.l_bins}), found "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )

    # ------------------------------------------------------------ reference API

    @torch.no_grad()
    def encode(self, motion: Tensor) -> dict[str, Tensor]:
        """motion ``(B, T, C)`` -> ``{"body", "hands"}: (B, T // 8, Q)`` long (the reference's
        windowed ``encode``; it returns them as ``(Q, B, N)``)."""
        self._check_motion(motion)
        out = {}
        for p, x in self._split(motion).items():
            part = self._part(p)
            _, codes, _, _ = part.quantizer(part.encode_latent(x, self.window), update=False)
            out[p] = codes
        return out

    @torch.no_grad()
    def decode(
        self,
        codes: dict[str, Tensor],
        *,
        filter: Filter | None = None,
        insert_windows: list[tuple[int, int]] | None = None,
        filter_pos: Literal["rq_code", "motion_info"] | None = None,
        stride: int = 1,
    ) -> Tensor:
        """codes ``{"body", "hands"}: (B, N, Q)`` -> motion ``(B, N * 8, C)`` (the reference's
        windowed ``decode``; slots in neither part are zero).

        ``filter``: ``"savgol"`` (window 5, order 2 on the summed code vectors, or window 24,
        order 4 on the motion) or ``"gaussian"`` (sigma 2 on the code vectors, 5 on the motion),
        applied where ``filter_pos`` says; by default savgol on the code vectors and gaussian on
        the motion, the two ways ``generate_semantic_gestures.py`` calls it. ``insert_windows``:
        token spans ``(start, end)`` of injected gestures; the 15-token window ending at each
        ``end`` (the first window when ``end <= 15``) is decoded whole by the decoder
        transformer and pasted over the stride-1 result. ``stride``: the windows' stride.
        """
        if not isinstance(codes, dict) or set(codes) != set(self.parts):
            found = sorted(codes) if isinstance(codes, dict) else type(codes).__name__
            raise TokenizerInputError(f"codes: expected keys {list(self.parts)}, found {found}")
        for p in self.parts:
            self._check_codes(codes[p], f"codes[{p!r}]")
            if codes[p].ndim != 3:
                raise TokenizerInputError(
                    f"codes[{p!r}]: expected (B, N, {self.num_quantizers}), "
                    f"found {tuple(codes[p].shape)}"
                )
        if codes["body"].shape != codes["hands"].shape:
            raise TokenizerInputError(
                f"codes: body {tuple(codes['body'].shape)} and hands "
                f"{tuple(codes['hands'].shape)} differ"
            )
        if filter not in (None, "savgol", "gaussian"):
            raise TokenizerInputError(
                f"filter: expected None, 'savgol' or 'gaussian', found {filter!r}"
            )
        pos = filter_pos or _DEFAULT_POS.get(filter or "")
        if filter is not None and pos not in _SAVGOL:
            raise TokenizerInputError(
                f"filter_pos: expected 'rq_code' or 'motion_info', found {pos!r}"
            )
        if not isinstance(stride, int) or not 1 <= stride <= self.window:
            raise TokenizerInputError(
                f"stride: expected an int in [1, {self.window}], found {stride!r}"
            )
        N = codes["body"].shape[1]
        inserts = [(int(s), int(e)) for s, e in insert_windows or []]
        for s, e in inserts:
            if not 0 <= s < e <= N:
                raise TokenizerInputError(
                    f"insert_windows: ({s}, {e}) is not a token span inside [0, {N}]"
                )
        out = {}
        for p in self.parts:
            part = self._part(p)
            zq = part.quantizer.decode(codes[p].long())
            if filter is not None and pos == "rq_code":
                zq = _smooth(zq, filter, pos)
            x = part.decode_latent(zq, self.window, stride, inserts)
            if filter is not None and pos == "motion_info":
                x = _smooth(x, filter, pos)
            out[p] = x
        return self._merge(out)

    def forward(self, motion: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """SG's training step: motion ``(B, T, C)`` -> recon ``(B, T, C)``, loss (scalar),
        metrics (detached scalars, ``"<part>/<name>"`` plus ``"loss_body"``/``"loss_hands"``).

        Per part: L1 recon + sum of the layers' commit losses (times ``commit``) + ``reg`` *
        squared velocity + ``vel`` * L1 velocity + ``acc`` * L1 acceleration; the loss is
        ``body_weight * body + hands_weight * hands``. The transformers see the whole sequence
        (``T // 8 <= max_len``); in train mode the codebooks are updated."""
        self._check_motion(motion)
        if motion.shape[1] // self.downsample > self.max_len:
            raise TokenizerInputError(
                f"motion: forward runs the transformers on the whole sequence, at most "
                f"{self.max_len * self.downsample} frames, found T={motion.shape[1]}"
            )
        recons, losses, metrics = {}, {}, {}
        for p, x in self._split(motion).items():
            part = self._part(p)
            zq, _, sep_commit, qm = part.quantizer(part.encode_latent(x, None), self.training)
            x_out = part.decode_latent(zq, None)
            x = x.float()
            recon = (x_out - x).abs().mean()
            regular = ((x_out[:, 1:] - x_out[:, :-1]) ** 2).mean()
            vel = ((x_out[:, 1:] - x_out[:, :-1]) - (x[:, 1:] - x[:, :-1])).abs().mean()
            acc = (
                (x_out[:, 2:] + x_out[:, :-2] - 2 * x_out[:, 1:-1])
                - (x[:, 2:] + x[:, :-2] - 2 * x[:, 1:-1])
            ).abs().mean()  # fmt: skip
            commit = sep_commit.sum()
            loss = recon + commit + self.reg * regular + self.vel * vel + self.acc * acc
            recons[p], losses[p] = x_out, loss
            m = dict(
                recons_loss=recon, commit_loss=commit, sep_commit_loss_mean=sep_commit.mean(),
                regularization=regular, velocity_loss=vel, acceleration_loss=acc,
            )  # fmt: skip
            # vqvae.average_metrics: the layers' metrics summed and floor-divided by the count
            for k in qm[0]:
                m[k] = sum(d[k] for d in qm) // len(qm)
            metrics.update({f"{p}/{k}": v.detach() for k, v in m.items()})
        total = self.weights["body"] * losses["body"] + self.weights["hands"] * losses["hands"]
        metrics["loss_body"], metrics["loss_hands"] = (
            losses["body"].detach(),
            losses["hands"].detach(),
        )
        return self._merge(recons), total, metrics

    @torch.no_grad()
    def inference(self, motion: Tensor) -> Tensor:
        """SG's ``inference``: motion ``(B, T, C)`` -> reconstruction ``(B, T, C)`` through the
        windowed transformers and the nearest codes (no codebook update)."""
        self._check_motion(motion)
        out = {}
        for p, x in self._split(motion).items():
            part = self._part(p)
            zq, _, _, _ = part.quantizer(part.encode_latent(x, self.window), update=False)
            out[p] = part.decode_latent(zq, self.window)
        return self._merge(out)

    @torch.no_grad()
    def codes_to_latent(self, part: str, codes: Tensor) -> Tensor:
        """``bottleneck.decode``: codes ``(..., Q)`` -> sum of the code vectors ``(..., emb_width)``."""  # noqa: E501
        p = self._part(part)
        self._check_codes(codes, "codes")
        return p.quantizer.decode(codes.long())

    @torch.no_grad()
    def latent_to_codes(self, part: str, latent: Tensor) -> Tensor:
        """``bottleneck.encode``: latent ``(..., emb_width)`` -> residual codes ``(..., Q)``."""
        p = self._part(part)
        if not isinstance(latent, Tensor) or latent.shape[-1:] != (self.emb_width,):
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise TokenizerInputError(f"latent: expected (..., {self.emb_width}), found {shape}")
        if not bool(torch.isfinite(latent).all()):
            raise TokenizerInputError("latent: expected finite values (NaN or inf found)")
        flat = latent.reshape(1, -1, self.emb_width).float()
        _, codes, _, _ = p.quantizer(flat, update=False)
        return codes.reshape(*latent.shape[:-1], self.num_quantizers)

    # ------------------------------------------------------------ reference checkpoints

    @classmethod
    def from_reference_checkpoint(cls, path: str | os.PathLike) -> SGRVQVAE:
        """Load SG's ``rqvae.pt`` (``{"model", "optimizer", "config", "epoch"}`` with DDP
        ``module.`` keys, as ``motion_vqvae.py`` saves it). The sizes and joint lists come from
        its ``config.structure``; the EMA statistics are not in that file, so (as in the
        reference) the first training step re-initialises the codebooks from the batch."""
        state, config = read_sg_checkpoint(path)
        model = cls(**_config_from_sg(config, path))
        own = model.state_dict()
        mapped: dict[str, Tensor] = {}
        for k, v in state.items():
            nk = _map_key(k)
            if nk is None or nk not in own:
                raise CheckpointError(f"{path}: unexpected key {k!r} for SGRVQVAE")
            if tuple(v.shape) != tuple(own[nk].shape):
                raise CheckpointError(
                    f"{path}: key {k!r} has shape {tuple(v.shape)}, the config needs "
                    f"{tuple(own[nk].shape)}"
                )
            mapped[nk] = v
        ema = (".ema_sum", ".ema_count", ".initted")
        missing = sorted(k for k in own if k not in mapped and not k.endswith(ema))
        if missing:
            raise CheckpointError(f"{path}: missing key(s) {[_ref_key(k) for k in missing[:5]]}")
        model.load_state_dict(mapped, strict=False)
        return model.eval()


# ---------------------------------------------------------------- SG checkpoint reading


# SG pickles its config as an ``easydict.EasyDict`` (a dict subclass); torch's weights-only
# unpickler reads it as an OrderedDict under that name, so neither easydict nor a full unpickle
# is needed
_EASYDICT = (OrderedDict, "easydict.EasyDict")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def load_sg_file(path: str | os.PathLike) -> Any:
    """Any SG ``.pt`` file (``rqvae.pt``, ``gpt0.pt``..): ``torch.load(weights_only=True)`` with
    SG's pickled ``easydict.EasyDict`` config read as a plain dict (the only class allowed
    besides torch's own, so loading never runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with torch.serialization.safe_globals([_EASYDICT]):
            return _plain(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # truncated zip, a pickle that needs other code, ...
        # torch's weights-only message advises weights_only=False; keep only its reason
        why = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or str(e)
        raise CheckpointError(
            f"{path}: not a loadable SG checkpoint (only tensors and SG's config are read: {why})"
        ) from e


def read_sg_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """SG's ``{"model", "optimizer", "config", "epoch"}`` checkpoint -> (state dict with the DDP
    ``module.`` prefix removed, config as plain dicts). Loaded with ``weights_only=True`` (the
    only class allowed besides torch's own is the EasyDict config)."""
    path = Path(path)
    obj = load_sg_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict with 'model' and 'config', found {type(obj).__name__}"
        )
    for key in ("model", "config"):
        if key not in obj:
            raise CheckpointError(
                f"{path}: missing key {key!r} (SG saves model, optimizer, config, epoch)"
            )
    return clean_sg_state(obj["model"], f"{path}: 'model'"), _plain(obj["config"])


def clean_sg_state(state: Any, source: str) -> dict[str, Tensor]:
    """An SG state dict checked (string keys, finite tensors only) with the DDP ``module.``
    prefix removed; ``source`` names it in errors."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source}: expected a non-empty state dict")
    out = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise CheckpointError(f"{source} key {k!r} holds {type(v).__name__}, expected a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source} key {k!r} holds NaN or infinite values")
        out[k.removeprefix("module.")] = v
    return out


def is_sg_rvq_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like SG's ``rqvae.pt`` (a torch zip whose pickle names both parts),
    checked without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
            data = z.read(pkl[0]) if pkl else b""
    except (OSError, zipfile.BadZipFile):
        return False
    return b"vqvae_body." in data and b"vqvae_hands." in data


_PREFIXES = {
    "encoders.0.level_blocks.0.model.": "encoder.model.",
    "decoders.0.level_blocks.0.model.": "decoder.model.",
    "decoders.0.out.": "decoder.out.",
    "encoder_transformer.": "encoder_transformer.",
    "decoder_transformer.": "decoder_transformer.",
}


def _map_key(k: str) -> str | None:
    for part in SGRVQVAE.parts:
        head = f"vqvae_{part}."
        if not k.startswith(head):
            continue
        rest = k[len(head) :]
        for a, b in _PREFIXES.items():
            if rest.startswith(a):
                return f"{part}.{b}{rest[len(a) :]}"
        if rest.startswith("bottleneck.layers.") and rest.endswith(".k"):
            return f"{part}.quantizer.layers.{rest[len('bottleneck.layers.') : -2]}.codebook"
    return None


def _ref_key(k: str) -> str:
    part, rest = k.split(".", 1)
    for a, b in _PREFIXES.items():
        if rest.startswith(b):
            return f"vqvae_{part}.{a}{rest[len(b) :]}"
    if rest.endswith(".codebook"):
        return f"vqvae_{part}.bottleneck.layers.{rest.split('.')[2]}.k"
    return k


def _config_from_sg(config: dict, path) -> dict[str, Any]:
    """Constructor arguments from SG's ``config.structure``; refuses what this class does not
    build (a second level, no transformers, the after-decoder transformer, ...)."""
    s = config.get("structure", config)

    def get(d: dict, key: str, where: str):
        if key not in d:
            raise CheckpointError(f"{path}: config is missing field {where}.{key}")
        return d[key]

    body, hands = get(s, "body", "structure"), get(s, "hands", "structure")
    want = {
        "levels": 1,
        "bottleneck_type": "rqvae",
        "use_bottleneck": True,
        "encoder_transformer": True,
        "decoder_transformer": True,
        "has_after_decoder_transformer": False,
        "norm_bottleneck": False,
        "m_conv": 1.0,
    }
    shared = [
        "emb_width",
        "l_bins",
        "width",
        "depth",
        "dilation_growth_rate",
        "downs_t",
        "strides_t",
        "rq_num_quantizers",
        "l_mu",
        "commit",
        "transformer_head",
        "transformer_dropout",
        "vel",
        "acc",
        "vqvae_reverse_decoder_dilation",
    ]
    for name, d in (("body", body), ("hands", hands)):
        for k, v in want.items():
            if d.get(k, v) != v:
                raise CheckpointError(
                    f"{path}: config field structure.{name}.{k} is {d[k]!r}; SGRVQVAE builds {v!r}"
                )
    for k in shared:
        if get(body, k, "structure.body") != get(hands, k, "structure.hands"):
            raise CheckpointError(
                f"{path}: config field {k} differs between body ({body[k]!r}) and hands "
                f"({hands[k]!r}); SGRVQVAE shares it"
            )
    if body.get("reg", 0) != hands.get("reg", 0):
        raise CheckpointError(f"{path}: config field reg differs between body and hands")
    downs, strides = body["downs_t"], body["strides_t"]
    return dict(
        joint_channel=int(get(s, "joint_channel", "structure")),
        joint_num=int(get(s, "joint_num", "structure")),
        body_joints=[int(i) for i in get(body, "joint_indexes", "structure.body")],
        hands_joints=[int(i) for i in get(hands, "joint_indexes", "structure.hands")],
        emb_width=int(body["emb_width"]),
        l_bins=int(body["l_bins"]),
        width=int(body["width"]),
        depth=int(body["depth"]),
        dilation_growth_rate=int(body["dilation_growth_rate"]),
        down_t=int(downs[0]),
        stride_t=int(strides[0]),
        num_quantizers=int(body["rq_num_quantizers"]),
        l_mu=float(body["l_mu"]),
        commit=float(body["commit"]),
        body_transformer_depth=int(get(body, "transformer_depth", "structure.body")),
        hands_transformer_depth=int(get(hands, "transformer_depth", "structure.hands")),
        transformer_heads=int(body["transformer_head"]),
        transformer_dropout=float(body["transformer_dropout"]),
        body_weight=float(get(body, "weight", "structure.body")),
        hands_weight=float(get(hands, "weight", "structure.hands")),
        vel=float(body["vel"]),
        acc=float(body["acc"]),
        reg=float(body.get("reg", 0)),
        reverse_decoder_dilation=bool(body["vqvae_reverse_decoder_dilation"]),
    )
