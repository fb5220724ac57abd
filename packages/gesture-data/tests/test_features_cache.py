import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gesture_data import DataError
from gesture_data.cache import build_cache, cache_key, cached, open_cache
from gesture_data.features import audio as fa

SR = 16000
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def test_amplitude_envelope_equals_strided_max():
    g = np.random.default_rng(0)
    a = g.normal(size=5000).astype(np.float32)
    env = fa.amplitude_envelope(a, 1024)
    ref = np.lib.stride_tricks.sliding_window_view(np.abs(a), 1024).max(axis=1)
    np.testing.assert_array_equal(env[: ref.size], ref)
    assert np.all(env[ref.size :] == ref[-1])  # padded with the last value, as GestureLSM


def _clusters(times, gap=0.1):
    """First time of each run of onsets closer than ``gap`` (librosa's rule at 16 kHz
    reports consecutive frames of one strong rise)."""
    times = np.asarray(times)
    if times.size == 0:
        return times
    keep = np.concatenate([[True], np.diff(times) > gap])
    return times[keep]


def test_onsets_found_at_clicks():
    # decaying 1 kHz bursts at 0.5, 1.3, 2.1 s in faint noise
    g = np.random.default_rng(1)
    a = 0.001 * g.normal(size=3 * SR).astype(np.float32)
    t = np.arange(int(0.45 * SR)) / SR  # long enough to decay below the noise (no offset click)
    burst = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 20)).astype(np.float32)
    for s in (0.5, 1.3, 2.1):
        a[int(s * SR) : int(s * SR) + burst.size] += burst
    on = fa.onset_times(a, SR)
    # (the zero-padded start of the centred STFT makes an edge onset at ~0.1 s, as librosa)
    np.testing.assert_allclose(_clusters(on[on > 0.2]), [0.5, 1.3, 2.1], atol=0.04)
    oa = fa.onset_amplitude(a, SR)
    assert oa.shape == (3 * SR, 2) and oa[:, 1].sum() == len(on)
    np.testing.assert_array_equal(np.flatnonzero(oa[:, 1]), fa.onset_frames(a, SR) * 512)
    assert oa[int(0.51 * SR), 0] > 0.5 > oa[int(0.3 * SR), 0]


def test_onsets_match_librosa_on_real_speech(beat2_clip):
    """Recorded from librosa 0.11 ``onset_detect(y, sr=16000)`` on the fixture take."""
    f = fa.onset_frames(beat2_clip.audio, SR)
    assert len(f) == 358
    assert f[:12].tolist() == [48, 51, 52, 58, 59, 63, 64, 68, 74, 75, 85, 86]
    ref = fa.onset_amplitude(beat2_clip.audio, SR, reference_indexing=True)
    # the reference code writes frame numbers as sample indices: all within the first 2000
    assert np.flatnonzero(ref[:, 1]).max() == 1970
    librosa = pytest.importorskip("librosa")
    env = librosa.onset.onset_strength(y=beat2_clip.audio, sr=SR)
    np.testing.assert_allclose(fa.onset_strength(beat2_clip.audio, SR), env, atol=1e-4)
    np.testing.assert_array_equal(f, librosa.onset.onset_detect(y=beat2_clip.audio, sr=SR))


def test_log_mel_and_mfcc_alignment():
    # 2 s of silence, then 1 s of a 2 kHz tone: features switch at frame 60
    a = np.zeros(3 * SR, np.float32)
    a[2 * SR :] = np.sin(2 * np.pi * 2000 * np.arange(SR) / SR)
    lm = fa.log_mel(a, SR, fps=30)
    assert lm.shape == (90, 80)
    on = lm.max(axis=1) > -2
    assert not on[:58].any() and on[61:].all()
    fb = fa.mel_filterbank(SR, 1024, 80)
    assert lm[80].argmax() == fb[:, round(2000 / SR * 1024)].argmax()
    m = fa.mfcc(a, SR, fps=30, n_frames=75)
    assert m.shape == (75, 13) and np.isfinite(m).all()


def test_resample_length_and_tone():
    a = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    b = fa.resample(a, 48000, 16000)
    assert b.shape == (16000,) and b.dtype == np.float32
    spec = np.abs(np.fft.rfft(b))
    assert abs(spec.argmax() - 440) <= 1


