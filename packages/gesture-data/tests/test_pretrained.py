import numpy as np
import pytest
import torch

from gesture_data import DataError
from gesture_data.features.pretrained import SpeechEncoder


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model = Wav2Vec2Model(cfg).eval()
    d = tmp_path_factory.mktemp("w2v")
    model.save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(d)
    return d, model


def test_local_encoder_frame_aligned(tiny_wav2vec2):
    d, model = tiny_wav2vec2
    enc = SpeechEncoder(d)
    g = np.random.default_rng(0)
    audio = g.normal(0, 0.1, 32000).astype(np.float32)  # 2 s
    f = enc(audio, 16000, fps=30)
    assert f.shape == (60, 32) and enc.dim == 32 and np.isfinite(f).all()
    # matches the model's own last hidden state at the nearest encoder frame (50 Hz)
    x = torch.from_numpy((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]
    with torch.no_grad():
        h = model(x).last_hidden_state[0].numpy()
    assert h.shape[0] == 99
    # encoder frame k is centred at (k + 0.5) * 2 s / 99; motion frame 30 (t = 1 s) lies
    # between encoder frames 49 and 50
    k = int(np.floor(1.0 * 99 / 2 - 0.5))
    assert k == 49
    lo, hi = np.minimum(h[k], h[k + 1]), np.maximum(h[k], h[k + 1])
    assert np.all(f[30] >= lo - 1e-4) and np.all(f[30] <= hi + 1e-4)
    np.testing.assert_allclose(enc(audio, 16000, fps=30), f)  # deterministic
    assert enc(audio[::2].copy(), 8000, fps=30, n_frames=45).shape == (45, 32)


def test_encoder_errors(tmp_path):
    with pytest.raises(DataError, match=r"config\.json"):
        SpeechEncoder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DataError):
        SpeechEncoder(tmp_path)
