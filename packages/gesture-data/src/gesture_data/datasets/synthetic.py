"""A deterministic synthetic co-speech corpus: real eSpeak NG speech + SMPL-X gestures.

Every clip is a :class:`~gesture_data.datasets.beat2.Beat2Clip` (30 fps, 16 kHz), so
everything that reads BEAT2 reads this. What makes it useful for training and metrics:

- **Speech** is synthesised word by word (English ``en-us``/``en`` voices, Korean ``ko``)
  and concatenated with short gaps and sentence pauses, so word intervals are exact.
- **Beat gestures**: for most content words the onset of the loudest syllable (the
  stressed one, as a loudness proxy) is a beat time ``b``. The hand rises, peaks 0.1 s
  before ``b`` and strokes down fast, stopping at ``b``, so hand-speed minima (kinematic
  beats) sit on speech onsets. Beat size follows the word's loudness.
- **Semantic gestures** tied to words: self-reference (hand to chest), "you" (point
  forward with the index finger), size/totality words (arms spread), negation (head
  shake), "think"/"remember" (hand to temple). ``clip.meta["semantic"]`` lists them.
- The jaw and the first expression coefficient follow the speech loudness envelope; idle
  sway is smooth seeded noise. Lower body barely moves (trans y ~ 1.30 m as in BEAT2).

``clip.meta`` holds ``beats`` (s), ``beat_hands`` and ``semantic`` [(start, end, kind, word)].

Reproducibility: the same ``(index, seconds, seed, language)`` gives byte-identical audio,
words and motion in any process, whatever was synthesised before, for one eSpeak NG build
(see :mod:`gesture_data.features.tts`). :func:`corpus_version` names the generator and that
build; anything stored from the corpus keys on it.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .._io import atomic_path
from ..features.tts import engine_version, synthesize
from .beat2 import Beat2Clip
from .textgrid import write_textgrid

log = logging.getLogger(__name__)

FPS = 30
SR = 16000

# Bump whenever make_clip's bytes for a given (index, seconds, seed, language) change, so
# stored copies (e.g. the synthetic_windows cache) are rebuilt instead of silently reused.
# 1: audio depended on what the process had synthesised before; 2: each word from a freshly
# loaded eSpeak NG, so the bytes depend on the arguments alone.
CORPUS_VERSION = 2

_EN = {
    "function": [
        "the",
        "a",
        "and",
        "to",
        "of",
        "in",
        "that",
        "it",
        "is",
        "was",
        "with",
        "for",
        "on",
        "so",
        "but",
        "this",
    ],
    "content": [
        "really",
        "important",
        "people",
        "always",
        "thinking",
        "about",
        "every",
        "morning",
        "going",
        "because",
        "something",
        "different",
        "actually",
        "beautiful",
        "remember",
        "together",
        "probably",
        "finally",
        "started",
        "working",
        "question",
        "problem",
        "little",
        "better",
        "family",
        "moment",
        "simple",
        "travel",
        "music",
        "story",
        "children",
        "city",
        "weekend",
        "country",
        "language",
        "reason",
    ],
}
_KO = {
    "function": ["그리고", "그래서", "하지만", "정말", "아주", "조금", "그냥", "이제"],
    "content": [
        "사람들",
        "음악",
        "여행",
        "가족",
        "친구",
        "아침",
        "학교",
        "이야기",
        "문제",
        "시간",
        "도시",
        "주말",
        "언어",
        "질문",
        "선생님",
        "공부",
        "회사",
        "바다",
        "노래",
        "사진",
    ],
}
SEMANTIC_WORDS = {
    "en": {
        "self": ["i", "me", "myself"],
        "you": ["you"],
        "big": ["everything", "huge", "world"],
        "no": ["no", "never"],
        "think": ["think", "idea"],
    },
    "ko": {
        "self": ["나는", "저는"],
        "you": ["당신은"],
        "big": ["모든", "세계"],
        "no": ["아니요"],
        "think": ["생각"],
    },
}
_VOICES = {
    "en": [("en-us", 160, 45), ("en", 150, 60), ("en-us", 175, 35), ("en", 170, 50)],
    "ko": [("ko", 150, 50), ("ko", 165, 40), ("ko", 140, 60), ("ko", 160, 45)],
}

# SMPL-X joint ids used below
_SPINE, _NECK, _HEAD, _JAW = (3, 6, 9), 12, 15, 22
_L_SH, _R_SH, _L_EL, _R_EL, _L_WR, _R_WR = 16, 17, 18, 19, 20, 21
_L_HAND, _R_HAND = range(25, 40), range(40, 55)


def _sentence(rng: np.random.Generator, lang: str) -> list[str]:
    vocab = _EN if lang == "en" else _KO
    sem = SEMANTIC_WORDS[lang]
    n = int(rng.integers(3, 8))
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            kind = list(sem)[int(rng.integers(len(sem)))]
            out.append(sem[kind][int(rng.integers(len(sem[kind])))])
        elif r < 0.45:
            out.append(vocab["function"][int(rng.integers(len(vocab["function"])))])
        else:
            out.append(vocab["content"][int(rng.integers(len(vocab["content"])))])
    return out


def sentences(n: int, seed: int = 0, language: str = "en") -> list[str]:
    """``n`` random 3-7 word sentences over the corpus vocabulary (the same generator as the
    clips' transcripts, no speech synthesised), e.g. for training a text model.

    Deterministic in ``(seed, language)``; ``sentences(n)`` is a prefix of ``sentences(m)``
    for ``n < m``. Words are lower case and joined by single spaces.
    """
    if language not in SEMANTIC_WORDS:
        raise ValueError(f"language must be one of {sorted(SEMANTIC_WORDS)}, got {language!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    # its own stream key, apart from make_clip's [seed, index] streams
    rng = np.random.default_rng([seed, 0x7E47])
    return [" ".join(_sentence(rng, language)) for _ in range(int(n))]


def _stress_time(w: np.ndarray) -> tuple[float, float]:
    """(offset s of the loudest syllable's onset within the word, peak loudness)."""
    env = gaussian_filter1d(np.abs(w), sigma=0.012 * SR)
    p = int(env.argmax())
    below = np.flatnonzero(env[:p] < 0.5 * env[p])
    onset = int(below[-1]) + 1 if below.size else 0
    return onset / SR, float(env[p])


def _speech(rng, lang: str, seconds: float, voice):
    n = round(seconds * SR)
    audio = np.zeros(n, np.float32)
    words, stresses = [], []
    t = float(rng.uniform(0.3, 0.6))
    name, rate, pitch = voice
    while True:
        sent = _sentence(rng, lang)
        for word in sent:
            w = synthesize(word, name, rate, pitch, SR)
            a = round(t * SR)
            if a + w.size > n - int(0.1 * SR) or w.size == 0:
                break
            audio[a : a + w.size] += w
            words.append((a / SR, (a + w.size) / SR, word))
            off, loud = _stress_time(w)
            stresses.append((a / SR + off, loud))
            t = (a + w.size) / SR + float(rng.uniform(0.03, 0.12))
        else:  # the whole sentence fitted: pause, then the next one
            t += float(rng.uniform(0.35, 0.8))
            continue
        break  # out of time
    # faint noise floor so no stretch is digitally silent
    audio += (1e-4 * rng.standard_normal(n)).astype(np.float32)
    return audio, words, stresses


def _smooth_noise(rng, shape, sigma_frames, scale):
    x = rng.standard_normal(shape)
    x = gaussian_filter1d(x, sigma_frames, axis=0)
    return scale * x / (x.std() + 1e-9)


def _stroke(t: np.ndarray, b: float) -> np.ndarray:
    """Hand-lift profile of one beat: slow rise, apex 0.1 s before ``b``, fast fall that has
    stopped by ``b``."""
    tau = t - (b - 0.1)
    sig = np.where(tau < 0, 0.15, 0.045)
    return np.exp(-((tau / sig) ** 2))


def _window(t: np.ndarray, s: float, e: float, ramp: float = 0.25) -> np.ndarray:
    """Smooth 0..1 plateau over [s, e] with raised-cosine ramps."""
    up = np.clip((t - (s - ramp)) / ramp, 0, 1)
    down = np.clip(((e + ramp) - t) / ramp, 0, 1)
    w = np.minimum(up, down)
    return 0.5 - 0.5 * np.cos(np.pi * w)


def _motion(rng, words, stresses, audio, seconds, lang):
    T = round(seconds * FPS)
    t = np.arange(T) / FPS
    pose = np.zeros((T, 55, 3))
    # rest: arms down, forearms forward, fingers relaxed
    pose[:, _L_SH, 2], pose[:, _R_SH, 2] = -1.15, 1.15
    pose[:, _L_EL, 1], pose[:, _R_EL, 1] = -0.9, 0.9
    pose[:, list(_L_HAND), 2] = -0.25
    pose[:, list(_R_HAND), 2] = 0.25
    # idle sway (smooth, small) on spine, neck, head, shoulders, lower body
    for j in (*_SPINE, _NECK, _HEAD, _L_SH, _R_SH, 1, 2, 4, 5):
        pose[:, j] += _smooth_noise(rng, (T, 3), 0.6 * FPS, 0.025)
    # beats
    sem = SEMANTIC_WORDS[lang]
    sem_of = {w: k for k, ws in sem.items() for w in ws}
    beats, hands = [], []
    loud_ref = max((lo for _, lo in stresses), default=1.0) or 1.0
    for (_s, _e, w), (b, loud) in zip(words, stresses, strict=True):
        if w in sem_of or b - (beats[-1] if beats else -1) < 0.35:
            continue
        if len(w) < 4 and lang == "en" and rng.random() < 0.7:
            continue
        amp = float(np.clip(loud / loud_ref, 0.3, 1.0)) * float(rng.uniform(0.75, 1.0))
        r = rng.random()
        hand = "right" if r < 0.6 else ("left" if r < 0.85 else "both")
        k = amp * _stroke(t, b)
        for side in ("right", "left") if hand == "both" else (hand,):
            sgn = 1.0 if side == "right" else -1.0
            sh, el = (_R_SH, _R_EL) if side == "right" else (_L_SH, _L_EL)
            hj = list(_R_HAND if side == "right" else _L_HAND)
            pose[:, el, 1] += sgn * 0.7 * k  # more elbow flexion lifts the hand
            pose[:, sh, 2] -= sgn * 0.25 * k  # shoulder abducts a little
            pose[:, sh, 1] += sgn * 0.2 * k
            pose[:, hj, 2] -= sgn * 0.2 * k[:, None]  # hand opens on the lift
        pose[:, _HEAD, 0] += 0.06 * amp * _stroke(t, b + 0.05)  # small nod on the beat
        beats.append(b)
        hands.append(hand)
    # semantic gestures
    semantic = []
    for s, e, w in words:
        kind = sem_of.get(w)
        if kind is None:
            continue
        win = _window(t, s, e)[:, None]
        tgt = pose.copy()
        if kind == "self":
            tgt[:, _R_SH] = [0.0, -0.45, 0.9]
            tgt[:, _R_EL] = [0.0, 2.1, 0.0]
        elif kind == "you":
            tgt[:, _R_SH] = [0.0, 1.25, 0.3]
            tgt[:, _R_EL] = [0.0, 0.15, 0.0]
            tgt[:, list(_R_HAND), 2] = 1.1  # fist ...
            tgt[:, [40, 41, 42], 2] = 0.0  # ... with the index finger extended
        elif kind == "big":
            tgt[:, _L_SH] = [0.0, -0.5, -0.45]
            tgt[:, _R_SH] = [0.0, 0.5, 0.45]
            tgt[:, _L_EL] = [0.0, -0.3, 0.0]
            tgt[:, _R_EL] = [0.0, 0.3, 0.0]
            tgt[:, list(_L_HAND), 2] = 0.0
            tgt[:, list(_R_HAND), 2] = 0.0
        elif kind == "no":
            tgt[:, _HEAD, 1] += 0.3 * np.sin(2 * np.pi * 3.0 * (t - s))
        elif kind == "think":
            tgt[:, _R_SH] = [0.0, 0.3, -0.2]
            tgt[:, _R_EL] = [0.0, 2.4, 0.0]
        for j in range(55):
            pose[:, j] = (1 - win) * pose[:, j] + win * tgt[:, j]
        semantic.append((s, e, kind, w))
    # jaw and expression follow loudness at frame rate
    spf = SR / FPS
    env = np.array([np.abs(audio[int(i * spf) : int((i + 1) * spf)]).mean() for i in range(T)])
    env = gaussian_filter1d(env / (env.max() + 1e-9), 1.0)
    pose[:, _JAW, 0] = 0.3 * env
    expr = _smooth_noise(rng, (T, 100), 0.5 * FPS, 0.15)
    expr[:, 0] += 2.5 * env - 0.5
    trans = np.zeros((T, 3))
    trans[:, 0] = _smooth_noise(rng, (T,), 1.5 * FPS, 0.01)
    trans[:, 1] = 1.30 + 0.003 * np.sin(2 * np.pi * 0.25 * t)
    trans[:, 2] = _smooth_noise(rng, (T,), 1.5 * FPS, 0.01)
    meta = {"beats": beats, "beat_hands": hands, "semantic": semantic}
    return pose.reshape(T, 165).astype(np.float32), trans, expr.astype(np.float32), meta


def corpus_version() -> str:
    """Identity of the generator's output: :data:`CORPUS_VERSION` and the eSpeak NG build.
    Two processes with the same string produce the same bytes for the same arguments."""
    return f"synthetic-{CORPUS_VERSION}/{engine_version()}"


def make_clip(index: int, seconds: float = 10.0, seed: int = 0, language: str = "en"):
    """One synthetic clip; ``(index, seconds, seed, language)`` fully determines it, byte for
    byte, independent of anything run before in the process (see :func:`corpus_version`)."""
    if language not in SEMANTIC_WORDS:
        raise ValueError(f"language must be one of {sorted(SEMANTIC_WORDS)}, got {language!r}")
    rng = np.random.default_rng([seed, index])
    speaker = index % 4 + 1
    voice = _VOICES[language][speaker - 1]
    audio, words, stresses = _speech(rng, language, seconds, voice)
    poses, trans, expr, meta = _motion(rng, words, stresses, audio, seconds, language)
    meta["voice"] = voice[0]
    return Beat2Clip(
        clip_id=f"{speaker}_synth{language}_{seed}_{index}",
        poses=poses,
        trans=trans.astype(np.float32),
        expressions=expr,
        betas=np.zeros(300, np.float32),
        fps=float(FPS),
        audio=audio,
        sample_rate=SR,
        words=words,
        speaker=speaker,
        language=language,
        meta=meta,
    )


def make_corpus(
    num_clips: int = 8, seconds: float = 10.0, seed: int = 0, languages=("en",)
) -> list[Beat2Clip]:
    """``num_clips`` deterministic clips of ``seconds`` each (motion ``(seconds*30, 165)``,
    audio ``(seconds*16000,)``). Clip i speaks ``languages[i % len(languages)]``."""
    return [make_clip(i, seconds, seed, languages[i % len(languages)]) for i in range(num_clips)]


def split_of(index: int) -> str:
    """Deterministic split: every 5th clip is test, the one before it val."""
    return {4: "test", 3: "val"}.get(index % 5, "train")


def write_corpus(clips: list[Beat2Clip], root: str | Path) -> Path:
    """Write clips in BEAT2's layout (npz, 16 kHz float wav, TextGrid, split csv) so every
    BEAT2 reader works on them. Returns ``root``."""
    import soundfile as sf

    root = Path(root)
    for sub in ("smplxflame_30", "wave16k", "textgrid"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for c in clips:
        npz = root / "smplxflame_30" / f"{c.clip_id}.npz"
        with atomic_path(npz, ".npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                poses=c.poses,
                trans=c.trans.astype(np.float64),
                expressions=c.expressions.astype(np.float64),
                betas=c.betas,
                model=np.array("smplx2020"),
                gender=np.array("neutral"),
                mocap_frame_rate=np.int32(round(c.fps)),
            )
        with atomic_path(root / "wave16k" / f"{c.clip_id}.wav", ".wav") as tmp:
            sf.write(str(tmp), c.audio, c.sample_rate, subtype="FLOAT", format="WAV")
        write_textgrid(
            root / "textgrid" / f"{c.clip_id}.TextGrid",
            {"words": c.words},
            xmax=c.audio.size / c.sample_rate,
        )
    with atomic_path(root / "train_test_split.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "type"])
        for c in clips:
            w.writerow([c.clip_id, split_of(int(c.clip_id.rsplit("_", 1)[1]))])
    return root
