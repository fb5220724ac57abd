"""Windowed torch Dataset over prepared per-clip arrays, and its collate function.

Prepared streams per clip (all frame-aligned at ``fps`` except ``audio``):
``rot6d (T, J*6)``, ``trans_v (T, 3)``, ``face (T, 100)``, ``words (T,)`` int64, and
``audio (N, C)`` audio features at the audio sample rate (e.g. onset+amplitude, C = 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..layout import BodyPartLayout, Normalizer, trans_to_velocity
from ..rotations import axis_angle_to_6d
from .beat2 import Beat2Clip, Vocabulary, frame_word_indices, window_starts


def prepare_clip(
    clip: Beat2Clip,
    vocab: Vocabulary | None = None,
    audio_rep: str = "onset+amplitude",
) -> dict[str, np.ndarray]:
    """Beat2Clip -> prepared streams. Motion and audio are trimmed to their common length
    so that frame i always has audio ``[i*sr/fps, (i+1)*sr/fps)``."""
    from ..features import audio as fa

    sr, fps = clip.sample_rate, clip.fps
    t = min(clip.num_frames, int(np.floor(clip.audio.size / sr * fps)))
    n = round(t * sr / fps)
    audio = clip.audio[:n]
    out = {
        "rot6d": axis_angle_to_6d(torch.from_numpy(clip.poses[:t]).double()).float().numpy(),
        "trans_v": trans_to_velocity(torch.from_numpy(clip.trans[:t])).numpy(),
        "face": np.asarray(clip.expressions[:t], np.float32),
        "words": frame_word_indices(clip.words, t, fps, vocab or Vocabulary.build([clip])),
    }
    if audio_rep == "onset+amplitude":
        out["audio"] = fa.onset_amplitude(audio, sr)
    elif audio_rep == "mel":
        out["audio"] = fa.log_mel(audio, sr, fps, n_frames=t)
    elif audio_rep == "mfcc":
        out["audio"] = fa.mfcc(audio, sr, fps, n_frames=t)
    elif audio_rep == "wave":
        out["audio"] = audio[:, None].astype(np.float32)
    else:
        raise ValueError(f"unknown audio_rep {audio_rep!r}")
    return out


class WindowDataset(Dataset):
    """Fixed-length windows over prepared clips.

    Item: ``{"upper": (L,78), "hands": (L,180), "lower": (L,57), "face": (L,100),
    "audio": (L_a, C), "words": (L,), "clip": int, "start": int}`` with ``L = pose_length``;
    ``L_a = round(L * sample_rate / fps)`` for audio at the sample rate (onset+amplitude,
    wave) or ``L`` for frame-rate features (mel, mfcc). Parts are normalised when a
    :class:`Normalizer` is given."""

    def __init__(
        self,
        clips: Sequence[dict[str, np.ndarray]],
        pose_length: int = 64,
        stride: int = 20,
        *,
        layout: BodyPartLayout | None = None,
        normalizer: Normalizer | None = None,
        fps: float = 30.0,
        sample_rate: int = 16000,
    ):
        self.clips = clips
        self.pose_length, self.stride = pose_length, stride
        self.layout = layout or BodyPartLayout.beat2()
        self.normalizer = normalizer
        self.fps, self.sample_rate = fps, sample_rate
        idx = []
        for ci, c in enumerate(clips):
            for s in window_starts(len(c["rot6d"]), pose_length, stride):
                idx.append((ci, int(s)))
        self.index = np.asarray(idx, np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def _plan(self):
        """Per part: rotation channel indices, extra stream name, and float32 mean/std
        (numpy only, so a window read does no small torch ops)."""
        plan = []
        stats = self.normalizer.stats if self.normalizer is not None else {}
        for name, spec in self.layout.parts.items():
            ch = self.layout.channels(name) if spec.joints else None
            ms = stats.get(name)
            if ms is not None:
                ms = (
                    np.asarray(ms[0], np.float32),
                    np.asarray(ms[1], np.float32) + np.float32(self.normalizer.eps),
                )
            plan.append((name, ch, spec.extra, ms))
        return plan

    def __getitem__(self, i: int) -> dict:
        ci, s = (int(v) for v in self.index[i])
        c = self.clips[ci]
        e = s + self.pose_length
        if not hasattr(self, "_parts_plan"):
            self._parts_plan = self._plan()
        rot = np.asarray(c["rot6d"][s:e])
        out = {}
        for name, ch, extra, ms in self._parts_plan:
            pieces = [] if ch is None else [rot[:, ch]]
            if extra is not None:
                if extra not in c:
                    continue
                pieces.append(np.asarray(c[extra][s:e], np.float32))
            x = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
            if ms is not None:
                x = (x - ms[0]) / ms[1]
            if not (x.flags.writeable and x.flags.c_contiguous and x.dtype == np.float32):
                x = np.array(x, np.float32)  # own copy: never hand out a view of the mmap
            out[name] = torch.from_numpy(x)
        a = c["audio"]
        if len(a) > len(c["rot6d"]) + 1:  # sample-rate features
            aw = audio_window(a, s, self.pose_length, fps=self.fps, sample_rate=self.sample_rate)
        else:
            aw = np.array(a[s:e], np.float32)
        out["audio"] = torch.from_numpy(aw)
        out["words"] = torch.from_numpy(np.array(c["words"][s:e]))
        out["clip"] = ci
        out["start"] = s
        return out


# ----- window arithmetic shared by training, generation and streaming ------------------------


def audio_window(
    audio: np.ndarray,
    start: int,
    num_frames: int,
    *,
    fps: float = 30.0,
    sample_rate: int = 16000,
    samples_per_frame: float | None = None,
) -> np.ndarray:
    """The audio under motion frames ``[start, start + num_frames)``.

    Args:
        audio: ``(N, C)`` features at the audio sample rate (or a memory-mapped view).
        start: first motion frame.
        num_frames: window length in motion frames.
        samples_per_frame: overrides ``sample_rate / fps`` (GestureLSM's test loop slices with
            the integer ``16000 // 30 = 533``, drifting ~1 ms per second from the motion).

    Returns:
        ``(round(num_frames * spf), C)`` float32 with ``spf = sample_rate / fps``, a fresh
        array starting at sample ``round(start * spf)``, zero-padded past the end of ``audio``
        (so the last window of a clip has the length of every other).
    """
    spf = sample_rate / fps if samples_per_frame is None else samples_per_frame
    a0, la = round(start * spf), round(num_frames * spf)
    out = np.zeros((la, audio.shape[1]), np.float32)
    seg = np.asarray(audio[a0 : a0 + la])
    out[: len(seg)] = seg
    return out


class WindowPlan(NamedTuple):
    """How overlapping windows tile a sequence (see :func:`window_plan`)."""

    windows: int  # number of windows
    hop: int  # latent frames between window starts
    latent_frames: int  # latent frames the windows cover: n + (windows - 1) * hop

    def starts(self, factor: int) -> list[int]:
        """Each window's first *motion* frame (``i * hop * factor``)."""
        return [i * self.hop * factor for i in range(self.windows)]


def window_plan(num_frames: int, pose_length: int, factor: int, seed_frames: int) -> WindowPlan:
    """Tile ``num_frames`` motion frames with windows of ``pose_length`` frames whose first
    ``seed_frames`` latent frames overlap the previous window (GestureLSM's sliding windows).

    A window holds ``n = pose_length // factor`` latent frames (``factor``: the tokenizer's
    temporal downsampling); window ``i`` covers latent frames ``[i * hop, i * hop + n)`` with
    ``hop = n - seed_frames``. There are enough windows to reach the last frame: the tail is
    padded, never dropped, so ``latent_frames * factor >= num_frames``.
    """
    n = pose_length // factor
    hop = n - seed_frames
    if n < 1 or hop < 1:
        raise ValueError(
            f"window_plan: pose_length {pose_length} // factor {factor} must exceed "
            f"seed_frames {seed_frames}"
        )
    need = math.ceil(num_frames / factor)
    windows = 1 if need <= n else 1 + math.ceil((need - n) / hop)
    return WindowPlan(windows, hop, n + (windows - 1) * hop)


def stitch_windows(pieces: Sequence[torch.Tensor], seed_frames: int, dim: int = 1) -> torch.Tensor:
    """Join per-window outputs ``(B, n, D)`` of a :func:`window_plan` into ``(B, latent_frames,
    D)``: the first window whole, every later one without its first ``seed_frames`` frames
    (those repeat the previous window's last frames, which seeded it)."""
    if not pieces:
        raise ValueError("stitch_windows: no windows")
    return torch.cat(
        [
            p if i == 0 else p.narrow(dim, seed_frames, p.shape[dim] - seed_frames)
            for i, p in enumerate(pieces)
        ],
        dim=dim,
    )


def collate(items: list[dict]) -> dict:
    """Stack a list of window items: tensors become ``(B, ...)``, ints become ``(B,)``.

    CPU tensors are stacked with numpy: torch's threaded stack stalls on busy machines
    (measured 2-500 ms vs a steady 11 ms for 64 audio windows on 2 shared cores)."""
    out = {}
    for k in items[0]:
        v = [it[k] for it in items]
        if isinstance(v[0], torch.Tensor):
            if all(t.device.type == "cpu" and not t.requires_grad for t in v):
                out[k] = torch.from_numpy(np.stack([t.numpy() for t in v]))
            else:
                out[k] = torch.stack(v)
        else:
            out[k] = torch.as_tensor(v)
    return out


def beat2_windows(
    root,
    *,
    split: str | None = None,
    speakers: Sequence[int] | None = None,
    pose_length: int = 64,
    stride: int = 20,
    audio_rep: str = "onset+amplitude",
    normalizer: Normalizer | None = None,
    cache_dir=None,
) -> tuple[WindowDataset, Vocabulary]:
    """BEAT2 folder -> (:class:`WindowDataset`, vocabulary over the selected clips).

    With ``cache_dir`` the prepared streams are stored once as memory-mapped arrays (see
    :mod:`gesture_data.cache`) and later calls only map them."""
    from pathlib import Path

    from ..cache import cached
    from .beat2 import find_root, list_clips, load_clip
    from .textgrid import read_textgrid

    root = find_root(root)
    ids = list_clips(root, split=split, speakers=speakers)
    words = set()
    for cid in ids:
        words.update(w for _, _, w in read_textgrid(root / "textgrid" / f"{cid}.TextGrid")["words"])
    vocab = Vocabulary(sorted(words))

    def produce():
        for cid in ids:
            yield cid, prepare_clip(load_clip(root, cid), vocab, audio_rep)

    if cache_dir is None:
        clips = [arr for _, arr in produce()]
    else:
        sources = [
            Path(root) / sub / f"{cid}{ext}"
            for cid in ids
            for sub, ext in (
                ("smplxflame_30", ".npz"),
                ("wave16k", ".wav"),
                ("textgrid", ".TextGrid"),
            )
        ]
        settings = {"ids": ids, "audio_rep": audio_rep, "vocab": vocab.itos}
        store = cached(cache_dir, "beat2", sources, settings, produce)
        clips = [store.clip(i) for i in range(len(store.clips))]
    ds = WindowDataset(clips, pose_length, stride, normalizer=normalizer)
    return ds, vocab


def clip_windows(
    clips: Sequence[Beat2Clip],
    *,
    pose_length: int = 64,
    stride: int = 20,
    audio_rep: str = "onset+amplitude",
    normalizer: Normalizer | None = None,
    vocab: Vocabulary | None = None,
) -> tuple[WindowDataset, Vocabulary]:
    """In-memory clips (e.g. ``synthetic.make_corpus(...)``) -> (:class:`WindowDataset`,
    vocabulary)."""
    vocab = vocab or Vocabulary.build(clips)
    prepared = [prepare_clip(c, vocab, audio_rep) for c in clips]
    sr = clips[0].sample_rate if clips else 16000
    fps = clips[0].fps if clips else 30.0
    ds = WindowDataset(
        prepared, pose_length, stride, normalizer=normalizer, fps=fps, sample_rate=sr
    )
    return ds, vocab


def synthetic_windows(
    num_clips: int = 8,
    seconds: float = 10.0,
    seed: int = 0,
    *,
    languages: Sequence[str] = ("en",),
    pose_length: int = 64,
    stride: int = 20,
    audio_rep: str = "onset+amplitude",
    normalizer: Normalizer | None = None,
    cache_dir=None,
) -> tuple[WindowDataset, Vocabulary]:
    """The built-in default dataset as windows: ``synthetic.make_corpus`` prepared once and,
    with ``cache_dir``, stored as memory-mapped arrays keyed by the settings."""
    from .. import __version__
    from ..cache import cached
    from . import synthetic
    from .synthetic import make_corpus

    def build():
        clips = make_corpus(num_clips, seconds, seed, tuple(languages))
        return clips, Vocabulary.build(clips)

    if cache_dir is None:
        clips, vocab = build()
        return clip_windows(
            clips,
            pose_length=pose_length,
            stride=stride,
            audio_rep=audio_rep,
            normalizer=normalizer,
            vocab=vocab,
        )
    settings = {
        "num_clips": num_clips,
        "seconds": seconds,
        "seed": seed,
        "languages": list(languages),
        "audio_rep": audio_rep,
        "version": __version__,
        # the clips' bytes are a function of the settings above only for one generator and
        # eSpeak NG build; a new one must not reuse arrays made by another
        "corpus": synthetic.corpus_version(),
    }
    made: dict = {}

    def produce():
        clips, vocab = build()
        made["vocab"] = vocab
        for c in clips:
            yield c.clip_id, prepare_clip(c, vocab, audio_rep)

    store = cached(cache_dir, "synthetic", [], settings, produce)
    vocab_path = store.path / "vocab.txt"
    if "vocab" in made and not vocab_path.exists():
        made["vocab"].save(vocab_path)
    # an entry built by an older run has no vocabulary file: rebuild the vocabulary
    vocab = Vocabulary.load(vocab_path) if vocab_path.exists() else build()[1]
    clips = [store.clip(i) for i in range(len(store.clips))]
    ds = WindowDataset(clips, pose_length, stride, normalizer=normalizer)
    return ds, vocab
