"""`gesture train omniges-audio` and `gesture train omniges-text` end to end at the tiny presets:
export, loading by `gesture train omniges`, exact resume, the real-size presets, bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gesture_apps import main
from gesture_apps.runtime import load_config
from gesture_apps.systems.omniges import audio_recipe
from gesture_apps.systems.omniges.audio import AudioCodec, audioldm2_mel
from gesture_apps.systems.omniges.audio_recipe import AudioCodecRecipeConfig
from gesture_apps.systems.omniges.audio_train import vocoder_loss
from gesture_apps.systems.omniges.text_recipe import TextVAERecipeConfig, window_texts
from gesture_apps.systems.omniges.text_vae import TextVAE
from gesture_data.datasets.synthetic import make_corpus, sentences

STEPS = ["--no-progress", "train.max_steps=4", "train.log_every=1"]
AUDIO = ["train", "omniges-audio", "--preset", "omniges_audio/tiny", *STEPS]
TEXT = ["train", "omniges-text", "--preset", "omniges_text/tiny", *STEPS]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def history(run: Path) -> list[dict]:
    state = run / "checkpoints" / "step_0000004" / "trainer_state.json"
    return json.loads(state.read_text())["history"]


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """Four uninterrupted steps of the tiny audio codec (shared to keep the suite fast)."""
    out = tmp_path_factory.mktemp("audio")
    assert main([*AUDIO, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    assert main([*TEXT, "--out", str(out)]) == 0
    return out


# ----- audio ---------------------------------------------------------------------------------


def test_audio_trains_both_models_and_exports_a_scaled_codec(audio_run):
    rows = history(audio_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "vae_l1", "kl", "vocoder"} <= set(rows[0])
    assert list((audio_run / "tensorboard").glob("events.out.tfevents.*"))

    codec = AudioCodec.from_pretrained(audio_run / "audio_codec")
    # the weights exported are those of the last checkpoint (the live, un-averaged model)
    ckpt = weights(audio_run / "checkpoints" / "step_0000004")
    for k, v in codec.vae.state_dict().items():
        assert torch.equal(v, ckpt[f"codec.vae.{k}"]), k
    # the training segments, rebuilt from the corpus: 12 segments of 0.64 s of two 4 s clips
    waves = [c.audio for c in make_corpus(2, 4.0, 0)]
    seg = np.stack([w[s : s + 10240] for w in waves for s in range(0, w.size - 10239, 10240)])
    seg = torch.from_numpy(seg)
    assert len(seg) == 12
    mel = audioldm2_mel(seg)
    # both models learn: the VAE's mel L1 (posterior mean) and the vocoder's loss on these
    # segments against the same codec before its first step. Measured after 4 steps at seeds
    # 0 / 1: mel L1 2.45 -> 2.21 / 2.46 -> 2.09, vocoder 10.51 -> 9.25 / 8.96 (ratios <= 0.90)
    cfg = load_config(AudioCodecRecipeConfig, "omniges_audio/tiny")
    init = audio_recipe.prepare(cfg, None, progress=False).objective.codec.eval()
    with torch.no_grad():
        err = {}
        for name, c in (("init", init), ("trained", codec)):
            rec = c.vae.decode(c.vae.encode(mel).latent_dist.mean).sample
            err[name] = ((rec - mel).abs().mean().item(), vocoder_loss(c.vocoder, seg, mel).item())
    assert err["trained"][0] < 0.95 * err["init"][0], err
    assert err["trained"][1] < 0.95 * err["init"][1], err
    # scaling_factor = 1 / std of the posterior means of the training segments
    with torch.no_grad():
        z = codec.encode(seg)
    assert z.shape == (12, 8, 16, 16)
    # float32 noise floor of batching the encoder differently (chunks of 8 in the export, 12
    # here): measured |std - 1| <= 6e-8 at seeds 0 / 1; 1e-5 leaves room for other BLAS builds
    assert abs(z.std().item() - 1.0) < 1e-5
    assert codec.scaling_factor != 1.0  # it was set, not left at the untrained default
    with torch.no_grad():
        wave = codec.decode_audio(z[:1], num_samples=10240)
    assert wave.shape == (1, 10240) and torch.isfinite(wave).all()


def test_audio_resume_matches_the_straight_run(audio_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*AUDIO, "--out", str(out), "--steps", "2"]) == 0
    assert "step 2/4" in capsys.readouterr().out
    assert main(["train", "omniges-audio", "--resume", str(out), "--no-progress"]) == 0
    assert "step 4/4" in capsys.readouterr().out
    resumed, straight = (weights(r / "checkpoints" / "step_0000004") for r in (out, audio_run))
    assert resumed.keys() == straight.keys()
    for k in straight:  # posterior draws, data order: every one repeats exactly
        assert torch.equal(resumed[k], straight[k]), k
    assert history(out) == history(audio_run)
    a, b = (json.loads((r / "audio_codec/vae/config.json").read_text()) for r in (out, audio_run))
    assert a["scaling_factor"] == b["scaling_factor"]


# ----- text ----------------------------------------------------------------------------------


def test_text_trains_and_exports_a_loadable_vae(text_run):
    rows = history(text_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # teacher-forced CE at lr 2e-3 (warm-up 2): measured 6.33 -> 5.41 in 4 steps
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3
    vae = TextVAE.from_pretrained(text_run / "text_vae")
    ckpt = weights(text_run / "checkpoints" / "step_0000004")
    mine = vae.state_dict()
    # safetensors stores GPT-2's tied input / output embedding once
    assert {f"vae.{k}" for k in mine} - set(ckpt) <= {"vae.decoder_lm.transformer.wte.weight"}
    for k, v in ckpt.items():
        assert torch.equal(mine[k.removeprefix("vae.")], v), k
    texts = sentences(3, seed=0)  # training sentences: the tokenizer covers their words
    z = vae.encode(texts)
    assert z.shape == (3, 8, 32) and torch.isfinite(z).all()
    out = vae.decode(z)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    # the tokenizer fitted on the run's sentences is exported with it: exact round trip
    ids = vae.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert vae.tokenizer.decode(ids) == texts[0]


def test_text_resume_matches_the_straight_run(text_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TEXT, "--out", str(out), "--steps", "2"]) == 0
    assert main(["train", "omniges-text", "--resume", str(out), "--no-progress"]) == 0
    assert "step 4/4" in capsys.readouterr().out
    resumed, straight = (weights(r / "checkpoints" / "step_0000004") for r in (out, text_run))
    assert resumed.keys() == straight.keys()
    for k in straight:  # latent noise and data order repeat exactly
        assert torch.equal(resumed[k], straight[k]), k
    assert history(out) == history(text_run)


# ----- what `gesture train omniges` reads ----------------------------------------------------


def test_omniges_loads_the_run_folders(audio_run, text_run):
    """`--audio-codec` / `--text-vae` may name the run folder or its export: both load the
    same models (AudioCodec / TextVAE.from_pretrained, which `train omniges` calls)."""
    a, b = (
        AudioCodec.from_pretrained(audio_run),
        AudioCodec.from_pretrained(audio_run / "audio_codec"),
    )
    assert a.scaling_factor == b.scaling_factor
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    t, u = TextVAE.from_pretrained(text_run), TextVAE.from_pretrained(text_run / "text_vae")
    for (k, v), w in zip(t.state_dict().items(), u.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_omniges_trains_on_the_exported_codecs(audio_run, text_run, tmp_path, capsys):
    """One step of `gesture train omniges` given the two run folders (and a 1-step tokenizer):
    the codecs encode its windows and the bundle is written."""
    tok = tmp_path / "tok"
    argv = ["--no-progress", "train.max_steps=1"]
    assert main(["train", "tokenizer", "--preset", "tokenizer/tiny", *argv, "--out", str(tok)]) == 0
    out = tmp_path / "omniges"
    argv += ["--tokenizer", str(tok), "--audio-codec", str(audio_run), "--text-vae", str(text_run)]
    argv += ["data.num_clips=2", "--out", str(out)]
    assert main(["train", "omniges", "--preset", "omniges/tiny", *argv]) == 0
    assert "omniges: step 1/1" in capsys.readouterr().out
    assert (out / "omniges" / "manifest.json").is_file()


# ----- presets, real data, bad input ---------------------------------------------------------


def test_real_size_presets_build():
    cfg = load_config(AudioCodecRecipeConfig, "omniges_audio/audioldm2")
    assert cfg.model.size == "audioldm2" and cfg.data.segment == 20480
    with torch.device("meta"):  # no memory, no init time: the architecture only
        codec = AudioCodec.audioldm2()
    vae, voc = codec.vae.config, codec.vocoder.config
    assert tuple(vae.block_out_channels) == (128, 256, 512) and vae.latent_channels == 8
    assert voc.upsample_initial_channel == 1024 and list(voc.upsample_rates) == [5, 4, 2, 2, 2]
    n_vae = sum(p.numel() for p in codec.vae.parameters())
    n_voc = sum(p.numel() for p in codec.vocoder.parameters())
    # measured: 55.38 M (VAE) and 55.26 M (vocoder)
    assert 50e6 < n_vae < 60e6 and 50e6 < n_voc < 60e6, (n_vae, n_voc)
    text = load_config(TextVAERecipeConfig, "omniges_text/default")
    assert text.model.size == "default" and text.train.batch_size == 64


def test_window_texts_takes_the_words_whose_middle_is_inside():
    words = [(0.1, 0.5, "a"), (0.9, 1.3, "b"), (1.9, 2.4, "c")]
    assert window_texts(words, 2.5, 1.0, 1.0) == ["a", "b"]  # c's middle 2.15 is past 2.0
    assert window_texts(words, 2.5, 2.0, 0.5) == ["a b", "b c"]


def _beat2() -> Path:
    root = Path(__file__).resolve().parents[3]
    base = Path(os.environ.get("GESTURE_FIXTURES", root.parent / "shared" / "fixtures"))
    return base / "beat2"


@pytest.mark.skipif(not (_beat2() / "wave16k").is_dir(), reason="no BEAT2 fixture")
def test_both_train_on_the_real_beat2_fixture(tmp_path, capsys):
    data = ["--data", f"beat2:{_beat2()}", "data.split=test", "train.max_steps=1"]
    assert main([*AUDIO, *data, "--out", str(tmp_path / "a")]) == 0
    assert main([*TEXT, *data, "--out", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.count("step 1/1") == 2
    codec = AudioCodec.from_pretrained(tmp_path / "a")
    assert codec.scaling_factor > 0
    vae = TextVAE.from_pretrained(tmp_path / "t")
    assert vae.encode(["so i think"]).shape == (1, 8, 32)


@pytest.mark.parametrize("system", ["omniges-audio", "omniges-text"])
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--data", "beat2:MISSING"], "not a BEAT2 folder"),
        (["train.batch_size=x"], "expected an integer"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, system, extra, message):
    extra = [f"beat2:{tmp_path / 'gone'}" if a == "beat2:MISSING" else a for a in extra]
    preset = [] if "--preset" in extra else ["--preset", f"{system.replace('-', '_')}/tiny"]
    out = tmp_path / "out"
    argv = ["train", system, *preset, "--no-progress", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gesture: error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert not out.exists()
