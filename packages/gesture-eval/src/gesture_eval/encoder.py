"""The FGD motion encoder: EMAGE's ``VAESKConv`` architecture and state-dict layout.

A skeleton-convolution autoencoder over SMPL-X edges (Deep-Motion-Editing style): each of the
4 encoder layers is a masked temporal conv (kernel 4, stride 2; a weight only connects edges
at graph distance <= 2) + GroupNorm(10), plus a masked 1x1 stride-2 shortcut, then mean
pooling of edge pairs along each kinematic chain and tanh. 55 edges (54 bones + a virtual
root edge) -> 35 -> 20 -> 20; channels 330 -> 210 -> 120 -> 240 -> 240, so 16 frames of 6D
rotations for 55 joints become one 240-d latent. The decoder (TM2T ``VQDecoderV3`` layout) is
kept so that EMAGE's ``AESKConv_240_100.bin`` loads strictly and so that you can train your
own encoder as an autoencoder (:func:`train_fgd_encoder`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file

from gesture_eval._checks import (
    Variant,
    check_finite,
    check_state_dict,
    check_variant,
    load_torch_file,
    to_numpy,
)
from gesture_eval._io import atomic_directory
from gesture_eval.errors import EvalError
from gesture_eval.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_rot6d_rows,
    matrix_to_rot6d_rows,
    rot6d_rows_to_matrix,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SMPLX_PARENTS",
    "FGDEncoder",
    "fgd_features",
    "fgd_features_batch",
    "train_fgd_encoder",
]

#: SMPL-X (2020) kinematic tree, first row of ``kintree_table`` (root = -1).
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip


# ---------------------------------------------------------------- skeleton topology
def _edges(parents: Sequence[int]) -> list[tuple[int, int]]:
    # Edge 0 links the root to a virtual joint, so the root orientation has an edge too.
    n = len(parents)
    return [(0, n)] + [(int(parents[i]), i) for i in range(1, n)]


def _edge_neighbours(edges: list[tuple[int, int]], dist: int) -> list[list[int]]:
    """For each edge, the (sorted) edges within ``dist`` hops (edges sharing a joint are 1 hop)."""
    n = len(edges)
    d = np.full((n, n), 10**6, dtype=np.int64)
    for i, a in enumerate(edges):
        for j, b in enumerate(edges):
            if i == j:
                d[i, j] = 0
            elif set(a) & set(b):
                d[i, j] = 1
    for k in range(n):  # Floyd-Warshall; n <= 55
        d = np.minimum(d, d[:, k : k + 1] + d[k : k + 1, :])
    return [list(np.flatnonzero(d[i] <= dist)) for i in range(n)]


def _chains(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Edge-index chains between branch points and end effectors, depth first from joint 0."""
    degree: dict[int, int] = {}
    for a, b in edges:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    chains: list[list[int]] = []

    def walk(joint: int, chain: list[int]) -> None:
        if degree.get(joint, 0) > 2 and joint != 0:
            chains.append(chain)
            chain = []
        if degree.get(joint, 0) == 1:
            chains.append(chain)
            return
        for idx, (a, b) in enumerate(edges):
            if a == joint:
                walk(b, [*chain, idx])

    walk(0, [])
    return chains


