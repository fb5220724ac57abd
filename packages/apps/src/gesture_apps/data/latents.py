"""Training windows as frozen-tokenizer latents."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gesture_apps.data.windows import PartWindows
from motion_tokenizers import MultiPartTokenizer


class LatentWindows(Dataset):
    """Item ``{"latents": (N, D), "audio": (L_a, 2), "words": (L,)}`` per training window."""

    def __init__(self, windows, latents: Tensor):
        self.windows, self.latents = windows, latents
        spf = windows.sample_rate / windows.fps
        self.spf, self.la = spf, round(windows.pose_length * spf)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        ci, s = (int(v) for v in self.windows.index[i])
        c = self.windows.clips[ci]
        a = c["audio"]
        a0 = round(s * self.spf)
        aw = np.zeros((self.la, a.shape[1]), np.float32)
        seg = np.asarray(a[a0 : a0 + self.la])
        aw[: len(seg)] = seg
        words = np.array(c["words"][s : s + self.windows.pose_length], np.int64)
        return {
            "latents": self.latents[i],
            "audio": torch.from_numpy(aw),
            "words": torch.from_numpy(words),
        }


@torch.no_grad()
def encode_windows(tok: MultiPartTokenizer, parts_ds: PartWindows, batch: int = 64) -> Tensor:
    from gesture_data.datasets.windows import collate

    names = tok.part_names
    out = []
    for s in range(0, len(parts_ds), batch):
        items = collate([parts_ds[i] for i in range(s, min(s + batch, len(parts_ds)))])
        out.append(tok.encode_continuous({n: items[n] for n in names}))
    return torch.cat(out)
