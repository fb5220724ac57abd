"""Streaming GestureLSM: live 16 kHz audio in, BEAT2 motion out, chunk by chunk.

GestureLSM generates sliding windows of ``n`` latent frames, each seeded by the last
``seed_frames`` latents of the one before. A stream runs the same windows with a short hop:
every time ``k`` new latent frames (``chunk_s``) plus a ``lookahead_s`` margin of audio have
been heard, one window is generated that starts ``seed_frames`` latents before the first new
frame, so its seed is the motion already shown. The audio past the margin is not known yet and
the window sees silence there; only its ``k`` new latents are kept. So with ``chunk_s`` equal to
the offline hop and no margin, a stream reproduces offline generation window for window.

State carried between steps: the latents already emitted (the next seed and the decoder's left
context), the causal onset/amplitude feature stream
(:class:`gesture_data.features.audio.OnsetAmplitudeStream`, 96 ms look-ahead), the noise
generator, the null condition's cross-attention keys and values, and the root position. New
frames are decoded from the emitted latents around them (the tokenizer decoder's receptive field,
measured once per bundle) with the window's not-yet-emitted latents as right context, so
consecutive chunks join without a seam.

Steps fire on how much audio has arrived, never on how it was cut, so any chunking of the same
recording (10 ms or 2 s pieces) gives the same motion.

Example::

    stream = GestureStream("runs/distill/student", chunk_s=0.5)
    for chunk in microphone():  # float32 at 16 kHz
        frames = stream.push(chunk)  # Motion, possibly 0 frames
    rest = stream.flush()
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from gesture_apps.data.codec import decode_latents
from gesture_apps.data.motion import Motion
from gesture_apps.data.speech import FPS, SAMPLE_RATE
from gesture_apps.errors import GenerationError
from gesture_apps.runtime.device import resolve_device
from gesture_apps.runtime.threads import single_thread_blas
from gesture_apps.systems.gesturelsm.export import LSMBundle, load_lsm
from gesture_apps.systems.gesturelsm.pipeline import sample_window, sampling_settings
from gesture_data.datasets.beat2 import frame_word_indices
from gesture_data.features.audio import OnsetAmplitudeStream

SAMPLES_PER_FRAME = SAMPLE_RATE / FPS


class GestureStream:
    """Audio chunks -> motion frames with bounded latency.

    Args:
        bundle: an :class:`LSMBundle` or the folder of one (a ``gesture train lsm`` or
            ``gesture distill`` export; a one-step student is what makes this real-time).
        chunk_s: motion emitted per step, rounded to whole latent frames (at most the
            offline hop); read back the actual value from :attr:`chunk_s`.
        lookahead_s: audio heard past the new frames before they are generated (rounded up to
            latent frames, capped by the window). Default: one latent frame. :attr:`lookahead_s`
            adds the feature stream's 96 ms.
        steps, guidance: sampling settings (default: the bundle's).
        seed: seeds the noise of every window, drawn in order.
        words: ``(start_s, end_s, word)`` intervals known in advance (e.g. from a TextGrid);
            a word enters a window only once the audio under it has been heard.
        sample_rate: the rate :meth:`push` takes; other than 16 kHz is resampled on the fly.
        device: where the networks run (default: CUDA when present, else the CPU).
        feature_stream: the onset/amplitude source (default: a new
            :class:`OnsetAmplitudeStream`); any object with ``push``/``flush`` returning
            ``(M, 2)`` rows per 16 kHz sample and a ``lookahead`` in samples.
    """

    def __init__(
        self,
        bundle: LSMBundle | str | Path,
        *,
        chunk_s: float = 0.5,
        lookahead_s: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        words: list[tuple[float, float, str]] | None = None,
        sample_rate: int = SAMPLE_RATE,
        device: str | torch.device | None = None,
        feature_stream=None,
    ) -> None:
        if not isinstance(bundle, LSMBundle):
            bundle = load_lsm(bundle, device=resolve_device(device))
        if bundle.spec.get("layout") == "reference":
            raise GenerationError(
                f"{bundle.folder}: an imported GestureLSM release cannot stream (its onset "
                "features index the whole recording); stream a bundle trained by this project"
            )
        self.bundle = bundle
        spec, gen = bundle.spec, bundle.generator
        self.steps, self.guidance = sampling_settings(spec, steps, guidance)
        for name, v in (("chunk_s", chunk_s), ("lookahead_s", lookahead_s)):
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise GenerationError(f"{name} must be a number of seconds >= 0, found {v!r}")
        if not (isinstance(sample_rate, int) and sample_rate > 0):
            raise GenerationError(f"sample_rate must be a positive integer, found {sample_rate!r}")

        self.fps = FPS
        self.sample_rate = sample_rate
        self.L, self.f, self.s = spec["pose_length"], spec["factor"], gen.seed_frames
        self.n = self.L // self.f
        hop = self.n - self.s
        self.k = min(hop, max(1, round(chunk_s * FPS / self.f)))
        la = 1 if lookahead_s is None else math.ceil(lookahead_s * FPS / self.f - 1e-9)
        self.la = min(la, hop - self.k)
        self.features = feature_stream or OnsetAmplitudeStream(SAMPLE_RATE)
        self.chunk_s = self.k * self.f / FPS
        self.words = list(words or [])

        den = gen.denoiser
        self.device = next(gen.parameters()).device
        self.D = den.num_parts * den.part_dim
        self._guided = self.guidance != 1.0
        with torch.no_grad():
            self._kv_null = den.cross_kv(None, batch=1, n_frames=self.n) if self._guided else None
        self._left, self._right = decoder_context(bundle.tokenizer, self.D, self.f)
        # frames are decoded once the window's proposal reaches past them by the decoder's
        # right context; a short window (the tiny presets: 2 latents past the chunk) holds the
        # last latents back instead (at most 2: measured on the demo model, holding 2 makes
        # the seams indistinguishable from other frames, 0 leaves their jerk 2x)
        self.hold = min(2, max(0, self._right - (self.n - self.s - self.k)))
        # what a frame waits for past its own audio: the model's margin, held latents and the
        # feature stream's look-ahead
        self.lookahead_s = (self.la + self.hold) * self.f / FPS + self.features.lookahead / (
            SAMPLE_RATE
        )
        self._noise = torch.Generator().manual_seed(seed)
        self._resampler = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")

        self._feats = np.zeros((0, 2), np.float32)  # final features from sample _feat_start
        self._feat_start = 0
        self._latents = torch.zeros(1, 0, self.D)  # emitted latents (kept: decoder context)
        self._lat_start = 0  # latent index of _latents[:, 0]
        self._provisional: torch.Tensor | None = None  # the last window's latents past E
        self._decoded = 0  # latents whose frames were emitted
        self.frames_out = 0
        self._xz: np.ndarray | None = None  # root x/z of the last emitted frame
        self._silent: torch.Tensor | None = None  # the encoder's audio steps on a silent window
        self._spans: np.ndarray | None = None  # the audio samples each of those steps reads
        self.received = 0  # input samples pushed (at sample_rate, gaps included)
        self.gaps = 0  # dropped-chunk gaps filled with silence
        self.latencies: list[float] = []  # compute seconds of each push
        self._done = False

    # ----- public -----

    @torch.no_grad()
    def push(self, audio: np.ndarray, *, at: int | None = None) -> Motion:
        """Float samples ``(n,)`` at :attr:`sample_rate` -> the new frames (:class:`Motion`,
        possibly 0 frames). ``at``: the index of ``audio[0]`` in the stream; a gap after the
        samples received so far (a dropped chunk) is filled with silence and counted in
        :attr:`gaps`, samples already received are dropped."""
        t0 = time.perf_counter()
        if self._done:
            raise GenerationError("push: the stream was flushed; start a new GestureStream")
        a = _check_chunk(audio)
        if at is not None:
            if not isinstance(at, int | np.integer) or at < 0:
                raise GenerationError(f"push: at must be a sample index >= 0, found {at!r}")
            if at > self.received:
                a = np.concatenate([np.zeros(at - self.received, np.float32), a])
                self.gaps += 1
            else:
                a = a[self.received - at :]
        self.received += a.size
        if self._resampler is not None:
            a = self._resampler.resample_chunk(a)
        with single_thread_blas():  # see gesture_apps.runtime.threads
            out = self._advance(self.features.push(a), end=None)
        self.latencies.append(time.perf_counter() - t0)
        return out

    @torch.no_grad()
    def flush(self) -> Motion:
        """The remaining frames: the stream's total is ``floor(seconds * 30)`` frames."""
        if self._done:
            raise GenerationError("flush: the stream was already flushed")
        a = np.zeros(0, np.float32)
        if self._resampler is not None:
            a = self._resampler.resample_chunk(a, last=True)
        feats = self.features.push(a) if a.size else np.zeros((0, 2), np.float32)
        feats = np.concatenate([feats, self.features.flush()])
        self._done = True
        total = self._feat_start + self._feats.shape[0] + feats.shape[0]
        with single_thread_blas():
            return self._advance(feats, end=int(total * FPS // SAMPLE_RATE))

    # ----- internals -----

    def _advance(self, feats: np.ndarray, end: int | None) -> Motion:
        """Take new final features; generate every window they allow; decode its frames.
        ``end``: the total frame count at flush (the audio past it is silence)."""
        self._feats = np.concatenate([self._feats, feats])
        heard = self._feat_start + self._feats.shape[0]  # samples with final features
        pieces = []
        while end is None or self.frames_out < end:
            E = self._lat_start + self._latents.shape[1]
            new = self.k + (self.s if E == 0 else 0)  # the first window also emits its seed
            horizon = (E + new + self.la) * self.f  # frames that must have been heard
            if end is None and heard * FPS // SAMPLE_RATE < horizon:  # not heard yet
                break
            pieces.append(self._step(E, new, horizon, heard, end))
        motion = concat_motion(pieces)
        # drop features and latents no later window or decode reads
        E = self._lat_start + self._latents.shape[1]
        keep_lat = max(0, min(E - self.s, self._decoded - self._left))
        if keep_lat > self._lat_start:
            self._latents = self._latents[:, keep_lat - self._lat_start :]
            self._lat_start = keep_lat
        keep = round(max(0, E - self.s) * self.f * SAMPLES_PER_FRAME)
        if keep > self._feat_start:
            self._feats = self._feats[keep - self._feat_start :]
            self._feat_start = keep
        return motion

    def _step(self, E: int, new: int, horizon: int, heard: int, end: int | None) -> Motion:
        """One window from latent ``E - seed_frames``; keeps ``new`` latents from ``E`` on.
        ``horizon``: the frames the window hears (``heard``: samples with features)."""
        gen, den = self.bundle.generator, self.bundle.generator.denoiser
        w0 = max(0, E - self.s)
        start = w0 * self.f  # first motion frame of the window
        a0, la = round(start * SAMPLES_PER_FRAME), round(self.L * SAMPLES_PER_FRAME)
        # the window hears up to its horizon (the same for any chunking); silence after it
        stop = min(heard, round(horizon * SAMPLES_PER_FRAME))
        window = np.zeros((la, 2), np.float32)
        seg = self._feats[a0 - self._feat_start : stop - self._feat_start]
        window[: max(0, min(la, seg.shape[0]))] = seg[:la]
        words = np.full(self.L, self.bundle.vocab.PAD, np.int64)
        if self.words:  # on the window's own clock
            t0 = start / FPS
            shifted = [(a - t0, b - t0, w) for a, b, w in self.words if b > t0]
            idx = frame_word_indices(shifted, self.L, FPS, self.bundle.vocab)
            n_known = max(0, min(self.L, horizon - start))
            words[:n_known] = idx[:n_known]

        dev = self.device
        feats = self._encode(window, words, max(0, stop - a0))
        kv = den.cross_kv(feats, n_frames=self.n)
        noise = torch.randn(1, self.n, self.D, generator=self._noise).to(dev)
        seed = None
        if self.s:
            if E == 0:
                first = getattr(gen, "first_seed", None)
                zeros = noise.new_zeros(1, self.s, self.D)
                seed = zeros if first is None else first[None].to(noise)
            else:
                seed = self._latents[:, E - self.s - self._lat_start :].to(dev)
        z = sample_window(den, kv, self._kv_null, seed, noise, self.steps, self.guidance)
        z = z.float().cpu()
        keep = z[:, E - w0 : E - w0 + new].clone()
        prov = self._provisional
        if prov is not None and prov.shape[1]:
            # the previous window already proposed these latents, continuing its own; blend
            # from its proposal to this window's over the chunk, so the seam is not a jump
            x = min(new, prov.shape[1])
            w = torch.arange(1, x + 1, dtype=keep.dtype)[None, :, None] / (x + 1)
            keep[:, :x] = (1 - w) * prov[:, :x] + w * keep[:, :x]
        self._provisional = z[:, E - w0 + new :]
        self._latents = torch.cat([self._latents, keep], dim=1)

        # decode the frames of the latents from _decoded to `target` between their left
        # context (emitted) and right context (this window's proposal past them); the last
        # `hold` latents wait for the next window, whose blend may still move them
        target = E + new if end is not None else E + new - self.hold
        c0 = max(self._lat_start, self._decoded - self._left)
        right = self._provisional[:, : self._right]
        ctx = torch.cat([self._latents[:, c0 - self._lat_start :], right], dim=1)
        first = (self._decoded - c0) * self.f
        last = (target - c0) * self.f
        if end is not None:
            last = min(last, first + end - self.frames_out)
        self._decoded = max(self._decoded, target)
        motion = decode_latents(
            self.bundle.tokenizer,
            self.bundle.normalizer,
            ctx.to(dev),
            last,
            start=first,
            init_xz=self._xz,
        )
        self.frames_out += motion.poses.shape[0]
        if motion.poses.shape[0]:
            self._xz = motion.trans[-1, [0, 2]].copy()
        return motion

    def _encode(self, window: np.ndarray, words: np.ndarray, heard: int) -> torch.Tensor:
        """The encoder on a window whose features are zero after sample ``heard``: the
        convolution steps that read only that silence equal a silent window's (computed once),
        so only the steps that read heard audio run, on the prefix they read (the stream's
        windows are about 70% silence). Equal to ``encoder(window, words)`` up to float
        rounding."""
        enc, dev = self.bundle.generator.encoder, self.device
        w = torch.from_numpy(words)[None].to(dev)
        if self._silent is None:
            self._silent = enc.encode_audio(torch.zeros(1, *window.shape, device=dev))
            spans = [enc.audio_span(j) for j in range(self._silent.shape[1])]
            self._spans = np.asarray(spans)  # (J, 2) first and last sample each step reads
        J = self._silent.shape[1]
        first = int(np.searchsorted(self._spans[:, 0], heard))  # the first step on silence only
        cut = int(self._spans[first - 1, 1]) + 1 if first else 0
        if first == J or cut >= window.shape[0]:
            return enc(torch.from_numpy(window)[None].to(dev), w)
        if first == 0:
            return enc.combine(self._silent, w)
        head = enc.encode_audio(torch.from_numpy(window[:cut])[None].to(dev))
        return enc.combine(torch.cat([head[:, :first], self._silent[:, first:]], dim=1), w)


@lru_cache(maxsize=8)
def decoder_context(tokenizer, D: int, factor: int) -> tuple[int, int]:
    """``(left, right)`` latent frames of context the tokenizer decoder needs for exact frames
    (its receptive field), measured once per tokenizer: perturb one latent in the middle of a
    random sequence and see which decoded frames move."""
    M = 64
    g = torch.Generator().manual_seed(0)
    dev = next(tokenizer.parameters()).device
    z = torch.randn(1, M, D, generator=g).to(dev)
    dz = z.clone()
    dz[:, M // 2] += torch.randn(D, generator=g).to(dev)
    with torch.no_grad():  # the decoder network itself: requantising could absorb the nudge
        a, b = tokenizer.decode(z, requantize=False), tokenizer.decode(dz, requantize=False)
    moved = torch.zeros(M * factor, dtype=torch.bool)
    for k in a:
        diff = (a[k] - b[k]).abs().amax(dim=-1)[0].cpu()
        moved[: diff.shape[0]] |= diff > 1e-6 * (1 + a[k].abs().max().item())
    frames = torch.nonzero(moved).flatten()
    if frames.numel() == 0:
        return 0, 0
    lo, hi = int(frames.min()), int(frames.max())
    if lo == 0 or hi == M * factor - 1:
        raise GenerationError(
            "the tokenizer's decoder sees more than 32 latent frames either side; it cannot stream"
        )
    return math.ceil((M // 2 * factor - lo) / factor), math.ceil((hi + 1) / factor - M // 2 - 1)


def _check_chunk(audio) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise GenerationError(f"audio chunk: expected float samples, found {a.dtype}")
    if a.ndim != 1:
        raise GenerationError(f"audio chunk: expected mono samples (n,), found shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise GenerationError("audio chunk: non-finite samples (NaN or inf)")
    return a


def concat_motion(pieces: list[Motion]) -> Motion:
    """Consecutive pieces of one motion (a stream's pushes) as one :class:`Motion`, with the
    first piece's ``fps`` and ``betas``; no pieces: 0 frames."""
    if not pieces:
        return Motion(np.zeros((0, 165), np.float32))
    if len(pieces) == 1:
        return pieces[0]
    return Motion(
        np.concatenate([m.poses for m in pieces]),
        np.concatenate([m.trans for m in pieces]),
        np.concatenate([m.expressions for m in pieces]),
        fps=pieces[0].fps,
        betas=pieces[0].betas,
    )


def stream_motion(stream: GestureStream, audio: np.ndarray, chunk: int) -> tuple[Motion, list]:
    """Push ``audio`` through ``stream`` in pieces of ``chunk`` samples and flush: the whole
    motion and the per-push compute seconds."""
    pieces = [stream.push(audio[i : i + chunk]) for i in range(0, audio.size, chunk)]
    pieces.append(stream.flush())
    return concat_motion(pieces), list(stream.latencies)


__all__ = ["GestureStream", "concat_motion", "decoder_context", "stream_motion"]
