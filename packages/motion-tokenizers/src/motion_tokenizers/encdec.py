"""1D convolutional motion encoder and decoder.

The layout of T2M-GPT (Zhang et al., CVPR 2023, https://arxiv.org/abs/2301.06052) and MoMask
(Guo et al., CVPR 2024, https://arxiv.org/abs/2312.00063), which GestureLSM reuses per body part:
a strided Conv1d stack with dilated ResNet1D blocks (dilations 9-3-1) that downsamples time by
``stride_t ** down_t``, and a mirrored nearest-upsampling decoder.

Public tensors are ``(B, T, C)``; the convolutions work on ``(B, C, T)`` internally.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}
NORMS = (None, "LN", "GN", "BN")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, found {name!r}")
    return ACTIVATIONS[name]()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``(B, C, T)`` tensor (MoMask's ``"LN"``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(norm: str | None, channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == "LN":
        return ChannelLayerNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
    if norm == "BN":
        return nn.BatchNorm1d(channels)
    raise ValueError(f"norm: expected one of {NORMS}, found {norm!r}")


class ResConv1DBlock(nn.Module):
    """norm -> act -> dilated conv(k3) -> norm -> act -> conv(k1) -> dropout, plus the skip."""

    def __init__(
        self,
        channels: int,
        dilation: int = 1,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.2,
    ):
        super().__init__()
        # attribute names follow MoMask/T2M-GPT so their state dicts load unchanged
        self.norm1 = make_norm(norm, channels)
        self.activation1 = make_activation(activation)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = make_norm(norm, channels)
        self.activation2 = make_activation(activation)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.activation1(self.norm1(x)))
        h = self.conv2(self.activation2(self.norm2(h)))
        return x + self.dropout(h)


class Resnet1D(nn.Module):
    """``depth`` residual blocks with dilations ``growth**i``; reversed (9, 3, 1) by default."""

    def __init__(
        self,
        channels: int,
        depth: int,
        dilation_growth_rate: int = 3,
        reverse_dilation: bool = True,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.2,
    ):
        dilations = [dilation_growth_rate**i for i in range(depth)]
        if reverse_dilation:
            dilations = dilations[::-1]
        super().__init__()
        self.model = nn.Sequential(
            *(ResConv1DBlock(channels, d, activation, norm, dropout) for d in dilations)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Conv1dEncoder(nn.Module):
    """``(B, T, in_dim)`` -> ``(B, T / stride_t**down_t, code_dim)``."""

    def __init__(
        self,
        in_dim: int,
        code_dim: int,
        *,
        down_t: int = 2,
        stride_t: int = 2,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.2,
    ):
        super().__init__()
        # kernel 2*stride with padding stride/2 halves the length exactly for even lengths
        filter_t, pad_t = stride_t * 2, stride_t // 2
        layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 3, 1, 1), make_activation(activation)]
        for _ in range(down_t):
            layers.append(
                nn.Sequential(
                    nn.Conv1d(width, width, filter_t, stride_t, pad_t),
                    Resnet1D(width, depth, dilation_growth_rate, True, activation, norm, dropout),
                )
            )
        layers.append(nn.Conv1d(width, code_dim, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.transpose(1, 2)).transpose(1, 2)


def polyphase_weights(conv: nn.Conv1d) -> tuple[Tensor, Tensor]:
    """The k2 weights ``(2 C_out, C_in, 2)`` and bias ``(2 C_out,)`` of both output phases."""
    w0, w1, w2 = conv.weight.unbind(-1)  # each (C_out, C_in)
    # even outputs: w0*x[i-1] + (w1+w2)*x[i]; odd outputs: (w0+w1)*x[i] + w2*x[i+1]
    w_even = torch.stack([w0, w1 + w2], dim=-1)
    w_odd = torch.stack([w0 + w1, w2], dim=-1)
    return torch.cat([w_even, w_odd]), torch.cat([conv.bias, conv.bias])


def upsample_conv1d(
    x: Tensor, conv: nn.Conv1d, polyphase: bool = True, weights: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """``conv(nearest_upsample(x, 2))`` for a k3, padding-1 ``conv``, computed without upsampling.

    After nearest upsampling every output sample of a k3 conv sees only two distinct input
    samples, so the pair equals two polyphase k2 convolutions at the low rate whose weights are
    sums of the k3 taps: 2/3 of the multiply-adds and no upsampled intermediate. Equal to the
    literal path up to float rounding (``polyphase=False`` runs the literal path).
    """
    if not polyphase:
        return conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    w, b = weights if weights is not None else polyphase_weights(conv)
    # one conv with both phases stacked on the output channels
    y = F.conv1d(F.pad(x, (1, 1)), w, b)
    C = conv.out_channels
    even, odd = y[:, :C, :-1], y[:, C:, 1:]
    B, _, T = even.shape
    return torch.stack([even, odd], dim=-1).reshape(B, C, 2 * T)


def conv1d_tokens(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: int = 0, dilation: int = 1
) -> Tensor:
    """A stride-1 ``Conv1d`` on a token-major ``x (B, T, C_in)`` -> ``(B, T', C_out)``, as one
    GEMM over the ``k`` shifted copies of ``x`` (equal to ``F.conv1d`` up to float rounding).

    Why: at batch 1 and a few dozen positions torch's CPU convolution leaves oneDNN (it needs
    over 20480 input values) for an im2col path, and a dilated one for a per-channel loop; a
    streaming decoder's crops are that small, and there this measured 1.2-2.4x faster per
    convolution (one thread, 14-100 positions, 512 channels). ``weight``
    ``(C_out, C_in, k)`` is read in place: its ``(C_out, C_in * k)`` view matches the copies
    stacked on the last axis.
    """
    k = weight.shape[-1]
    if padding:
        x = F.pad(x, (0, 0, padding, padding))
    if k == 1:
        return F.linear(x, weight[..., 0], bias)
    n = x.shape[1] - dilation * (k - 1)
    cols = torch.stack([x[:, i * dilation : i * dilation + n] for i in range(k)], dim=-1)
    return F.linear(cols.flatten(2), weight.flatten(1), bias)


class UpsampleBlock(nn.Sequential):
    """``Resnet1D -> Upsample(x scale, nearest) -> Conv1d(k3)``, MoMask's decoder stage.

    Kept as a Sequential so state-dict keys match MoMask/T2M-GPT (``...2.weight`` is the conv);
    for ``scale == 2`` the forward runs the polyphase form of the last two layers.
    """

    def __init__(self, resnet: Resnet1D, channels: int, scale: int = 2, polyphase: bool = True):
        super().__init__(
            resnet,
            nn.Upsample(scale_factor=scale, mode="nearest"),
            nn.Conv1d(channels, channels, 3, 1, 1),
        )
        self.scale, self.polyphase = scale, polyphase and scale == 2
        self._cache: tuple | None = None

    def _weights(self) -> tuple[Tensor, Tensor] | None:
        conv = self[2]
        if torch.is_grad_enabled() and conv.weight.requires_grad:
            return None  # training: rebuild inside the graph every step
        # inference: build once per weight version (it costs more than the conv at batch 1)
        key = (conv.weight.data_ptr(), conv.weight._version, conv.bias._version, conv.weight.device)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, polyphase_weights(conv))
        return self._cache[1]

    def forward(self, x: Tensor) -> Tensor:
        x = self[0](x)
        if self.polyphase:
            return upsample_conv1d(x, self[2], weights=self._weights())
        return self[2](self[1](x))


class Conv1dDecoder(nn.Module):
    """``(B, N, code_dim)`` -> ``(B, N * stride_t**down_t, out_dim)``."""

    def __init__(
        self,
        out_dim: int,
        code_dim: int,
        *,
        down_t: int = 2,
        stride_t: int = 2,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        activation: str = "relu",
        norm: str | None = None,
        dropout: float = 0.2,
        polyphase_upsample: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(code_dim, width, 3, 1, 1), make_activation(activation)]
        for _ in range(down_t):
            layers.append(
                UpsampleBlock(
                    Resnet1D(width, depth, dilation_growth_rate, True, activation, norm, dropout),
                    width,
                    stride_t,
                    polyphase_upsample,
                )
            )
        layers += [
            nn.Conv1d(width, width, 3, 1, 1),
            make_activation(activation),
            nn.Conv1d(width, out_dim, 3, 1, 1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z.transpose(1, 2)).transpose(1, 2)

    def forward_range(self, z: Tensor, lo: int, hi: int) -> Tensor:
        """Frames ``[lo, hi)`` of ``forward(z)``: ``(B, hi - lo, out_dim)``, computed from only
        the positions each layer's output in that range depends on (a streaming decoder wants a
        few frames inside a long context: about 3x fewer multiply-adds at GestureLSM's size).
        Equal to ``forward(z)[:, lo:hi]`` up to float rounding; modules that mix positions
        beyond a fixed radius (GroupNorm, BatchNorm in training) fall back to that."""
        steps = self._local_steps()
        T = z.shape[1] * self.upsample_factor
        lo, hi = max(0, lo), min(hi, T)
        if steps is None or hi <= lo:
            return self.forward(z)[:, lo:hi]
        lengths = [z.shape[1]]
        for *_, up in steps:
            lengths.append(lengths[-1] * (2 if up else 1))
        # backwards: the input positions each step needs for the range after it
        need = [(0, 0)] * len(steps) + [(lo, hi)]
        for i in range(len(steps) - 1, -1, -1):
            _, r, up = steps[i]
            a, b = need[i + 1]
            a, b = ((a - r) // 2, (b - 1 + r) // 2 + 1) if up else (a - r, b + r)
            need[i] = (max(0, a), min(lengths[i], b))
        # forwards on crops, token-major: each step's output is exact on the next step's range
        # (a crop's zero padding only reaches positions that are cut away)
        a, b = need[0]
        x, off = z[:, a:b], a
        for i, (fn, _, up) in enumerate(steps):
            x = fn(x)
            off *= 2 if up else 1
            a, b = need[i + 1]
            x, off = x[:, a - off : b - off], a
        return x

    @property
    def upsample_factor(self) -> int:
        return 2 ** sum(isinstance(m, UpsampleBlock) for m in self.model)

    def _local_steps(self) -> list[tuple] | None:
        """The decoder as ``(fn, radius, upsamples)`` steps on token-major ``(B, T, C)``
        tensors, each output position reading inputs within ``radius`` (at the step's output
        rate for an upsampling step); None when a module is not such a step. Convolutions run
        as :func:`conv1d_tokens` GEMMs: a range is a few dozen positions, where torch's own
        convolutions take slow paths."""

        def local_norm(m: nn.Module) -> bool:
            return isinstance(m, nn.Identity | ChannelLayerNorm)

        def norm(m: nn.Module, x: Tensor) -> Tensor:  # ChannelLayerNorm on (B, T, C)
            if isinstance(m, nn.Identity):
                return x
            return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)

        def conv(m: nn.Conv1d) -> Callable[[Tensor], Tensor]:
            return lambda x: conv1d_tokens(x, m.weight, m.bias, m.padding[0], m.dilation[0])

        def block(blk: ResConv1DBlock) -> Callable[[Tensor], Tensor]:
            def fn(x: Tensor) -> Tensor:
                h = blk.activation1(norm(blk.norm1, x))
                h = conv1d_tokens(
                    h, blk.conv1.weight, blk.conv1.bias, *blk.conv1.padding, *blk.conv1.dilation
                )
                h = blk.activation2(norm(blk.norm2, h))
                return x + conv1d_tokens(h, blk.conv2.weight, blk.conv2.bias)

            return fn

        def upsample(m: UpsampleBlock) -> Callable[[Tensor], Tensor]:
            def fn(x: Tensor) -> Tensor:
                if not m.polyphase:  # nearest x2, then the k3 conv
                    return conv1d_tokens(x.repeat_interleave(2, dim=1), m[2].weight, m[2].bias, 1)
                w, b = m._weights()
                y = conv1d_tokens(F.pad(x, (0, 0, 1, 1)), w, b)  # (B, T + 1, 2 C)
                C = m[2].out_channels
                even, odd = y[:, :-1, :C], y[:, 1:, C:]
                return torch.stack([even, odd], dim=2).flatten(1, 2)

            return fn

        steps: list[tuple] = []
        for m in self.model:
            if isinstance(m, nn.Conv1d) and m.stride == (1,) and m.padding != "same":
                if m.padding[0] != m.dilation[0] * (m.kernel_size[0] - 1) // 2:
                    return None
                steps.append((conv(m), m.padding[0], False))
            elif isinstance(m, tuple(ACTIVATIONS.values())):
                steps.append((m, 0, False))
            elif isinstance(m, UpsampleBlock) and m.scale == 2:
                for blk in m[0].model:
                    if not (local_norm(blk.norm1) and local_norm(blk.norm2)):
                        return None
                    if blk.dropout.p and blk.dropout.training:
                        return None
                    steps.append((block(blk), blk.conv1.dilation[0], False))
                steps.append((upsample(m), 1, True))
            else:
                return None
        return steps
