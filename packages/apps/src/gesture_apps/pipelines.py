"""Inference pipelines: speech (+ optional word alignment) -> BEAT2-format motion.

``generate(audio, checkpoint=..., steps=2)`` runs a ``gesture train lsm`` export the way
GestureLSM tests (sliding windows of ``pose_length`` motion frames whose first ``seed_frames``
latents overlap the previous window and are seeded by it) but with no dropped tail: the last
window is padded and cut, so the output has ``floor(audio seconds * 30)`` frames. Guidance runs
the conditional and the unconditional branch in one batched forward.

Example::

    from gesture_apps.pipelines import generate, write_beat2_npz
    motion = generate("speech.wav", checkpoint="runs/lsm", textgrid="words.TextGrid", steps=2)
    motion.poses.shape  # (T, 165) axis-angle, T = floor(seconds * 30)
    write_beat2_npz("motion.npz", motion)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from motion_tokenizers.io import atomic_write

from .errors import GenerationError

SAMPLE_RATE = 16000
FPS = 30
MIN_SECONDS = 1.0  # shorter recordings are refused ("too short")
# sampling steps per window: the shortcut model is trained on step sizes down to 1/128, and
# past a few hundred Euler steps the output no longer changes; a typo such as 100000 would
# otherwise run for hours with nothing on the screen
MAX_STEPS = 1000
# config.json keys generation reads, with their types (a hand-edited or foreign export fails
# here with the key named instead of deep inside the model)
SPEC_KEYS = {
    "parts": list,
    "pose_length": int,
    "factor": int,
    "vocab_size": int,
    "audio_channels": list,
    "audio_dim": int,
    "word_dim": int,
    "denoiser": dict,
    "sample": dict,
}
TEXTGRID_TOLERANCE_S = 2.0  # BEAT2's audio and alignments differ by up to ~0.6 s


@dataclass
class Motion:
    """Generated motion in BEAT2's SMPL-X layout at ``fps``."""

    poses: np.ndarray  # (T, 165) float32 axis-angle, 55 joints
    trans: np.ndarray  # (T, 3) metres, Y up
    expressions: np.ndarray  # (T, 100) FLAME coefficients (zeros unless the face is generated)
    fps: int = FPS

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])


# ----- inputs ------------------------------------------------------------------------------


def read_audio(path: str | Path) -> np.ndarray:
    """Mono 16 kHz wav (float or PCM) -> float32 ``(N,)``; anything else is a
    :class:`GenerationError` (no resampling or down-mixing behind the user's back)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"{path}: audio file not found")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise GenerationError(f"{path}: cannot read audio ({_one_line(e)})") from None
    if audio.shape[1] != 1:
        raise GenerationError(f"{path}: expected mono audio, found {audio.shape[1]} channels")
    if sr != SAMPLE_RATE:
        raise GenerationError(f"{path}: expected {SAMPLE_RATE} Hz audio, found {sr} Hz")
    audio = np.ascontiguousarray(audio[:, 0])
    if audio.size == 0:
        raise GenerationError(f"{path}: audio is empty")
    if audio.size < MIN_SECONDS * SAMPLE_RATE:
        raise GenerationError(
            f"{path}: audio too short ({audio.size / SAMPLE_RATE:.3f} s; at least "
            f"{MIN_SECONDS} s needed)"
        )
    if not np.isfinite(audio).all():
        raise GenerationError(f"{path}: audio has non-finite samples")
    return audio


def read_words(path: str | Path, seconds: float) -> list[tuple[float, float, str]]:
    """Word intervals of a TextGrid's ``words`` tier, checked against the audio length."""
    from gesture_data.datasets.textgrid import read_textgrid

    path = Path(path)
    words = read_textgrid(path)["words"]  # DataError (a ValueError) when unreadable
    end = _textgrid_end(path, words)
    if abs(end - seconds) > TEXTGRID_TOLERANCE_S or (words and words[-1][1] > seconds + 0.5):
        raise GenerationError(
            f"{path}: TextGrid does not match the audio (it spans {end:.2f} s, the audio "
            f"{seconds:.2f} s)"
        )
    return words


