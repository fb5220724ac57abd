"""GestureStream on the demo's one-step student: any chunking gives the same motion, the
mechanism reproduces offline generation window for window, seams look like other frames, the
stream stays close to offline generation, and bad or broken input is handled."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

import gesture_apps.systems.gesturelsm.pipeline as pipeline
import gesture_apps.systems.gesturelsm.streaming as streaming
from gesture_apps.data.motion import joints_approx
from gesture_apps.errors import GenerationError
from gesture_apps.systems.gesturelsm.export import load_lsm
from gesture_apps.systems.gesturelsm.pipeline import generate_motion
from gesture_apps.systems.gesturelsm.streaming import GestureStream, concat_motion, stream_motion
from gesture_data.datasets.synthetic import make_clip
from gesture_data.features.audio import onset_amplitude

DEMO = Path(__file__).resolve().parent / "data" / "demo_student"
SR = 16000


@pytest.fixture(scope="module")
def bundle():
    return load_lsm(DEMO)


@pytest.fixture(scope="module")
def clips():
    """Synthetic speech the demo model never saw (it trained on clips 0-31), with its word
    timings: 200-203 to choose margins on, 300-303 to assert them on."""
    return {i: make_clip(i, seconds=8.0) for i in (*range(200, 204), *range(300, 304))}


def _pieces(stream, audio, sizes):
    out, i = [], 0
    for n in sizes:
        out.append(stream.push(audio[i : i + n]))
        i += n
        if i >= audio.size:
            break
    if i < audio.size:
        out.append(stream.push(audio[i:]))
    out.append(stream.flush())
    return out


def test_any_chunking_gives_the_same_motion(bundle, clips):
    audio = clips[300].audio
    ref, lat = stream_motion(GestureStream(bundle), audio, 8000)
    assert ref.poses.shape == (int(audio.size * 30 // SR), 165)
    assert np.isfinite(ref.poses).all() and np.isfinite(ref.trans).all()
    assert len(lat) == 16 and all(t > 0 for t in lat)  # one per push
    rng = np.random.default_rng(0)
    # 10 ms .. 2 s pieces, a single sample and empty pushes
    sizes = [1, 0, 160, *rng.integers(160, 32000, size=40).tolist()]
    other = concat_motion(_pieces(GestureStream(bundle), audio, sizes))
    np.testing.assert_array_equal(other.poses, ref.poses)
    np.testing.assert_array_equal(other.trans, ref.trans)


def test_guided_multistep_sampling_and_words_stream_too(bundle, clips):
    """A teacher-like setting (2 steps, guidance 2: the batched null-condition branch) with
    words known in advance: still chunking-invariant, and the words reach the model."""
    audio = clips[301].audio
    words = [(0.5, 1.0, "hello"), (1.2, 2.0, "world"), (3.0, 3.5, "yes")]
    kw = dict(steps=2, guidance=2.0, words=words)
    a, _ = stream_motion(GestureStream(bundle, **kw), audio, 8000)
    b = concat_motion(_pieces(GestureStream(bundle, **kw), audio, [3000, 12345, 20000, 777] * 10))
    np.testing.assert_array_equal(a.poses, b.poses)
    c, _ = stream_motion(GestureStream(bundle, steps=2, guidance=2.0), audio, 8000)
    assert np.abs(a.poses - c.poses).max() > 1e-3


def test_with_the_offline_hop_the_stream_generates_the_offline_windows(bundle, clips, monkeypatch):
    """chunk = the offline hop, no margin, offline features: every window the stream samples
    is the offline window (same seed latents, same noise drawn in order, same condition)."""
    audio = clips[302].audio
    windows = {"offline": [], "stream": []}
    sample = pipeline.sample_window

    def record(key):
        def fn(*args, **kwargs):
            z = sample(*args, **kwargs)
            windows[key].append(z.clone())
            return z

        return fn

    class Offline:  # the offline features, released as the audio arrives
        lookahead = 0

        def __init__(self, feats):
            self.feats, self.i = feats, 0

        def push(self, x):
            self.i += x.size
            return self.feats[self.i - x.size : self.i]

        def flush(self):
            return self.feats[self.i :]

    monkeypatch.setattr(pipeline, "sample_window", record("offline"))
    generate_motion(bundle, audio, seed=3)
    monkeypatch.setattr(streaming, "sample_window", record("stream"))
    n, s, f = 8, bundle.generator.seed_frames, bundle.spec["factor"]
    stream = GestureStream(
        bundle, chunk_s=(n - s) * f / 30, lookahead_s=0, seed=3,
        feature_stream=Offline(onset_amplitude(audio)),
    )  # fmt: skip
    stream_motion(stream, audio, 4000)
    off, st = windows["offline"], windows["stream"]
    # 240 frames = 60 latents: 1 + ceil((60 - 8) / 6) windows
    assert len(off) == 10 and len(st) == len(off)
    # offline encodes 4 windows per batch, the stream one: float32 rounding of the batched
    # matmuls differs by up to 4.8e-7 (measured); a wrong seed or noise moves latents by ~1
    for a, b in zip(off, st, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def _seam_stats(bundle, clip):
    """Joint speed and acceleration at the latent-frame boundaries (the decoder's 4-frame
    phase), split into chunk seams and boundaries inside chunks."""
    stream = GestureStream(bundle, words=clip.words)
    pieces = _pieces(stream, clip.audio, [8000] * 16)
    cuts = set(np.cumsum([p.poses.shape[0] for p in pieces if p.poses.shape[0]])[:-1].tolist())
    m = concat_motion(pieces)
    j = joints_approx(m.poses, m.trans)
    v = np.linalg.norm(np.diff(j, axis=0), axis=-1).mean(-1)
    a = np.linalg.norm(np.diff(j, 2, axis=0), axis=-1).mean(-1)
    out = {"v": ([], []), "a": ([], [])}
    for t in range(stream.f, j.shape[0] - 1, stream.f):
        out["v"][t in cuts].append(v[t - 1])
        out["a"][t in cuts].append(a[t - 1])
    return out


def test_chunk_seams_move_like_other_frames(bundle, clips):
    """Seam / inside ratios measured on the margin clips 200-203: speed 0.81, acceleration
    0.76 (Mann-Whitney p 0.55 / 0.47); on 300-303: 0.89 / 0.83 (p 0.62 / 0.66). Without the
    held latents the seams' acceleration is 2.05x the rest (p 1e-14), which this catches."""
    pooled = {"v": ([], []), "a": ([], [])}
    for i in range(300, 304):
        for k, (inside, seam) in _seam_stats(bundle, clips[i]).items():
            pooled[k][0].extend(inside)
            pooled[k][1].extend(seam)
    for k, (inside, seam) in pooled.items():
        assert len(seam) > 40
        ratio = np.mean(seam) / np.mean(inside)
        assert 0.65 < ratio < 1.5, (k, ratio)
        assert mannwhitneyu(seam, inside).pvalue > 0.05, k


