"""BEAT2 (SMPL-X + FLAME, 30 fps) loading, windows, word indices and a torch Dataset.

Layout (``root`` is ``beat_english_v2.0.0`` or any folder holding these)::

    smplxflame_30/<id>.npz   poses (T,165) f32, trans (T,3), expressions (T,100), betas, ...
    wave16k/<id>.wav         mono, IEEE float32 or 16-bit PCM (resampled to 16 kHz if not)
    textgrid/<id>.TextGrid   tiers "words" (+ "phones")
    train_test_split.csv     id,type  (or test.csv)

Clip ids are ``<speaker>_<name>_<...>``, e.g. ``2_scott_0_1_1`` (speaker 2).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import write_text_atomic
from ..errors import DataError
from ..features.audio import resample
from ..motion import BEAT2_KEYS, read_arrays
from .textgrid import read_textgrid

log = logging.getLogger(__name__)

NUM_SPEAKERS = 30
SAMPLE_RATE = 16000


@dataclass
class Beat2Clip:
    """One take. ``poses (T,165)`` axis-angle (55 joints), ``trans (T,3)`` metres Y-up,
    ``expressions (T,100)``, ``betas (300,)``, ``audio (N,)`` float32 at ``sample_rate``,
    ``words`` [(start_s, end_s, word)] without silences."""

    clip_id: str
    poses: np.ndarray
    trans: np.ndarray
    expressions: np.ndarray
    betas: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    words: list[tuple[float, float, str]]
    speaker: int = 0
    phones: list[tuple[float, float, str]] = field(default_factory=list)
    language: str = "en"
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def speaker_of(clip_id: str, path: Path | None = None) -> int:
    """Speaker number from a clip id (``2_scott_0_1_1`` -> 2)."""
    head = clip_id.split("_", 1)[0]
    if not head.isdigit() or not 1 <= int(head) <= NUM_SPEAKERS:
        raise DataError(
            path or clip_id,
            "unknown speaker id",
            key="speaker",
            expected=f"1..{NUM_SPEAKERS}",
            found=head,
        )
    return int(head)


def find_root(root: str | Path) -> Path:
    """Accept the BEAT2 download root or the ``beat_english_v2.0.0`` folder itself."""
    root = Path(root)
    for cand in (root, root / "beat_english_v2.0.0", root / "beat_v2.0.0" / "beat_english_v2.0.0"):
        if (cand / "smplxflame_30").is_dir():
            return cand
    raise DataError(root, "not a BEAT2 folder", key="smplxflame_30", expected="folder", found=None)


SPLITS = ("train", "val", "test", "additional")


def load_motion(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate a BEAT2 ``smplxflame_30`` npz (no pickles): ``poses``, ``trans``,
    ``expressions``, ``betas`` as float32 and ``fps``; all four arrays must be present (see
    :func:`gesture_data.motion.read_beat2_npz` for the checks and the error raised)."""
    out, fps = read_arrays(path, BEAT2_KEYS)
    out["fps"] = np.float32(fps)
    return out