def _textgrid_end(path: Path, words) -> float:
    """The TextGrid's ``xmax`` (the end of its time axis)."""
    import re

    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"xmax\s*=\s*([0-9.eE+-]+)", text)
    if m is None:  # short format: "ooTextFile" header, then xmin and xmax on their own lines
        nums = re.findall(r"^\s*([0-9][0-9.eE+-]*)\s*$", text, flags=re.M)
        if len(nums) >= 2:
            return float(nums[1])
        return words[-1][1] if words else 0.0
    return float(m.group(1))


# ----- model -------------------------------------------------------------------------------


@dataclass
class LSMBundle:
    """A loaded ``gesture train lsm`` export."""

    generator: Any  # recipes.lsm.LSMGenerator
    tokenizer: Any  # MultiPartTokenizer
    normalizer: Any
    vocab: Any
    spec: dict
    folder: Path


def find_export(path: str | Path) -> Path:
    """``lsm/`` export folder from an export, a run folder or a checkpoint folder."""
    from .runtime.checkpoint import resolve_checkpoint

    p = Path(path).expanduser()
    if not p.exists():
        raise GenerationError(f"{p}: checkpoint not found")
    for cand in (p, p / "lsm"):
        if (cand / "config.json").is_file() and (cand / "tokenizer").is_dir():
            return cand
    if (p / "checkpoints").is_dir() or (p / "trainer_state.json").is_file():
        ck = resolve_checkpoint(p)  # CheckpointError (a ValueError) for broken runs
        if (ck / "lsm" / "config.json").is_file():
            return ck / "lsm"
    raise GenerationError(
        f"{p}: not a `gesture train lsm` checkpoint (expected lsm/config.json, a run folder or "
        "a checkpoints/step_* folder)"
    )


