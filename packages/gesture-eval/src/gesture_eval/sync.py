"""Sync-C / Sync-D (lip-sync confidence and distance) with SyncNet, as ``syncnet_python``.

:class:`SyncNet` has the layout of ``SyncNetModel.S`` so ``syncnet_v2.model`` (a state dict
from the VGG site; not shipped) loads with :meth:`SyncNet.from_syncnet_checkpoint`.

:func:`sync_scores` follows ``SyncNetInstance.evaluate``: 25 fps 224x224 face crops (BGR,
0-255, as ``cv2.imread`` gives), 16 kHz audio -> ``python_speech_features.mfcc`` (13
cepstra at 100 Hz), 5-frame video windows vs 20-step MFCC windows, distances over offsets
``-vshift..vshift`` averaged over frames: offset = ``vshift - argmin``, **Sync-D** = the
minimum mean distance, **Sync-C** = ``median - min``. For 3D gestures, render the face
first. One convention (``variant="syncnet"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gesture_eval._checks import check_finite, check_state_dict, load_torch_file, to_numpy
from gesture_eval.errors import EvalError

__all__ = ["SyncNet", "SyncResult", "sync_scores"]


def _conv_bn(conv: nn.Module, bn: nn.Module, relu_inplace: bool = True) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=relu_inplace)]


class SyncNet(nn.Module):
    """SyncNet v2: audio tower on MFCC (N, 1, 13, 20), lip tower on (N, 3, 5, 224, 224)."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        c2, b2, c3, b3 = nn.Conv2d, nn.BatchNorm2d, nn.Conv3d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn(c2(1, 64, 3, 1, 1), b2(64)),
            nn.MaxPool2d(1, 1),
            *_conv_bn(c2(64, 192, 3, 1, 1), b2(192)),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn(c2(192, 384, 3, padding=1), b2(384)),
            *_conv_bn(c2(384, 256, 3, padding=1), b2(256)),
            *_conv_bn(c2(256, 256, 3, padding=1), b2(256)),
            nn.MaxPool2d(3, 2),
            *_conv_bn(c2(256, 512, (5, 4)), b2(512), relu_inplace=False),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netcnnlip = nn.Sequential(
            *_conv_bn(c3(3, 96, (5, 7, 7), (1, 2, 2)), b3(96)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), b3(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_bn(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn(c3(256, 512, (1, 6, 6)), b3(512)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0-255 windows -> (N, embed_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))

    @classmethod
    def from_syncnet_checkpoint(cls, path) -> SyncNet:
        """Load ``syncnet_v2.model`` (a state dict) with ``weights_only=True``."""
        path = Path(path)
        state = check_state_dict(load_torch_file(path, "SyncNet checkpoint"), path, "state dict")
        state = {k.removeprefix("__S__."): v for k, v in state.items()}
        model = cls()
        own = model.state_dict()
        if set(own) != set(state):
            raise EvalError(
                f"{path}: not the SyncNet layout; missing {sorted(set(own) - set(state))[:5]}, "
                f"unexpected {sorted(set(state) - set(own))[:5]}"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise EvalError(
                    f"{path}: {k!r} expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
                )
        model.load_state_dict(state)
        return model.eval()


class SyncResult(NamedTuple):
    offset: int
    confidence: float  # Sync-C
    min_distance: float  # Sync-D
    variant: str


def sync_scores(
    frames,
    audio,
    model: SyncNet,
    *,
    sample_rate: int = 16000,
    vshift: int = 15,
    batch_size: int = 20,
) -> SyncResult:
    """Sync-C / Sync-D of face crops ``frames`` (T, 224, 224, 3) at 25 fps and ``audio`` (N,).

    Float audio in [-1, 1] is scaled to the int16 range first (the reference reads 16-bit PCM).
    """
    import python_speech_features

    if sample_rate != 16000:
        raise EvalError(
            f"audio must be 16 kHz (SyncNet's MFCC rate), found sample_rate={sample_rate}"
        )
    im = to_numpy(frames, "frames")
    if im.ndim != 4 or im.shape[1:] != (224, 224, 3):
        raise EvalError(f"frames must be (T, 224, 224, 3) BGR face crops, found shape {im.shape}")
    check_finite(im, "frames")
    wav = np.asarray(audio)
    if wav.ndim != 1 or wav.size == 0:
        raise EvalError(f"audio must be mono (N,), found shape {wav.shape}")
    if wav.dtype.kind == "f":
        check_finite(wav, "audio")
        wav = np.round(np.clip(wav, -1, 1) * 32767).astype(np.int16)
    mfcc = python_speech_features.mfcc(wav, sample_rate).T  # (13, frames)
    # device and dtype follow the network (float64 gives the exact scores the float32 ones round)
    param = next(model.parameters())
    cct = torch.from_numpy(mfcc.astype(float)).to(param.device, param.dtype)[None, None]
    imtv = torch.from_numpy(np.transpose(im, (3, 0, 1, 2)).astype(float))
    imtv = imtv.to(param.device, param.dtype)[None]
    lastframe = min(im.shape[0], math.floor(len(wav) / 640)) - 5
    if lastframe < 1:
        raise EvalError(f"need more than 5 frames of video and audio, found {im.shape[0]} frames")
    model.eval()
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            idx = range(i, min(lastframe, i + batch_size))
            im_feat.append(model.forward_lip(torch.cat([imtv[:, :, v : v + 5] for v in idx])))
            cc_feat.append(
                model.forward_aud(torch.cat([cct[..., 4 * v : 4 * v + 20] for v in idx]))
            )
    v_feat, a_feat = torch.cat(im_feat), torch.cat(cc_feat)
    win = 2 * vshift + 1
    a_pad = F.pad(a_feat, (0, 0, vshift, vshift))
    dists = [
        F.pairwise_distance(v_feat[[i]].repeat(win, 1), a_pad[i : i + win])
        for i in range(len(v_feat))
    ]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return SyncResult(
        offset=int(vshift - minidx),
        confidence=float(torch.median(mdist) - minval),
        min_distance=float(minval),
        variant="syncnet",
    )
