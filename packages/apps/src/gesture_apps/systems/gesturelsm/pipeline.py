"""Inference pipelines: speech (+ optional word alignment) -> BEAT2-format motion.

``generate(audio, checkpoint=..., steps=2)`` runs a ``gesture train lsm`` export the way
GestureLSM tests (sliding windows of ``pose_length`` motion frames whose first ``seed_frames``
latents overlap the previous window and are seeded by it) but with no dropped tail: the last
window is padded and cut, so the output has ``floor(audio seconds * 30)`` frames. Guidance runs
the conditional and the unconditional branch in one batched forward.

Example::

    from gesture_apps.systems.gesturelsm.pipeline import generate, write_beat2_npz
    motion = generate("speech.wav", checkpoint="runs/lsm", textgrid="words.TextGrid", steps=2)
    motion.poses.shape  # (T, 165) axis-angle, T = floor(seconds * 30)
    write_beat2_npz("motion.npz", motion)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from flow_backbones import cfg_combine, sample_euler
from gesture_apps.data.codec import decode_latents
from gesture_apps.data.motion import Motion, write_beat2_npz
from gesture_apps.data.speech import FPS, MIN_SECONDS, SAMPLE_RATE, read_audio, read_words
from gesture_apps.errors import GenerationError
from gesture_apps.runtime.device import resolve_device
from gesture_apps.systems.gesturelsm.export import LSMBundle, load_lsm
from gesture_data.datasets.beat2 import frame_word_indices
from gesture_data.datasets.windows import audio_window, stitch_windows, window_plan
from gesture_data.features.audio import onset_amplitude

# sampling steps per window: the shortcut model is trained on step sizes down to 1/128, and
# past a few hundred Euler steps the output no longer changes; a typo such as 100000 would
# otherwise run for hours with nothing on the screen
MAX_STEPS = 1000


# ----- inputs ------------------------------------------------------------------------------


# ----- model -------------------------------------------------------------------------------


# ----- generation --------------------------------------------------------------------------


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
    noise: Tensor | None = None,
) -> Motion:
    """Audio samples ``(N,)`` at 16 kHz (+ word intervals) -> :class:`Motion` of
    ``floor(N * 30 / 16000)`` frames. ``bf16`` runs the networks under bfloat16 autocast
    (faster where the CPU has bf16 units; joint rotations move by a few degrees at most).
    ``noise``: each window's initial noise ``(windows, n, D)`` instead of drawing it from
    ``seed`` (to reproduce another implementation's samples)."""

    spec, gen = bundle.spec, bundle.generator
    steps, guidance = sampling_settings(spec, steps, guidance)
    device = next(gen.parameters()).device
    L, f, s = spec["pose_length"], spec["factor"], gen.seed_frames
    T = int(audio.size * FPS // SAMPLE_RATE)
    plan = window_plan(T, L, f, s)
    W, n = plan.windows, L // f

    # an imported release runs by its own test loop's rules: onsets at the reference's
    # (mis-)indexed samples, 16000 // 30 audio samples per frame, closed word intervals with
    # <unk> where no word is spoken, its time grid (below) and a first seed of its own
    reference = spec.get("layout") == "reference"
    feats_audio = onset_amplitude(audio, SAMPLE_RATE, reference_indexing=reference)  # (N, 2)
    silence = bundle.vocab.UNK if reference else bundle.vocab.PAD
    word_idx = np.full(plan.latent_frames * f, silence, np.int64)
    if words:
        word_idx[:T] = frame_word_indices(
            words, T, FPS, bundle.vocab, closed=reference, silence=silence
        )

    starts = plan.starts(f)
    spf = SAMPLE_RATE // FPS if reference else None
    a_win = np.stack(
        [
            audio_window(
                feats_audio, st, L, fps=FPS, sample_rate=SAMPLE_RATE, samples_per_frame=spf
            )
            for st in starts
        ]
    )
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
        if noise is None:
            noise = torch.randn(W, n, D, generator=torch.Generator().manual_seed(seed))
        elif tuple(noise.shape) != (W, n, D):
            raise GenerationError(f"noise: expected shape {(W, n, D)}, found {tuple(noise.shape)}")
        noise = noise.to(device)
        # the condition does not change over the Euler steps: its cross-attention keys and values
        # are computed once, for all windows in one batch (and once for the null condition)
        kv_all = den.cross_kv(feats, n_frames=n)
        guided = guidance > 1.0 if reference else guidance != 1.0  # the release: g > 1 only
        kv_null = den.cross_kv(None, batch=1, n_frames=n) if guided else None
        # the release samples on linspace(1e-8, 1 - 1e-8): in float32 only t_0 differs
        grid = torch.linspace(1e-8, 1 - 1e-8, steps + 1) if reference else None
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
            if s and prev is not None:
                seed_i = prev[:, -s:]
            elif s:
                first = getattr(gen, "first_seed", None)
                seed_i = noise.new_zeros(1, s, D) if first is None else first[None].to(noise)
            z = sample_window(den, kv, kv_null, seed_i, noise[i : i + 1], steps, guidance, grid)
            pieces.append(z)
            prev = z
        latents = stitch_windows(pieces, s)  # (1, plan.latent_frames, D)
        return decode_latents(bundle.tokenizer, bundle.normalizer, latents, T)


def sampling_settings(spec: dict, steps: int | None, guidance: float | None) -> tuple[int, float]:
    """``(steps, guidance)``: the given values or the bundle's (``spec["sample"]``), checked."""
    steps = int(steps if steps is not None else spec["sample"]["steps"])
    guidance = float(guidance if guidance is not None else spec["sample"]["guidance"])
    if not 1 <= steps <= MAX_STEPS:
        raise GenerationError(f"steps must be between 1 and {MAX_STEPS}, found {steps}")
    if not math.isfinite(guidance):
        raise GenerationError(f"guidance must be a finite number, found {guidance}")
    return steps, guidance


def sample_window(
    den,
    kv: list[tuple[Tensor, Tensor]],
    kv_null: list[tuple[Tensor, Tensor]] | None,
    seed: Tensor | None,
    noise: Tensor,
    steps: int,
    guidance: float,
    grid: Tensor | None = None,
) -> Tensor:
    """One window's latents ``(1, n, D)`` from its noise ``(1, n, D)``: Euler steps of the
    denoiser on the window's cached cross-attention ``kv`` and its ``seed`` latents; with
    ``kv_null`` (the null condition's keys) classifier-free guidance at ``guidance``, the
    conditional and unconditional rows in one batch-2 forward."""
    if kv_null is not None:
        kv = [
            (torch.cat([k, kn]), torch.cat([v, vn]))
            for (k, v), (kn, vn) in zip(kv, kv_null, strict=True)
        ]
        seed = None if seed is None else torch.cat([seed, seed])
    fn = _velocity(den, kv, seed, guidance if kv_null is not None else None)
    return sample_euler(fn, noise, steps, t_grid=grid, pass_step_size=True)


def _velocity(den, cross_kv, seed: Tensor | None, guidance: float | None):
    """``(x, t, d) -> v`` of one window: the denoiser on cached cross-attention keys/values;
    with ``guidance``, the cached batch is [conditional | unconditional] and the two velocities
    are combined (what ``flow_backbones.conditioned`` does, without recomputing the keys)."""

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
