"""SG's 437-d audio features against SG's own code, and the restricted scaler reader.

``data/sg_audio_reference/`` holds the reference's output for a 3 s eSpeak clip (see its
README for the repo, commit, script and versions).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gesture_data.errors import DataError
from gesture_data.features import SG_AUDIO_DIM, SGScaler, read_sg_scaler, sg_audio_features
from gesture_data.features.sg_audio import SG_FEATURE_TABLE, sg_align

pytest.importorskip("librosa")

DATA = Path(__file__).parent / "data" / "sg_audio_reference"
GROUPS = {}
_start = 0
for _name, _width in SG_FEATURE_TABLE.items():
    GROUPS[_name] = slice(_start, _start + _width)
    _start += _width


@pytest.fixture(scope="module")
def clip():
    audio, sr = sf.read(DATA / "speech_3s_16k.wav", dtype="float32")
    return audio, sr


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(DATA / "reference_features.npz"))


@pytest.fixture(scope="module")
def raw(clip):
    return sg_audio_features(*clip)


def test_raw_features_match_reference(raw, reference):
    ref = reference["raw"]
    # 3 s at 16 kHz -> 11520 samples at 3840 Hz -> 1 + 11520 // 512 centred hops
    assert raw.shape == ref.shape == (1 + 11520 // 512, SG_AUDIO_DIM)
    assert raw.dtype == np.float32
    # Noise floor: the reference run on the float64 waveform minus its float32 run (recorded
    # with it), per feature group: mfcc 5.0e-5, delta 2.7e-5, chroma 5.3e-7, onset 5.1e-6,
    # tempogram 3.7e-8. Ours then rounds to float32 (<= 6e-8 relative). Measured here:
    # 0.0 for all groups but the tempogram (3.0e-8, the float32 rounding).
    floor = np.abs(reference["raw_f64_minus_f32"])
    for name, sl in GROUPS.items():
        tol = 2 * floor[:, sl].max() + 1.2e-7 * np.abs(ref[:, sl]).max()
        err = np.abs(raw[:, sl] - ref[:, sl]).max()
        assert err <= tol, (name, err, tol)
    # the features are not trivially flat: every group varies over the clip
    for name, sl in GROUPS.items():
        assert ref[:, sl].std(axis=0).max() > 1e-3, name


def test_int16_pcm_reads_like_the_file(raw):
    # the wav is 16-bit PCM: its integer samples give what soundfile's floats give (x / 2**15
    # is exact in float32), so the features are identical
    pcm, sr = sf.read(DATA / "speech_3s_16k.wav", dtype="int16")
    assert np.array_equal(sg_audio_features(pcm, sr), raw)


def test_scaled_features_match_reference(clip, reference):
    scaler = read_sg_scaler(DATA / "scaler_sklearn161.sav")
    assert scaler.dim == SG_AUDIO_DIM
    std = sg_audio_features(*clip, scaler=scaler)
    ref = reference["standardized"]
    # Noise floor: the recorded float64-minus-float32 input difference divided by the scale
    # (reference: 6.2e-6 max) plus float32 output rounding; measured here 1.4e-6.
    floor = (np.abs(reference["raw_f64_minus_f32"]) / scaler.scale).max()
    tol = 2 * floor + 1.2e-7 * np.abs(ref).max()
    assert np.abs(std - ref).max() <= tol
    # and the scaler really did something (the raw features are far from standardised)
    assert np.abs(reference["raw"] - ref).max() > 10


def test_rows_are_tokens_at_7_5_hz():
    # a burst at 1.6 s in silence: its onset lands in token row 1.6 * 60 / 8 = 12
    sr = 16000
    rng = np.random.default_rng(0)
    audio = np.zeros(int(2.5 * sr), np.float32)
    at = int(1.6 * sr)
    audio[at : at + 800] = rng.normal(0, 0.5, 800) * np.hanning(800)
    feats = sg_audio_features(audio, sr)
    # 2.5 s -> 9600 samples at 3840 Hz -> 1 + 9600 // 512 rows
    assert feats.shape == (1 + 9600 // 512, SG_AUDIO_DIM)
    onset = feats[:, GROUPS["onset_env"]][:, 0]
    # one hop of slack: librosa's onset envelope is a first difference (lag 1 frame)
    assert abs(int(onset.argmax()) - 12) <= 1, onset.round(2)


def test_bad_audio_is_refused():
    sr = 16000
    good = np.zeros(sr, np.float32)
    with pytest.raises(DataError, match="not mono"):
        sg_audio_features(np.zeros((sr, 2), np.float32), sr)
    bad = good.copy()
    bad[10] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        sg_audio_features(bad, sr)
    with pytest.raises(DataError, match="too short"):
        sg_audio_features(good[:1000], sr)
    with pytest.raises(DataError, match="ds_rate"):
        sg_audio_features(good, sr, fps=60, ds_rate=7)


def test_align_crops_like_the_reference():
    feats = np.arange(10 * 3, dtype=float).reshape(10, 3)
    # motion longer than 8 x rows: motion is cut to 80 frames; shorter: rows to T // 8
    m, f = sg_align(np.zeros((85, 4)), feats)
    assert m.shape == (80, 4) and np.array_equal(f, feats)
    m, f = sg_align(np.zeros((61, 4)), feats)
    assert m.shape == (56, 4) and np.array_equal(f, feats[:7])
    with pytest.raises(DataError, match="nothing left"):
        sg_align(np.zeros((5, 4)), feats)


# --- scaler files ------------------------------------------------------------------------
class _FakeScaler:
    """Same pickled layout as sklearn's StandardScaler (class path, state dict)."""

    def __init__(self, mean, scale):
        self.__dict__.update(
            with_mean=True,
            with_std=True,
            copy=True,
            n_features_in_=len(mean),
            n_samples_seen_=np.int64(100),
            mean_=mean,
            var_=scale**2,
            scale_=scale,
            _sklearn_version="1.6.1",
        )