def _pooling(edges, last: bool) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Groups of edges averaged into one (pairs along each chain; whole chains when ``last``)."""
    groups: list[list[int]] = []
    new_edges: list[tuple[int, int]] = []
    for chain in _chains(edges):
        if last:
            groups.append(chain)
            continue
        if len(chain) % 2 == 1:  # odd chains keep their first edge alone
            groups.append([chain[0]])
            new_edges.append(edges[chain[0]])
            chain = chain[1:]
        for i in range(0, len(chain), 2):
            groups.append([chain[i], chain[i + 1]])
            new_edges.append((edges[chain[i]][0], edges[chain[i + 1]][1]))
    return groups, new_edges


# ---------------------------------------------------------------- modules
class _SkeletonConv(nn.Module):
    """Conv1d whose weight is masked so each output edge only sees its neighbour edges."""

    def __init__(self, neighbours, in_ch, out_ch, kernel_size, num_edges, stride, padding):
        super().__init__()
        if in_ch % num_edges or out_ch % num_edges:
            raise ValueError(f"channels {in_ch}/{out_ch} not divisible by {num_edges} edges")
        ipe, ope = in_ch // num_edges, out_ch // num_edges
        self.stride, self.padding = stride, padding
        mask = torch.zeros(out_ch, in_ch, kernel_size)
        for i, nb in enumerate(neighbours):
            cols = [k * ipe + c for k in nb for c in range(ipe)]
            mask[i * ope : (i + 1) * ope, cols] = 1
        fan_in = max(1, int(mask[0].sum().item()))
        bound = 1 / math.sqrt(fan_in)
        # Frozen parameter, not a buffer: EMAGE's state dict lists "mask" before weight/bias.
        self.mask = nn.Parameter(mask, requires_grad=False)
        self.weight = nn.Parameter(
            torch.empty(out_ch, in_ch, kernel_size).uniform_(-bound, bound) * mask
        )
        self.bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.padding, self.padding), mode="constant")
        return F.conv1d(x, self.weight * self.mask, self.bias, self.stride)


class _SkeletonPool(nn.Module):
    def __init__(self, groups: list[list[int]], num_edges: int, channels_per_edge: int):
        super().__init__()
        c = channels_per_edge
        w = torch.zeros(len(groups) * c, num_edges * c)
        for i, group in enumerate(groups):
            for e in group:
                w[torch.arange(i * c, (i + 1) * c), torch.arange(e * c, (e + 1) * c)] = 1.0 / len(
                    group
                )
        self.weight = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight, x)


class _SkeletonResidual(nn.Module):
    def __init__(self, edges, neighbours, in_ch, out_ch, last: bool):
        super().__init__()
        n = len(edges)
        self.residual = nn.Sequential(
            _SkeletonConv(neighbours, in_ch, out_ch, 4, n, stride=2, padding=1),
            nn.GroupNorm(10, out_ch),
        )
        self.shortcut = _SkeletonConv(neighbours, in_ch, out_ch, 1, n, stride=2, padding=0)
        groups, _ = _pooling(edges, last)
        common: list[nn.Module] = []
        if len(groups) != n:  # EMAGE only inserts the pool when it changes the edge count
            common.append(_SkeletonPool(groups, n, out_ch // n))
        common.append(nn.Tanh())
        self.common = nn.Sequential(*common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.common(self.residual(x) + self.shortcut(x))


class _LocalEncoder(nn.Module):
    def __init__(self, parents, num_layers: int, grow: Sequence[int], channel_base: int = 6):
        super().__init__()
        edges = _edges(parents)
        base = [channel_base]
        for g in grow[:num_layers]:
            base.append(base[-1] * g)
        self.layers = nn.ModuleList()
        self.edge_counts = [len(edges)]
        for i in range(num_layers):
            last = i == num_layers - 1
            neighbours = _edge_neighbours(edges, 2)
            in_ch, out_ch = base[i] * len(edges), base[i + 1] * len(edges)
            self.layers.append(
                nn.Sequential(_SkeletonResidual(edges, neighbours, in_ch, out_ch, last))
            )
            groups, new_edges = _pooling(edges, last)
            self.edge_counts.append(len(groups))
            edges = new_edges
        self.out_channels = base[-1] * self.edge_counts[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 2, 1)
        for layer in self.layers:
            h = layer(h)
        return h.permute(0, 2, 1)


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv1d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv1d(ch, ch, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + x


class _Decoder(nn.Module):
    def __init__(self, latent_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        channels = [latent_dim] * num_layers + [output_dim]
        layers: list[nn.Module] = [_ResBlock(latent_dim), _ResBlock(latent_dim)]
        for i in range(num_layers):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv1d(channels[i], channels[i + 1], 3, 1, 1),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv1d(output_dim, output_dim, 3, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.permute(0, 2, 1)).permute(0, 2, 1)


class FGDEncoder(nn.Module, PyTorchModelHubMixin):
    """FGD encoder with EMAGE's ``VAESKConv`` layout.

    ``encode(rot6d (B, T, 6*J)) -> (B, T // 2**num_layers, latent_dim)``; ``forward`` returns
    the reconstruction ``(B, T, 6*J)`` (for training). ``FGDEncoder()`` is EMAGE's size
    (55 SMPL-X joints, 240-d latent per 16 frames); ``tiny()`` is a CPU-test size.
    """

    def __init__(
        self,
        *,
        parents: Sequence[int] = SMPLX_PARENTS,
        latent_dim: int = 240,
        num_layers: int = 4,
        grow: Sequence[int] = (1, 1, 2, 1),
    ):
        super().__init__()
        self.parents = [int(p) for p in parents]
        self.input_dim = 6 * len(self.parents)
        self.num_layers = num_layers
        # Registered first, like EMAGE (its variational=False leaves them unused).
        self.fc_mu = nn.Linear(latent_dim, latent_dim)
        self.fc_logvar = nn.Linear(latent_dim, latent_dim)
        self.encoder = _LocalEncoder(self.parents, num_layers, grow)
        if self.encoder.out_channels != latent_dim:
            raise ValueError(
                f"latent_dim={latent_dim}, but the skeleton gives {self.encoder.out_channels}"
            )
        self.latent_dim = latent_dim
        self.decoder = _Decoder(latent_dim, self.input_dim, num_layers)

    @classmethod
    def emage(cls) -> FGDEncoder:
        return cls()

    @classmethod
    def tiny(cls) -> FGDEncoder:
        """Small random encoder on EMAGE's skeleton (2 layers: 55 -> 35 -> 20 edges, 120-d)."""
        return cls(latent_dim=120, num_layers=2, grow=(1, 1))

    @property
    def frames_per_latent(self) -> int:
        return 2**self.num_layers

    def encode(self, rot6d: torch.Tensor) -> torch.Tensor:
        """``(B, T, 6*J)`` 6D rotations (EMAGE row convention) -> ``(B, T // 16, latent_dim)``."""
        if rot6d.ndim != 3 or rot6d.shape[-1] != self.input_dim:
            raise EvalError(f"rot6d must be (B, T, {self.input_dim}), found {tuple(rot6d.shape)}")
        if rot6d.shape[1] < self.frames_per_latent:
            raise EvalError(
                f"rot6d needs at least {self.frames_per_latent} frames, found {rot6d.shape[1]}"
            )
        if not bool(torch.isfinite(rot6d).all()):
            raise EvalError("rot6d contains NaN/inf values")
        return self.encoder(rot6d)

    def forward(self, rot6d: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(rot6d))

    @classmethod
    def from_emage_checkpoint(cls, path: str | os.PathLike, *, map_location="cpu") -> FGDEncoder:
        """Load EMAGE's ``AESKConv_240_100.bin`` (torch dict, weights under ``"model_state"``,
        keys optionally prefixed ``module.``), with ``weights_only=True``."""
        path = Path(path)
        blob = load_torch_file(path, "FGD encoder checkpoint")
        if not isinstance(blob, dict) or "model_state" not in blob:
            found = sorted(map(str, blob))[:5] if isinstance(blob, dict) else type(blob).__name__
            raise EvalError(f"{path}: expected a dict with key 'model_state', found {found}")
        raw = check_state_dict(blob["model_state"], path, "'model_state'")
        state = {k.removeprefix("module."): v.to(map_location) for k, v in raw.items()}
        return _load_checked(cls(), state, path)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write ``config.json`` + ``model.safetensors``, swapped in whole (no stale files)."""
        atomic_directory(
            save_directory, lambda tmp: PyTorchModelHubMixin.save_pretrained(self, tmp, **kwargs)
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, map_location="cpu"
    ) -> FGDEncoder:
        """Load a local folder written by :meth:`save_pretrained`, strictly.

        Only local folders: a missing path raises :class:`EvalError` at once instead of being
        taken for a Hub repository id (nothing is downloaded). Every key of the model must be
        in ``model.safetensors`` with its shape, so a wrong folder never yields an FGD."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise EvalError(f"{path}: FGD encoder folder not found (local folders only)")
        config_file, weights = path / "config.json", path / "model.safetensors"
        for f in (config_file, weights):
            if not f.is_file():
                raise EvalError(f"{f}: file not found (expected a save_pretrained folder)")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            model = cls(**config)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise EvalError(f"{config_file}: not an FGDEncoder config ({e})") from None
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise EvalError(f"{weights}: unreadable ({e})") from None
        return _load_checked(model, check_state_dict(state, weights, "weights"), weights)


def _load_checked(model: FGDEncoder, state: dict, path: Path) -> FGDEncoder:
    """Load ``state`` into ``model`` only if every key and shape matches; otherwise raise an
    :class:`EvalError` naming ``path``, how many keys matched and which are missing."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        matched = len(own) - len(missing)
        raise EvalError(
            f"{path}: not the VAESKConv layout of this encoder; {matched} of {len(own)} keys "
            f"match, missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise EvalError(
                f"{path}: key {k!r} expected shape {tuple(own[k].shape)}, found {tuple(v.shape)}"
            )
    model.load_state_dict(state)
    return model.eval()


def _to_rot6d(axis_angle, encoder: FGDEncoder, variant: str, name: str) -> torch.Tensor:
    """Validate, crop to a multiple of 32 frames and convert to EMAGE 6D ``(T', 6*J)``."""
    aa = to_numpy(axis_angle, name)
    j3 = 3 * len(encoder.parents)
    if aa.ndim != 2 or aa.shape[1] != j3:
        raise EvalError(f"{name} must be (T, {j3}), found shape {aa.shape}")
    check_finite(aa, name)
    t = aa.shape[0] - aa.shape[0] % 32
    if t == 0:
        raise EvalError(f"{name} has {aa.shape[0]} frames; FGD needs at least 32")
    x = torch.from_numpy(np.ascontiguousarray(aa[:t])).to(torch.float32).reshape(t, -1, 3)
    if variant == "evaltools":
        rot6d = axis_angle_to_rot6d_rows(x)
    else:
        m = axis_angle_to_matrix(x)
        rot6d = matrix_to_rot6d_rows(rot6d_rows_to_matrix(matrix_to_rot6d_rows(m)))
    return rot6d.reshape(t, -1)


def fgd_features_batch(
    sequences: Sequence, encoder: FGDEncoder, *, variant: Variant = "evaltools", max_batch: int = 16
) -> list[np.ndarray]:
    """:func:`fgd_features` of many sequences; equal (cropped) lengths are encoded as one batch.

    GroupNorm normalises over the whole time axis, so sequences are never padded or split
    (that would change every latent); batching equal lengths is exact and ~4x faster on CPU.
    """
    check_variant(variant)
    param = next(encoder.parameters())
    rot = [_to_rot6d(s, encoder, variant, f"axis_angle[{i}]") for i, s in enumerate(sequences)]
    out: list[np.ndarray | None] = [None] * len(rot)
    by_len: dict[int, list[int]] = {}
    for i, r in enumerate(rot):
        by_len.setdefault(r.shape[0], []).append(i)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        for idx in by_len.values():
            for s in range(0, len(idx), max_batch):
                chunk = idx[s : s + max_batch]
                x = torch.stack([rot[i] for i in chunk]).to(param.device, param.dtype)
                z = encoder.encode(x).float().cpu().numpy()
                for k, i in enumerate(chunk):
                    out[i] = z[k]
    encoder.train(was_training)
    return out  # type: ignore[return-value]


def fgd_features(axis_angle, encoder: FGDEncoder, *, variant: Variant = "evaltools") -> np.ndarray:
    """Latents ``(T' // 16, latent_dim)`` float32 of one sequence of axis-angle poses ``(T, 3*J)``.

    The sequence is cropped to a multiple of 32 frames (``T'``) as both references do, and
    encoded whole (GroupNorm statistics span the sequence). ``evaltools`` encodes the
    axis-angle -> 6D conversion; ``cvpr24`` additionally round-trips 6D -> matrix -> 6D (the
    CVPR'24 trainer normalises network outputs this way).
    """
    check_variant(variant)
    if isinstance(axis_angle, torch.Tensor | np.ndarray) and axis_angle.ndim != 2:
        raise EvalError(f"axis_angle must be (T, {3 * len(encoder.parents)}), found shape "
                        f"{tuple(axis_angle.shape)}")  # fmt: skip
    return fgd_features_batch([axis_angle], encoder, variant=variant)[0]


def train_fgd_encoder(
    motions: Sequence,
    *,
    encoder: FGDEncoder | None = None,
    steps: int = 1000,
    window: int = 64,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FGDEncoder:
    """Train an FGD encoder as an autoencoder on any motion set (recipe-independent).

    ``motions``: list of axis-angle sequences ``(T_i, 3*J)`` (J = len(parents)). Random
    ``window``-frame crops are converted to EMAGE 6D and reconstructed with an L1 loss plus
    a velocity L1 loss. Save the result with ``save_pretrained`` and load it with
    ``FGDEncoder.from_pretrained``; report which encoder produced a number.
    """
    if not motions:
        raise EvalError("train_fgd_encoder needs at least one motion sequence")
    if window % 32:
        raise EvalError(f"window must be a multiple of 32 frames, found {window}")
    model = (encoder or FGDEncoder()).to(device).train()
    seqs = []
    for i, m in enumerate(motions):
        arr = to_numpy(m, f"motions[{i}]")
        if arr.ndim != 2 or arr.shape[1] != model.input_dim // 2 or arr.shape[0] < window:
            raise EvalError(
                f"motions[{i}] must be (T >= {window}, {model.input_dim // 2}), found {arr.shape}"
            )
        check_finite(arr, f"motions[{i}]")
        seqs.append(torch.from_numpy(arr.astype(np.float32)))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        idx = torch.randint(len(seqs), (batch_size,), generator=gen)
        crops = []
        for k in idx.tolist():
            s = seqs[k]
            start = int(torch.randint(s.shape[0] - window + 1, (1,), generator=gen))
            crops.append(s[start : start + window])
        x = axis_angle_to_rot6d_rows(torch.stack(crops).reshape(batch_size, window, -1, 3))
        x = x.reshape(batch_size, window, -1).to(device)
        rec = model(x)
        loss = F.l1_loss(rec, x) + F.l1_loss(rec[:, 1:] - rec[:, :-1], x[:, 1:] - x[:, :-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            logger.info("fgd encoder step %d loss %.5f", step, loss.item())
    return model.eval()