def _riff_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None. libsndfile reads whatever samples a cut
    file still holds without a word, so a half-copied wav would load as shorter audio."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not RIFF (or too short to say): libsndfile decides
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = f.read(4), int.from_bytes(f.read(4), "little")
            if cid == b"data":
                # 0 and 0xFFFFFFFF are what streaming writers leave when they never seek back
                if n not in (0, 0xFFFFFFFF) and pos + 8 + n > size:
                    return f"data chunk declares {n} bytes, file holds {size - pos - 8}"
                return None
            pos += 8 + n + (n & 1)
    return None


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 ``(N,)`` at ``sample_rate``; float or PCM wavs, stereo is averaged."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise DataError(path, "audio file missing")
    if not path.is_file():
        raise DataError(path, "not a file", expected="wav file", found="folder")
    why = _riff_truncation(path)
    if why:
        raise DataError(path, f"truncated wav: {why}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise DataError(path, f"cannot read wav: {e}") from None
    if audio.shape[0] == 0:
        raise DataError(path, "empty audio", expected="N > 0", found=0)
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(audio).all():
        raise DataError(path, "non-finite audio samples")
    if sr != sample_rate:
        log.debug("resampling %s from %d to %d Hz", path, sr, sample_rate)
        audio = resample(audio, sr, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_clip(
    root: str | Path,
    clip_id: str,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_length_mismatch_s: float = 2.0,
    with_phones: bool = False,
) -> Beat2Clip:
    """Load one BEAT2 take (motion, audio, word alignment).

    Motion and audio lengths in BEAT2 differ by up to ~0.6 s (2_scott_0_1_1: 63.53 s vs
    64.10 s); a larger difference than ``max_length_mismatch_s`` means mismatched files and
    raises :class:`DataError`."""
    root = find_root(root)
    speaker = speaker_of(clip_id, root / "smplxflame_30" / f"{clip_id}.npz")
    m = load_motion(root / "smplxflame_30" / f"{clip_id}.npz")
    wav = root / "wave16k" / f"{clip_id}.wav"
    audio = load_audio(wav, sample_rate)
    tg_path = root / "textgrid" / f"{clip_id}.TextGrid"
    tiers = read_textgrid(tg_path, ("words", "phones") if with_phones else ("words",))
    fps = float(m["fps"])
    t_motion, t_audio = m["poses"].shape[0] / fps, audio.size / sample_rate
    if abs(t_motion - t_audio) > max_length_mismatch_s:
        raise DataError(
            wav,
            "motion and audio lengths differ",
            key="duration",
            expected=f"{t_motion:.2f} s (+-{max_length_mismatch_s})",
            found=f"{t_audio:.2f} s",
        )
    last = max((e for _, e, _ in tiers["words"]), default=0.0)
    if last > max(t_motion, t_audio) + max_length_mismatch_s:
        raise DataError(
            tg_path,
            "words end after the recording",
            key="words",
            expected=f"<= {max(t_motion, t_audio):.2f} s (+-{max_length_mismatch_s})",
            found=f"{last:.2f} s",
        )
    return Beat2Clip(
        clip_id=clip_id,
        poses=m["poses"],
        trans=m["trans"],
        expressions=m["expressions"],
        betas=m["betas"],
        fps=fps,
        audio=audio,
        sample_rate=sample_rate,
        words=tiers["words"],
        speaker=speaker,
        phones=tiers.get("phones", []),
    )


def read_split(root: str | Path) -> dict[str, str]:
    """``{clip_id: split}`` from ``train_test_split.csv`` (or ``test.csv``)."""
    root = find_root(root)
    for name in ("train_test_split.csv", "test.csv"):
        p = root / name
        if p.exists():
            break
    else:
        return {p.stem: "train" for p in sorted((root / "smplxflame_30").glob("*.npz"))}
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(p, f"not a UTF-8 csv: {e}") from None
    if not header or not {"id", "type"} <= set(header):
        raise DataError(p, "bad header", expected=["id", "type"], found=header)
    out: dict[str, str] = {}
    for line, r in enumerate(rows, 2):
        cid, typ = (r.get("id") or "").strip(), (r.get("type") or "").strip()
        if not cid or typ not in SPLITS:
            raise DataError(
                p, f"line {line}: bad row {cid!r}", key="type", expected=SPLITS, found=typ
            )
        if out.setdefault(cid, typ) != typ:
            raise DataError(
                p, f"line {line}: clip {cid!r} listed twice", key="id", found=(out[cid], typ)
            )
    return out


def list_clips(
    root: str | Path,
    split: str | None = None,
    speakers: Iterable[int] | None = None,
    available_only: bool = True,
) -> list[str]:
    """Clip ids filtered by split (``train``/``val``/``test``/``additional``) and speaker."""
    root = find_root(root)
    if split is not None and split not in SPLITS:
        raise DataError(root, "unknown split", key="split", expected=SPLITS, found=split)
    if speakers is not None:
        speakers = set(speakers)
        bad = [s for s in speakers if not 1 <= int(s) <= NUM_SPEAKERS]
        if bad:
            raise DataError(
                root,
                "unknown speaker ids",
                key="speakers",
                expected=f"1..{NUM_SPEAKERS}",
                found=bad,
            )
    out = []
    for cid, typ in read_split(root).items():
        if split is not None and typ != split:
            continue
        if speakers is not None and speaker_of(cid) not in speakers:
            continue
        if available_only and not (root / "smplxflame_30" / f"{cid}.npz").exists():
            continue
        out.append(cid)
    return sorted(out)


def window_starts(num_frames: int, pose_length: int, stride: int) -> np.ndarray:
    """Start frames of full windows ``[s, s + pose_length)`` every ``stride`` frames."""
    if num_frames < pose_length:
        return np.zeros(0, np.int64)
    return np.arange(0, num_frames - pose_length + 1, stride, dtype=np.int64)


class Vocabulary:
    """Word <-> index. 0 is padding/silence, 1 is unknown."""

    PAD, UNK = 0, 1

    def __init__(self, words: Sequence[str] = ()):
        self.itos = ["<pad>", "<unk>"]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        for w in words:
            self.add(w)

    def add(self, word: str) -> int:
        if word not in self.stoi:
            self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return self.stoi[word]

    @classmethod
    def build(cls, clips: Iterable[Beat2Clip]) -> Vocabulary:
        return cls(sorted({w for c in clips for _, _, w in c.words}))

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, word: str) -> int:
        return self.stoi.get(word, self.UNK)

    # ----- file format: ``vocab.txt`` --------------------------------------------------------
    # One word per line in index order, UTF-8, "\n"-terminated, starting with the two reserved
    # entries ``<pad>`` and ``<unk>``: exactly what the apps' exports have always written
    # (``"\n".join(itos) + "\n"``), so their files load unchanged, and a diff shows added words.

    def save(self, path: str | Path) -> Path:
        """Write ``vocab.txt`` (the format above) atomically; returns ``path``.

        Raises:
            ValueError: a word holds a line break (it would read back as two words).
        """
        bad = [w for w in self.itos if "\n" in w or "\r" in w]
        if bad:
            raise ValueError(f"vocabulary word {bad[0]!r} holds a line break")
        write_text_atomic(path, "\n".join(self.itos) + "\n", newline="\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a ``vocab.txt`` written by :meth:`save` (or by the apps' exports; CRLF line
        ends and a missing final newline are accepted).

        Raises:
            DataError: naming the file and line: missing or non-UTF-8 file, first entries not
                ``<pad>`` / ``<unk>``, a word listed twice.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "vocabulary file missing")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(path, f"not UTF-8 text ({e})") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the terminating newline
        itos = [w.removesuffix("\r") for w in lines]
        if itos[:2] != ["<pad>", "<unk>"]:
            raise DataError(
                path, "bad header", key="line 1-2", expected=["<pad>", "<unk>"], found=itos[:2]
            )
        vocab = cls()
        for i, w in enumerate(itos[2:], start=3):
            if w in vocab.stoi:
                raise DataError(path, f"word {w!r} listed twice", key=f"line {i}")
            vocab.add(w)
        return vocab


def frame_word_indices(
    words: Sequence[tuple[float, float, str]],
    num_frames: int,
    fps: float,
    vocab: Vocabulary,
    *,
    closed: bool = False,
    silence: int = Vocabulary.PAD,
) -> np.ndarray:
    """``(T,)`` int64: the vocabulary index of the word spoken at time ``i / fps``, ``silence``
    where none is. Intervals are half-open ``[start, end)``; with ``closed`` they are
    ``[start, end]`` and a frame on a boundary takes the earlier word (the reference loaders'
    rule: they scan the TextGrid in order with ``start <= t <= end``)."""
    out = np.full(num_frames, silence, np.int64)
    t = np.arange(num_frames) / fps
    # in reverse under `closed`, so that the earlier interval's write wins a shared boundary
    for s, e, w in reversed(words) if closed else words:
        lo = np.searchsorted(t, s, side="left")
        hi = np.searchsorted(t, e, side="right" if closed else "left")
        out[lo:hi] = vocab[w]
    return out