def default_device() -> str:
    """What ``device=None`` means everywhere here: ``"cuda"`` when a CUDA device is usable,
    else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> :func:`default_device`; a device that does not exist or is not usable on
    this machine is a :class:`GenerationError` before anything is loaded."""
    name = default_device() if device is None else device
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise GenerationError(
            f"device {name!r}: not a torch device (expected e.g. cpu, cuda, cuda:1)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerationError(f"device {name!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GenerationError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu" and not _backend_available(dev.type):
        raise GenerationError(f"device {name!r}: {dev.type} is not available on this machine")
    return dev


def _backend_available(kind: str) -> bool:
    module = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    check = getattr(module, "is_available", None)
    return bool(check and check())


def load_lsm(path: str | Path, *, ema: bool = True, device: str | torch.device | None = "cpu"):
    """Load an export (see :func:`find_export`) onto ``device`` (``None``: CUDA when present,
    else the CPU); raises :class:`GenerationError` if broken. The default stays the CPU for the
    callers that feed it CPU tensors (reflow and distillation build their pairs there);
    :func:`generate` picks the device."""
    device = resolve_device(device)
    folder = find_export(path)
    # the files' modification times are part of the cache key: a retrained export reloads
    stamp = tuple(
        f.stat().st_mtime_ns if f.exists() else 0
        for f in (folder / n for n in ("config.json", "model.safetensors", "model_ema.safetensors"))
    )
    return _load_lsm(str(folder.resolve()), ema, str(device), stamp)


@lru_cache(maxsize=4)
def _load_lsm(folder_s: str, ema: bool, device: str, stamp: tuple = ()) -> LSMBundle:
    from safetensors.torch import load_model

    from gesture_data import Normalizer
    from gesture_data.datasets.beat2 import Vocabulary
    from motion_tokenizers import MultiPartTokenizer

    from .recipes.data import check_normalizer
    from .recipes.lsm import LSMGenerator, check_finite

    folder = Path(folder_s)
    try:
        spec = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        _check_spec(spec, folder / "config.json")
        gen = LSMGenerator(spec)
        weights = folder / ("model_ema.safetensors" if ema else "model.safetensors")
        if not weights.is_file():
            weights = folder / "model.safetensors"
        load_model(gen, str(weights), strict=True)
        check_finite(gen, weights)
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
            tok = MultiPartTokenizer.from_pretrained(folder / "tokenizer")
        check_finite(tok, folder / "tokenizer")
        if list(tok.part_names) != list(spec["parts"]):
            raise GenerationError(
                f"{folder}: tokenizer parts {tok.part_names} do not match config.json's "
                f"{spec['parts']}"
            )
        normalizer = Normalizer.load(folder / "normalizer.npz")
        check_normalizer(normalizer, folder / "normalizer.npz", spec["parts"])
        itos = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        vocab = Vocabulary(itos[2:])
    except GenerationError:
        raise
    except Exception as e:  # json, safetensors, torch and our loaders raise many types
        raise GenerationError(f"{folder}: corrupt checkpoint ({_one_line(e)})") from None
    if len(vocab) != spec.get("vocab_size"):
        raise GenerationError(f"{folder}: vocab.txt does not match config.json")
    gen.eval().to(device)
    tok.eval().to(device)
    return LSMBundle(gen, tok, normalizer, vocab, spec, folder)


def _check_spec(spec: Any, path: Path) -> None:
    """config.json must be an object holding :data:`SPEC_KEYS` with sane values."""
    if not isinstance(spec, dict):
        raise GenerationError(f"{path}: expected a JSON object, found {type(spec).__name__}")
    for key, kind in SPEC_KEYS.items():
        if key not in spec:
            raise GenerationError(f"{path}: missing key {key!r}")
        value = spec[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GenerationError(
                f"{path}: {key!r} must be {kind.__name__}, found {type(value).__name__}"
            )
        if kind is int and value < 1:
            raise GenerationError(f"{path}: {key!r} must be at least 1, found {value}")
    if spec["pose_length"] % spec["factor"]:
        raise GenerationError(f"{path}: 'pose_length' is not a multiple of 'factor'")


# ----- generation --------------------------------------------------------------------------


def window_plan(num_frames: int, pose_length: int, factor: int, seed_frames: int):
    """(windows, hop in latent frames, latent frames covered) for ``num_frames`` motion frames:
    window ``i`` covers latent frames ``[i * hop, i * hop + N)``; enough windows to reach the
    last frame (the tail is padded, never dropped)."""
    n = pose_length // factor
    hop = n - seed_frames
    need = math.ceil(num_frames / factor)
    windows = 1 if need <= n else 1 + math.ceil((need - n) / hop)
    return windows, hop, n + (windows - 1) * hop


@torch.no_grad()  # not inference_mode: FLOP counters and hooks need autograd metadata
def generate_motion(
    bundle: LSMBundle,
    audio: np.ndarray,
    words: list[tuple[float, float, str]] | None = None,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    encoder_batch: int = 4,
    bf16: bool = False,
) -> Motion:
    """Audio samples ``(N,)`` at 16 kHz (+ word intervals) -> :class:`Motion` of
    ``floor(N * 30 / 16000)`` frames. ``bf16`` runs the networks under bfloat16 autocast
    (faster where the CPU has bf16 units; joint rotations move by a few degrees at most)."""
    from flow_backbones import sample_euler
    from gesture_data.datasets.beat2 import frame_word_indices
    from gesture_data.features.audio import onset_amplitude

    spec, gen = bundle.spec, bundle.generator
    steps = int(steps if steps is not None else spec["sample"]["steps"])
    guidance = float(guidance if guidance is not None else spec["sample"]["guidance"])
    if not 1 <= steps <= MAX_STEPS:
        raise GenerationError(f"steps must be between 1 and {MAX_STEPS}, found {steps}")
    if not math.isfinite(guidance):
        raise GenerationError(f"guidance must be a finite number, found {guidance}")
    device = next(gen.parameters()).device
    L, f, s = spec["pose_length"], spec["factor"], gen.seed_frames
    T = int(audio.size * FPS // SAMPLE_RATE)
    W, hop, n_cover = window_plan(T, L, f, s)
    n = L // f
    spf = SAMPLE_RATE / FPS
    frames_cover = n_cover * f

    feats_audio = onset_amplitude(audio, SAMPLE_RATE)  # (N, 2)
    la = round(L * spf)
    total = round((W - 1) * hop * f * spf) + la
    padded = np.zeros((max(total, feats_audio.shape[0]), 2), np.float32)
    padded[: feats_audio.shape[0]] = feats_audio
    word_idx = np.zeros(frames_cover, np.int64)
    if words:
        word_idx[:T] = frame_word_indices(words, T, FPS, bundle.vocab)

    starts = [i * hop * f for i in range(W)]
    a_win = np.stack([padded[round(st * spf) : round(st * spf) + la] for st in starts])
    w_win = np.stack([word_idx[st : st + L] for st in starts])
    # bf16: matmuls and convolutions in bfloat16 (about 1.4x on CPUs with bf16 units); the
    # Euler state and the tokenizer's code search stay fp32
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        feats = torch.cat(
            [
                gen.encoder(
                    torch.from_numpy(a_win[i : i + encoder_batch]).to(device),
                    torch.from_numpy(w_win[i : i + encoder_batch]).to(device),
                )
                for i in range(0, W, encoder_batch)
            ]
        )  # (W, n, cond_dim)

        den = gen.denoiser
        D = den.num_parts * den.part_dim
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(W, n, D, generator=g).to(device)
        # the condition does not change over the Euler steps: its cross-attention keys and values
        # are computed once, for all windows in one batch (and once for the null condition)
        kv_all = den.cross_kv(feats, n_frames=n)
        guided = guidance != 1.0
        kv_null = den.cross_kv(None, batch=1, n_frames=n) if guided else None
        pieces: list[Tensor] = []
        prev: Tensor | None = None
        # a long recording at many steps takes minutes: show where it is (on a terminal only;
        # tqdm's disable=None stays quiet when stderr is a file or a pipe)
        windows = tqdm(range(W), desc="generate", unit="window", leave=False, disable=None)
        if W * steps < 200:
            windows = range(W)
        for i in windows:
            kv = [(k[i : i + 1], v[i : i + 1]) for k, v in kv_all]
            seed_i = None
            if s:
                seed_i = prev[:, -s:] if prev is not None else noise.new_zeros(1, s, D)
            if guided:  # [conditional | unconditional] in one batch-2 forward
                kv = [
                    (torch.cat([k, kn]), torch.cat([v, vn]))
                    for (k, v), (kn, vn) in zip(kv, kv_null, strict=True)
                ]
                seed_i = None if seed_i is None else torch.cat([seed_i, seed_i])
            fn = _velocity(den, kv, seed_i, guidance if guided else None)
            z = sample_euler(fn, noise[i : i + 1], steps, pass_step_size=True)
            pieces.append(z if i == 0 else z[:, s:])
            prev = z
        latents = torch.cat(pieces, dim=1)  # (1, n_cover, D)
        return decode_motion(bundle, latents, T)


def _velocity(den, cross_kv, seed: Tensor | None, guidance: float | None):
    """``(x, t, d) -> v`` of one window: the denoiser on cached cross-attention keys/values;
    with ``guidance``, the cached batch is [conditional | unconditional] and the two velocities
    are combined (what ``flow_backbones.conditioned`` does, without recomputing the keys)."""
    from flow_backbones import cfg_combine

    def fn(x: Tensor, t: Tensor, d: Tensor) -> Tensor:
        if guidance is None:
            return den(x, t, d, None, seed=seed, cross_kv=cross_kv)
        v = den(
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([d, d]),
            None,
            seed=seed,
            cross_kv=cross_kv,
        )
        B = x.shape[0]
        return cfg_combine(v[:B], v[B:], torch.full_like(t, guidance))

    return fn


def decode_motion(bundle: LSMBundle, latents: Tensor, num_frames: int) -> Motion:
    """Scaled latents ``(1, N, D)`` -> :class:`Motion` cut to ``num_frames``."""
    from gesture_data import BodyPartLayout, velocity_to_trans
    from gesture_data.rotations import rot6d_to_axis_angle

    from .recipes.tokenizer import DATA_KEYS

    parts = bundle.tokenizer.decode(latents)
    parts = {DATA_KEYS[k]: v[0, :num_frames].float().cpu() for k, v in parts.items()}
    parts = bundle.normalizer.denormalize(parts)
    merged = BodyPartLayout.beat2().merge(parts)
    poses = rot6d_to_axis_angle(merged.rot.double()).float().numpy()
    T = poses.shape[0]
    if merged.trans_v is not None:
        trans = velocity_to_trans(merged.trans_v.double()).numpy()
    else:
        trans = np.zeros((T, 3))
    face = merged.face.double().numpy() if merged.face is not None else np.zeros((T, 100))
    return Motion(np.ascontiguousarray(poses, np.float32), trans, face)


def generate(
    audio: str | Path | np.ndarray,
    *,
    checkpoint: str | Path,
    textgrid: str | Path | None = None,
    words: list[tuple[float, float, str]] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    bf16: bool = False,
) -> Motion:
    """Speech -> motion; ``audio`` a wav path or float32 samples at 16 kHz. The networks run on
    ``device`` (default: CUDA when present, else the CPU); the noise is drawn on the CPU, so a
    seed gives the same motion on any device up to float rounding. With ``out`` the motion is
    also written as a BEAT2 npz (atomically). Bad input raises :class:`GenerationError` (a
    ``ValueError``) before anything is written."""
    device = resolve_device(device)
    if isinstance(audio, str | Path):
        samples = read_audio(audio)
    else:
        samples = np.asarray(audio, np.float32).reshape(-1)
        if samples.size < MIN_SECONDS * SAMPLE_RATE:
            raise GenerationError(f"audio too short ({samples.size} samples)")
    if textgrid is not None:
        words = read_words(textgrid, samples.size / SAMPLE_RATE)
    bundle = load_lsm(checkpoint, device=device)
    motion = generate_motion(
        bundle, samples, words, steps=steps, guidance=guidance, seed=seed, bf16=bf16
    )
    if out is not None:
        write_beat2_npz(out, motion)
    return motion


def write_beat2_npz(path: str | Path, motion: Motion) -> Path:
    """BEAT2's ``smplxflame_30`` npz layout, written to a temporary file then renamed."""
    path = Path(path)
    if path.is_dir():
        raise GenerationError(f"{path}: is a folder; give a .npz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "poses": np.asarray(motion.poses, np.float32),
        "trans": np.asarray(motion.trans, np.float64),
        "expressions": np.asarray(motion.expressions, np.float64),
        "betas": np.zeros(300, np.float32),
        "model": np.array("smplx2020"),
        "gender": np.array("neutral"),
        "mocap_frame_rate": np.array(motion.fps, np.int32),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)

    atomic_write(path, write)  # keeps the umask's mode (mkstemp would leave 0600)
    return path


def render_video(
    path: str | Path, motion: Motion, audio: np.ndarray | None = None, size: int = 320
) -> Path:
    """Stick-figure video of ``motion`` (SMPL-X joints from an approximate rest skeleton),
    ``.mp4`` with the speech muxed in, or ``.gif``; written atomically."""
    from gesture_data.render import render_motion

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise GenerationError(f"{path}: expected a .mp4 or .gif file name")
    joints = joints_approx(motion.poses, motion.trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    return render_motion(
        joints,
        path,
        fps=motion.fps,
        audio=audio,
        sample_rate=SAMPLE_RATE,
        titles=["generated"],
        size=(size, size),
    )


def joints_approx(poses: np.ndarray, trans: np.ndarray | None = None) -> np.ndarray:
    """``(T, 55, 3)`` float32 SMPL-X joints of ``(T, 165)`` axis-angle poses (+ ``(T, 3)``
    translation) on gesture_data's approximate rest skeleton: no SMPL-X model file needed."""
    from gesture_data.skeleton import smplx_joints_approx

    t = None if trans is None else torch.from_numpy(np.asarray(trans, np.float64))
    j = smplx_joints_approx(torch.from_numpy(np.asarray(poses, np.float64)), t)
    return np.asarray(j, np.float32)


def mean_joint_speed(joints: list[np.ndarray], fps: float = FPS) -> np.ndarray:
    """Per-joint mean speed ``(J,)`` over sequences of ``(T, J, 3)`` joints: BC's speed
    normaliser when BEAT2's ``mean_vel`` file does not apply."""
    from gesture_eval.beat import joint_speed

    speeds = np.concatenate([joint_speed(j, fps) for j in joints])
    return np.maximum(speeds.mean(axis=0), 1e-6)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