def _mean_joint_distance(a, b):
    ja, jb = joints_approx(a.poses, a.trans), joints_approx(b.poses, b.trans)
    return float(np.linalg.norm(ja - jb, axis=-1).mean())


def test_the_stream_stays_close_to_offline_generation(bundle, clips):
    """Metric: mean joint distance (m) to offline generation of the same recording and words
    with the same seed. Bound: 1.15x the distance between two offline generations with
    different seeds (the model's own sampling spread). Measured on the margin clips 200-203:
    stream 0.041 m, other seed 0.044 m (ratio 0.93); another recording's motion is 0.059 m
    away (1.34x), a stream out of step with its audio would be too."""
    d_stream, d_seed = [], []
    for i in range(300, 304):
        audio, words = clips[i].audio, clips[i].words
        off0 = generate_motion(bundle, audio, words, seed=0)
        off1 = generate_motion(bundle, audio, words, seed=1)
        streamed, _ = stream_motion(GestureStream(bundle, seed=0, words=words), audio, 8000)
        d_stream.append(_mean_joint_distance(streamed, off0))
        d_seed.append(_mean_joint_distance(off1, off0))
    assert np.mean(d_stream) < 1.15 * np.mean(d_seed), (d_stream, d_seed)


def test_silence_a_dropped_chunk_and_another_sample_rate(bundle, clips):
    audio = clips[303].audio
    # silence: the right number of finite frames
    m, _ = stream_motion(GestureStream(bundle), np.zeros(3 * SR, np.float32), 8000)
    assert m.poses.shape[0] == 90 and np.isfinite(m.poses).all()

    # a dropped chunk (samples 16000-24000 never arrive): the gap is silence, time stays
    # aligned with the audio clock, and the motion carries on without a jump
    s = GestureStream(bundle)
    pieces = [s.push(audio[i : i + 8000], at=i) for i in range(0, audio.size, 8000) if i != 16000]
    pieces.append(s.flush())
    gapped = concat_motion(pieces)
    assert s.gaps == 1 and gapped.poses.shape[0] == int(audio.size * 30 // SR)
    silent = audio.copy()
    silent[16000:24000] = 0
    same, _ = stream_motion(GestureStream(bundle), silent, 8000)
    np.testing.assert_array_equal(gapped.poses, same.poses)
    # a repeated chunk is dropped, not played twice
    s = GestureStream(bundle)
    first = concat_motion([s.push(audio[:8000], at=0), s.push(audio[:8000], at=0)])
    rest = concat_motion([s.push(audio[8000:], at=8000), s.flush()])
    ref, _ = stream_motion(GestureStream(bundle), audio, 8000)
    np.testing.assert_array_equal(np.concatenate([first.poses, rest.poses]), ref.poses)

    # 44.1 kHz input is resampled on the fly: close to the 16 kHz stream (measured mean joint
    # distance 0.0 m on clip 200: the tokenizer's codes absorb the resampler's rounding; a
    # different recording is 0.059 m away)
    from scipy.signal import resample_poly

    hi = resample_poly(audio, 441, 160).astype(np.float32)
    s = GestureStream(bundle, sample_rate=44100)
    m44 = concat_motion(_pieces(s, hi, [22050] * 20))
    assert m44.poses.shape[0] == ref.poses.shape[0]
    assert _mean_joint_distance(m44, ref) < 0.02


def test_bad_input_is_refused(bundle):
    s = GestureStream(bundle)
    with pytest.raises(GenerationError, match="non-finite"):
        s.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(GenerationError, match="mono"):
        s.push(np.zeros((100, 2), np.float32))
    with pytest.raises(GenerationError, match="at must be"):
        s.push(np.zeros(10, np.float32), at=-1)
    s.flush()
    with pytest.raises(GenerationError, match="flushed"):
        s.push(np.zeros(10, np.float32))
    for kw in ({"chunk_s": float("nan")}, {"lookahead_s": -1}, {"sample_rate": 0}):
        with pytest.raises(GenerationError):
            GestureStream(bundle, **kw)


def test_numpy_blas_runs_on_one_thread_inside_a_push(bundle, clips):
    """numpy's spinning OpenBLAS workers took the cores of torch's threads (a 2-thread stream
    ran 1.3-2x slower); push and flush keep numpy's BLAS on one thread and give it back after."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    outside = blas_threads()
    seen = []

    class Recording:
        lookahead = 0

        def push(self, x):
            seen.append(blas_threads())
            return onset_amplitude(x) if x.size else np.zeros((0, 2), np.float32)

        def flush(self):
            seen.append(blas_threads())
            return np.zeros((0, 2), np.float32)

    stream = GestureStream(bundle, feature_stream=Recording())
    stream.push(np.zeros(8000, np.float32))
    stream.flush()
    assert seen and all(n and set(n) == {1} for n in seen)
    assert blas_threads() == outside


def test_the_encoder_runs_only_on_heard_audio(bundle):
    """A stream's window is silent after the audio heard so far; the encoder steps that read
    only silence are a silent window's, so only the rest run. Equal to the whole encoder for
    any heard length (measured up to 1.3e-7 of the features' scale at the paper size; bound
    1e-5)."""
    stream = GestureStream(bundle)
    enc = bundle.generator.encoder
    la = round(stream.L * streaming.SAMPLES_PER_FRAME)
    rng = np.random.default_rng(0)
    words = rng.integers(0, len(bundle.vocab), stream.L)
    for heard in (0, 1, 3000, la // 3, la // 2, la - 5, la):
        window = np.zeros((la, 2), np.float32)
        window[:heard] = rng.random((heard, 2), dtype=np.float32)
        with torch.no_grad():
            want = enc(torch.from_numpy(window)[None], torch.from_numpy(words)[None])
            got = stream._encode(window, words, heard)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * want.abs().max(), heard