def test_cache_build_open_and_key(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    k1 = cache_key([src], {"a": 1})
    assert k1 == cache_key([src], {"a": 1}) != cache_key([src], {"a": 2})
    src.write_bytes(b"abcd")
    assert cache_key([src], {"a": 1}) != k1
    calls = []

    def produce():
        calls.append(1)
        for i in range(3):
            yield f"c{i}", {"x": np.full((i + 2, 4), i, np.float32), "y": np.arange(i + 1)}

    c = cached(tmp_path / "cache", "toy", [src], {"a": 1}, produce)
    c2 = cached(tmp_path / "cache", "toy", [src], {"a": 1}, produce)
    assert len(calls) == 1
    assert isinstance(c2.streams["x"], np.memmap) and c2.streams["x"].shape == (9, 4)
    np.testing.assert_array_equal(c2.clip(2)["x"], np.full((4, 4), 2))
    np.testing.assert_array_equal(c2.clip(1)["y"], [0, 1])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [c.path.name]


def test_cache_failed_build_leaves_nothing(tmp_path):
    def produce():
        yield "a", {"x": np.zeros((2, 3))}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_cache(tmp_path / "entry", produce())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="inconsistent"):
        build_cache(tmp_path / "e2", [("a", {"x": np.zeros((2, 3))}), ("b", {"x": np.zeros(2)})])
    (tmp_path / "e3").mkdir()
    (tmp_path / "e3" / "index.json").write_text("{not json")
    with pytest.raises(DataError, match=r"index\.json"):
        open_cache(tmp_path / "e3")
    (tmp_path / "e3" / "index.json").write_text(json.dumps({"version": 0, "clips": []}))
    with pytest.raises(DataError, match="version"):
        open_cache(tmp_path / "e3")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_random_bytes_to_parsers_only_data_errors(tmp_path, data):
    from gesture_data.datasets.beat2 import load_audio, load_motion
    from gesture_data.datasets.textgrid import read_textgrid

    for name, fn in (("x.npz", load_motion), ("x.wav", load_audio), ("x.TextGrid", read_textgrid)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DataError):
            fn(p)


_tg_header = 'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {xmax}\n'


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ivs=st.lists(
        st.tuples(
            st.one_of(st.floats(-1, 5), st.just(float("nan"))),
            st.one_of(st.floats(-1, 5), st.just(float("nan"))),
            st.text(alphabet="ab \"'", max_size=4),
        ),
        max_size=5,
    ),
    name=st.sampled_from(["words", "phones", ""]),
)
def test_odd_textgrids_only_data_errors(tmp_path, ivs, name):
    from gesture_data.datasets.textgrid import read_textgrid

    body = _tg_header.format(xmax=5) + "tiers? <exists>\nsize = 1\nitem []:\n    item [1]:\n"
    body += f'        class = "IntervalTier"\n        name = "{name}"\n        xmin = 0\n'
    body += f"        xmax = 5\n        intervals: size = {len(ivs)}\n"
    for i, (s, e, t) in enumerate(ivs, 1):
        body += f"        intervals [{i}]:\n            xmin = {s}\n            xmax = {e}\n"
        body += f'            text = "{t}"\n'
    p = tmp_path / "odd.TextGrid"
    p.write_text(body)
    try:
        out = read_textgrid(p)
    except DataError:
        return
    for a, b in zip(out["words"], out["words"][1:], strict=False):
        assert b[0] >= a[1] - 1e-6


def test_cache_streams_in_small_chunks(tmp_path):
    g = np.random.default_rng(0)
    arrays = [
        (
            f"c{i}",
            {"x": g.normal(size=(7 + i, 3)).astype(np.float32), "w": np.arange(i, dtype=np.int64)},
        )
        for i in range(4)
    ]
    c = build_cache(tmp_path / "e", arrays, chunk_bytes=16)  # 1 row per copy step
    for i, (_, a) in enumerate(arrays):
        np.testing.assert_array_equal(c.clip(i)["x"], a["x"])
        np.testing.assert_array_equal(c.clip(i)["w"], a["w"])
    assert sorted(p.name for p in c.path.iterdir()) == ["index.json", "w.npy", "x.npy"]
