"""Training data for the recipes: the synthetic corpus (default) or a BEAT2 folder, as windows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from gesture_apps.data.codec import MIN_STD
from gesture_apps.errors import ConfigError
from gesture_apps.runtime.config import BACKFILL

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """The ``data:`` section. ``source`` is ``synthetic``, ``beat2:PATH`` or ``humanml3d``
    (with ``root``; ``humanml3d:PATH`` sets it): a HumanML3D-layout folder such as KTubeUM."""

    source: str = "synthetic"
    # the HumanML3D-layout folder of source humanml3d (runs saved before it resume as before)
    root: str | None = field(default=None, metadata={BACKFILL: True})
    # synthetic corpus
    num_clips: int = 8
    seconds: float = 10.0
    seed: int = 0
    languages: tuple[str, ...] = ("en",)
    # BEAT2
    split: str | None = "train"
    speakers: tuple[int, ...] | None = None
    mean_std_dir: str | None = None  # BEAT2's beatx_2_330_{mean,std}.npy; else fitted
    # fitted stds are clamped to at least this: a channel that barely moves (idle sway of the
    # spine) would otherwise be blown up to unit variance and eat the tokenizer's capacity
    min_std: float = 1e-4
    # windows
    pose_length: int = 64
    stride: int = 20
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        kind, _, path = self.source.partition(":")
        if kind == "humanml3d" and path:
            self.source, self.root = "humanml3d", path
        if kind not in ("synthetic", "beat2", "humanml3d") or (kind == "beat2" and not path):
            raise ValueError(
                "source: expected 'synthetic' or 'beat2:PATH' (or 'humanml3d' with data.root), "
                f"found {self.source!r}"
            )
        if self.source == "humanml3d" and not self.root:
            raise ValueError("root: source 'humanml3d' needs data.root (the dataset folder)")
        if self.pose_length < 2 or self.stride < 1 or self.num_clips < 1 or self.seconds <= 0:
            raise ValueError("pose_length >= 2, stride >= 1, num_clips >= 1, seconds > 0 required")
        if not self.min_std >= MIN_STD:
            raise ValueError(f"min_std must be at least {MIN_STD}, found {self.min_std}")


def load_windows(cfg: DataConfig):
    """``DataConfig`` -> (gesture_data ``WindowDataset`` un-normalised, vocabulary).

    Raises ``gesture_data.DataError`` for unreadable data."""
    from gesture_data.datasets.windows import beat2_windows, synthetic_windows

    if cfg.source == "humanml3d":
        # 263-d HumanML3D features have no BEAT2 body parts: only `model.kind: vqvae` reads them
        raise ConfigError(
            f"data.source: 'humanml3d' ({cfg.root}) holds 263-d HumanML3D features, which this "
            "recipe cannot read (the tokenizer's model.kind=vqvae and `train t2m-gpt` can)"
        )
    if cfg.source == "synthetic":
        return synthetic_windows(
            cfg.num_clips,
            cfg.seconds,
            cfg.seed,
            languages=cfg.languages,
            pose_length=cfg.pose_length,
            stride=cfg.stride,
            cache_dir=cfg.cache_dir,
        )
    root = Path(cfg.source.split(":", 1)[1]).expanduser()
    ds, vocab = beat2_windows(
        root,
        split=cfg.split,
        speakers=cfg.speakers,
        pose_length=cfg.pose_length,
        stride=cfg.stride,
        cache_dir=cfg.cache_dir,
    )
    if len(ds) == 0:
        raise ConfigError(f"{root}: no {cfg.pose_length}-frame windows in split {cfg.split!r}")
    return ds, vocab


def fit_normalizer(ds, parts: list[str], cfg: DataConfig, max_windows: int = 512):
    """Per-part z-score statistics: BEAT2's published files when ``mean_std_dir`` is set,
    otherwise fitted on (at most ``max_windows`` evenly spaced) training windows."""
    from gesture_data import Normalizer

    if cfg.mean_std_dir:
        norm = Normalizer.from_beat2(cfg.mean_std_dir)
        return Normalizer({k: v for k, v in norm.stats.items() if k in parts})
    pick = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), max_windows)).round().astype(int))
    items = [ds[int(i)] for i in pick]
    stacked = {p: np.stack([it[p].numpy() for it in items]) for p in parts}
    return Normalizer.fit(stacked, min_std=cfg.min_std)


class PartWindows(Dataset):
    """Only the motion parts of a window dataset, normalised: item ``{part: (L, C)}``."""

    def __init__(self, windows, parts: list[str], normalizer=None):
        from gesture_data.datasets.windows import WindowDataset

        # rebuilt over the same prepared clips so the normaliser is applied per read; the
        # audio stream is swapped for an empty one so reads do not copy unused audio windows
        clips = [{**c, "audio": np.zeros((0, 1), np.float32)} for c in windows.clips]
        self.windows = WindowDataset(
            clips,
            windows.pose_length,
            windows.stride,
            layout=windows.layout,
            normalizer=normalizer,
            fps=windows.fps,
            sample_rate=windows.sample_rate,
        )
        self.parts = parts

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        item = self.windows[i]
        return {p: item[p] for p in self.parts}