class _SklearnNamePickler(pickle._Pickler):
    """Writes ``_FakeScaler`` under sklearn's module/name, as sklearn's own pickle would."""

    def save_global(self, obj, name=None):
        if obj is _FakeScaler:
            self.save("sklearn.preprocessing._data")
            self.save("StandardScaler")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _fake_params(dim=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=dim) * 10, rng.uniform(0.1, 5.0, size=dim)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_scaler_pickle_without_sklearn(tmp_path, protocol):
    mean, scale = _fake_params()
    buf = io.BytesIO()
    _SklearnNamePickler(buf, protocol=protocol).dump(_FakeScaler(mean, scale))
    path = tmp_path / "audio_feature_scaler.sav"
    path.write_bytes(buf.getvalue())
    s = read_sg_scaler(path)
    assert np.array_equal(s.mean, mean) and np.array_equal(s.scale, scale)
    x = np.random.default_rng(1).normal(size=(5, 7))
    # float64 round trip: a few ulps of |x * scale + mean| (measured 3.6e-15)
    assert np.allclose(s.inverse_transform(s.transform(x)), x, rtol=0, atol=1e-13)
    assert np.allclose(s.transform(x), (x - mean) / scale, rtol=0, atol=0)


def test_scaler_files_written_by_sklearn_and_joblib(tmp_path):
    sklearn = pytest.importorskip("sklearn.preprocessing")
    joblib = pytest.importorskip("joblib")
    rng = np.random.default_rng(2)
    data = rng.normal(size=(50, 9)) * rng.uniform(0.5, 3, 9) + 4
    data[:, 3] = 1.0  # zero variance: sklearn stores scale 1
    fitted = sklearn.StandardScaler().fit(data)
    cases = {
        "joblib.sav": lambda p: joblib.dump(fitted, p),
        "pickle5.sav": lambda p: p.write_bytes(pickle.dumps(fitted, protocol=5)),
        "pickle2.sav": lambda p: p.write_bytes(pickle.dumps(fitted, protocol=2)),
    }
    for name, write in cases.items():
        p = tmp_path / name
        write(p)
        s = read_sg_scaler(p)
        assert np.array_equal(s.mean, fitted.mean_), name
        assert np.array_equal(s.scale, fitted.scale_), name
        assert np.array_equal(s.transform(data), fitted.transform(data)), name
    no_mean = sklearn.StandardScaler(with_mean=False).fit(data)
    joblib.dump(no_mean, tmp_path / "no_mean.sav")
    s = read_sg_scaler(tmp_path / "no_mean.sav")
    assert np.array_equal(s.transform(data), no_mean.transform(data))
    # the reference's own file (sklearn 1.6.1, joblib.dump) reads the same through both
    ref_path = DATA / "scaler_sklearn161.sav"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's InconsistentVersionWarning (1.6.1 file)
        loaded = joblib.load(ref_path)
    s = read_sg_scaler(ref_path)
    assert np.array_equal(s.mean, loaded.mean_) and np.array_equal(s.scale, loaded.scale_)
    joblib.dump(fitted, tmp_path / "compressed.sav", compress=3)
    with pytest.raises(DataError, match=r"compressed\.sav.*not an uncompressed pickle"):
        read_sg_scaler(tmp_path / "compressed.sav")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_scaler_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.sav"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=4))
    with pytest.raises(DataError) as e:
        read_sg_scaler(path)
    msg = str(e.value)
    assert "evil.sav" in msg and "system" in msg and "refusing" in msg
    assert not marker.exists()
    # a global hidden inside an allowed object's state is refused as well
    mean, scale = _fake_params()
    fake = _FakeScaler(mean, scale)
    fake.__dict__["hook"] = _Evil(marker)
    buf = io.BytesIO()
    _SklearnNamePickler(buf, protocol=4).dump(fake)
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="refusing"):
        read_sg_scaler(path)
    assert not marker.exists()


def test_truncated_or_wrong_scaler_file(tmp_path):
    good = (DATA / "scaler_sklearn161.sav").read_bytes()
    for cut in (len(good) // 3, len(good) - 100, len(good) - 1):
        p = tmp_path / f"cut{cut}.sav"
        p.write_bytes(good[:cut])
        with pytest.raises(DataError, match=rf"cut{cut}\.sav.*(corrupt|truncated)"):
            read_sg_scaler(p)
    with pytest.raises(DataError, match="missing"):
        read_sg_scaler(tmp_path / "nope.sav")
    p = tmp_path / "list.sav"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"list\.sav.*not a StandardScaler"):
        read_sg_scaler(p)
    with pytest.raises(DataError, match="scale"):
        SGScaler(np.zeros(3), np.array([1.0, 0.0, 1.0]))
