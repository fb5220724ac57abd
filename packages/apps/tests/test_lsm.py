"""`gesture train lsm` and `gesture generate` end to end at the tiny size, resume, bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from gesture_apps import main
from gesture_apps.data.motion import Motion
from gesture_apps.systems.gesturelsm.pipeline import generate, window_plan
from gesture_data.datasets.beat2 import Vocabulary, load_motion
from gesture_data.datasets.textgrid import write_textgrid


def fixtures_root() -> Path:
    env = os.environ.get("GESTURE_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"


BEAT2 = fixtures_root() / "beat2"
SCOTT_WAV = BEAT2 / "wave16k" / "2_scott_0_1_1.wav"
SCOTT_TG = BEAT2 / "textgrid" / "2_scott_0_1_1.TextGrid"


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gesture: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A tiny tokenizer trained by the tokenizer recipe (2 steps is enough to be a tokenizer)."""
    root = tmp_path_factory.mktemp("lsm")
    cache = root / "cache"
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    argv += ["--out", str(root / "tok"), "train.max_steps=2", f"data.cache_dir={cache}"]
    assert main(argv) == 0
    return root


def lsm_argv(root, out, *extra):
    return [
        "train",
        "lsm",
        "--preset",
        "gesturelsm/tiny",
        "--tokenizer",
        str(root / "tok"),
        "--no-progress",
        "--out",
        str(out),
        "train.max_steps=4",
        "train.log_every=2",
        f"data.cache_dir={root / 'cache'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def lsm_run(tiny_tokenizer):
    out = tiny_tokenizer / "lsm"
    assert main(lsm_argv(tiny_tokenizer, out)) == 0
    return out


def test_trains_and_exports_a_generator(lsm_run, capsys):
    export = lsm_run / "lsm"
    for name in ("config.json", "model.safetensors", "model_ema.safetensors"):
        assert (export / "generator" / name).is_file(), name
    assert (export / "vocabulary" / "vocab.txt").is_file() and (export / "manifest.json").is_file()
    assert (export / "normalizer" / "normalizer.npz").is_file()
    assert (export / "tokenizer").is_dir()
    spec = json.loads((export / "generator" / "config.json").read_text())
    assert spec["parts"] == ["upper", "hands", "lower"] and spec["pose_length"] == 32
    assert spec["factor"] == 4 and spec["denoiser"]["max_cond_len"] == 8
    ckpt = lsm_run / "checkpoints" / "step_0000004"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    losses = [row["loss"] for row in state["history"]]
    assert [row["step"] for row in state["history"]] == [2, 4]
    assert all(np.isfinite(losses)) and all("flow" in r for r in state["history"])
    assert (ckpt / "lsm" / "generator" / "model.safetensors").is_file()
    weights = load_file(str(ckpt / "model.safetensors"))
    # only the generator is trained: the frozen tokenizers are not in the trainer's model
    assert weights and all(k.startswith("generator.") for k in weights)
    assert not list(lsm_run.rglob("*.tmp"))


def test_resume_after_interruption_matches_the_straight_run(tiny_tokenizer, lsm_run, capsys):
    out = tiny_tokenizer / "lsm_resumed"
    assert main([*lsm_argv(tiny_tokenizer, out), "--steps", "2"]) == 0
    assert "step 2/4" in capsys.readouterr().out
    assert main(["train", "lsm", "--resume", str(out), "--no-progress"]) == 0
    assert "step 4/4" in capsys.readouterr().out
    resumed = load_file(str(out / "checkpoints" / "step_0000004" / "model.safetensors"))
    straight = load_file(str(lsm_run / "checkpoints" / "step_0000004" / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    for k in straight:  # noise, t, d, condition and seed dropout draws all repeat
        assert torch.equal(resumed[k], straight[k]), k
    a = load_file(str(out / "lsm" / "generator" / "model_ema.safetensors"))
    b = load_file(str(lsm_run / "lsm" / "generator" / "model_ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_window_plan_covers_the_tail():
    # 32-frame windows, 4x downsampling, 2 seed latents: hop 6 latents = 24 frames
    for frames in (1, 31, 32, 33, 100, 1906, 1922):
        windows, hop, covered = window_plan(frames, 32, 4, 2)
        assert hop == 6 and covered == 8 + (windows - 1) * hop and covered * 4 >= frames
        assert windows == 1 or (covered - hop) * 4 < frames


@pytest.mark.skipif(not SCOTT_WAV.is_file(), reason="BEAT2 fixture not available")
def test_generates_the_length_of_the_real_beat2_audio(lsm_run, tmp_path, capsys):
    out = tmp_path / "motion.npz"
    argv = ["generate", "--audio", str(SCOTT_WAV), "--textgrid", str(SCOTT_TG)]
    assert main([*argv, "--checkpoint", str(lsm_run), "--steps", "2", "--out", str(out)]) == 0
    assert "1922 frames" in capsys.readouterr().out
    # the wav has 1,025,558 samples = 64.097 s -> floor(64.097 * 30) = 1922 frames, no dropped
    # tail (its mocap file stops 0.56 s earlier, at 1906 frames; see below)
    m = load_motion(out)  # gesture_data's BEAT2 reader accepts it
    with np.load(out, allow_pickle=False) as z:
        assert z["poses"].shape == (1922, 165) and z["poses"].dtype == np.float32
        assert z["trans"].shape == (1922, 3) and z["expressions"].shape == (1922, 100)
        assert z["betas"].shape == (300,) and str(z["model"]) == "smplx2020"
        assert str(z["gender"]) == "neutral" and int(z["mocap_frame_rate"]) == 30
        for k in ("poses", "trans", "expressions"):
            assert np.isfinite(z[k]).all(), k
    assert m["poses"].shape == (1922, 165)
    assert not list(tmp_path.glob(".*tmp"))

    # the same speech cut to its motion capture's 1906 frames (63.53 s) gives 1906 frames
    audio, sr = sf.read(str(SCOTT_WAV), dtype="float32")
    cut = audio[: int(np.ceil(1906 * sr / 30))]
    motion = generate(cut, checkpoint=lsm_run, steps=1, guidance=1.0)
    assert isinstance(motion, Motion) and motion.num_frames == 1906
    assert motion.poses.shape == (1906, 165) and np.isfinite(motion.poses).all()


def test_python_api_is_deterministic_and_guidance_matters(lsm_run, tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    a = generate(audio, checkpoint=lsm_run, steps=2, seed=3)
    b = generate(audio, checkpoint=lsm_run / "lsm", steps=2, seed=3, out=tmp_path / "x.npz")
    assert a.num_frames == 90 and np.array_equal(a.poses, b.poses)
    assert np.array_equal(np.load(tmp_path / "x.npz")["poses"], a.poses)
    c = generate(audio, checkpoint=lsm_run, steps=2, seed=3, guidance=1.0)
    assert not np.array_equal(a.poses, c.poses)


def test_unknown_word_embedding_is_trained(lsm_run):
    """Word dropout puts <unk> in training batches, so its embedding row moves; without it the
    row keeps its random initial value (AdamW with weight decay 0 never touches it)."""
    from gesture_apps.systems.gesturelsm.model import LSMGenerator

    spec = json.loads((lsm_run / "lsm" / "generator" / "config.json").read_text())
    torch.manual_seed(0)  # the recipe seeds with train.seed (0) right before building the model
    initial = LSMGenerator(spec).encoder.words.weight.detach()
    trained = load_file(str(lsm_run / "lsm" / "generator" / "model.safetensors"))[
        "encoder.words.weight"
    ]
    unk = Vocabulary.UNK
    assert not torch.equal(trained[unk], initial[unk])


def test_word_dropout_replaces_whole_words_in_training_only():
    from gesture_apps.systems.gesturelsm.train import drop_words

    g = torch.Generator().manual_seed(0)
    # 64 rows of 8 words of 4 frames each, separated by 2 frames of silence
    words = torch.randint(2, 50, (64, 8), generator=g)
    frames = torch.cat(
        [words[:, :, None].expand(-1, -1, 4), torch.zeros(64, 8, 2, dtype=torch.long)], 2
    )
    frames = frames.reshape(64, 48)
    torch.manual_seed(1)
    dropped = drop_words(frames, 0.25)
    per_word = dropped.reshape(64, 8, 6)
    unk = per_word[:, :, :4] == Vocabulary.UNK
    assert (unk.all(-1) | ~unk.any(-1)).all()  # a word is dropped whole or not at all
    assert (per_word[:, :, 4:] == Vocabulary.PAD).all()  # silence stays silence
    kept = ~unk.any(-1)
    assert torch.equal(per_word[:, :, 0][kept], words[kept])
    # 512 words: the dropped share has standard error sqrt(.25 * .75 / 512) = 0.019
    assert abs(unk.all(-1).float().mean().item() - 0.25) < 0.06
    assert torch.equal(drop_words(frames, 0.0), frames)


def test_lsm_objective_drops_words_when_training_not_in_eval():
    from flow_backbones import ShortcutLoss
    from gesture_apps.systems.gesturelsm.model import LSMGenerator
    from gesture_apps.systems.gesturelsm.train import LSMObjective

    spec = {
        "vocab_size": 10,
        "factor": 4,
        "audio_channels": [4, 4, 4, 4],
        "audio_dim": 4,
        "word_dim": 4,
        "denoiser_size": "tiny",
        "denoiser": dict(num_parts=1, part_dim=4, cond_dim=4, max_cond_len=8),
    }
    obj = LSMObjective(LSMGenerator(spec), ShortcutLoss(), seed_drop=0.0, word_drop=1.0)
    seen = []
    obj.generator.encoder.words.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    words = torch.tensor([[0, 3, 3, 4, 0, 5, 5, 5] * 4] * 2)
    batch = {"latents": torch.randn(2, 8, 4), "audio": torch.randn(2, 32 * 540, 2), "words": words}
    obj.train()(batch)
    assert torch.equal(seen[-1], torch.where(words > 0, Vocabulary.UNK, 0))
    obj.eval()(batch)
    assert torch.equal(seen[-1], words)


def test_out_of_vocabulary_words_generate_like_unk(lsm_run):
    """Every word the training vocabulary lacks is read as <unk>, the trained embedding."""
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    oov = generate(audio, checkpoint=lsm_run, words=[(0.2, 0.9, "zyzzyva")], steps=1, seed=1)
    unk = generate(audio, checkpoint=lsm_run, words=[(0.2, 0.9, "<unk>")], steps=1, seed=1)
    silent = generate(audio, checkpoint=lsm_run, words=[], steps=1, seed=1)
    assert np.array_equal(oov.poses, unk.poses)
    assert not np.array_equal(oov.poses, silent.poses)  # the word is read at all


def test_generate_defaults_to_cuda_when_present(monkeypatch):
    """With CUDA reported present, generate() loads the model there unless told otherwise."""
    from gesture_apps.systems.gesturelsm import pipeline as pipelines

    seen = []

    def fake_load(path, **kwargs):
        seen.append(kwargs["device"])
        raise pipelines.GenerationError("stop after loading")

    monkeypatch.setattr(pipelines, "load_lsm", fake_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    audio = np.zeros(16000 * 2, np.float32)
    for device in (None, "cpu"):
        with pytest.raises(pipelines.GenerationError, match="stop after loading"):
            generate(audio, checkpoint="unused", device=device)
    assert seen == [torch.device("cuda"), torch.device("cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipelines.resolve_device(None) == torch.device("cpu")


def test_generate_cli_takes_a_device(lsm_run, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(32000)))
    base = ["generate", "--audio", str(wav), "--checkpoint", str(lsm_run), "--steps", "1"]
    out = tmp_path / "cpu.npz"
    assert main([*base, "--device", "cpu", "--out", str(out)]) == 0
    assert np.load(out)["poses"].shape == (60, 165)
    for device, message in [("banana", "not a torch device"), ("cuda:99", "cuda")]:
        if device == "cuda:99" and torch.cuda.device_count() > 99:
            continue
        err = one_line_error(capsys, [*base, "--device", device, "--out", str(tmp_path / "x.npz")])
        assert device in err and message in err.lower()
        assert not (tmp_path / "x.npz").exists()


def _wav(path, samples, sr=16000):
    sf.write(str(path), samples, sr, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    speech = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    _wav(d / "ok.wav", speech)
    _wav(d / "empty.wav", np.zeros(0, np.float32))
    _wav(d / "short.wav", speech[:4000])
    _wav(d / "stereo.wav", np.stack([speech, speech], 1))
    _wav(d / "44k.wav", np.zeros(44100 * 2, np.float32), 44100)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    write_textgrid(d / "other.TextGrid", {"words": [(0.5, 1.0, "hello")]}, xmax=20.0)
    write_textgrid(d / "ok.TextGrid", {"words": [(0.5, 1.0, "hello")]}, xmax=3.0)
    return d


@pytest.mark.parametrize(
    ("audio", "textgrid", "message"),
    [
        ("missing.wav", None, "audio file not found"),
        ("empty.wav", None, "audio is empty"),
        ("short.wav", None, "audio too short"),
        ("stereo.wav", None, "expected mono audio, found 2 channels"),
        ("44k.wav", None, "expected 16000 Hz audio, found 44100 Hz"),
        ("corrupt.wav", None, "cannot read audio"),
        ("ok.wav", "other.TextGrid", "TextGrid does not match the audio"),
        ("ok.wav", "missing.TextGrid", "TextGrid file missing"),
    ],
)
def test_bad_audio_is_one_line_and_writes_nothing(
    lsm_run, inputs, tmp_path, capsys, audio, textgrid, message
):
    out = tmp_path / "m.npz"
    argv = ["generate", "--audio", str(inputs / audio), "--checkpoint", str(lsm_run)]
    if textgrid:
        argv += ["--textgrid", str(inputs / textgrid)]
    err = one_line_error(capsys, [*argv, "--out", str(out)])
    assert message in err
    assert not list(tmp_path.iterdir())


def test_matching_textgrid_is_accepted(lsm_run, inputs, tmp_path, capsys):
    out = tmp_path / "m.npz"
    argv = ["generate", "--audio", str(inputs / "ok.wav"), "--textgrid"]
    argv += [str(inputs / "ok.TextGrid"), "--checkpoint", str(lsm_run), "--out", str(out)]
    assert main(argv) == 0 and np.load(out)["poses"].shape == (90, 165)


def test_render_writes_a_video_with_the_npz(lsm_run, inputs, tmp_path, capsys):
    out, video = tmp_path / "m.npz", tmp_path / "m.mp4"
    argv = ["generate", "--audio", str(inputs / "ok.wav"), "--checkpoint", str(lsm_run)]
    assert main([*argv, "--out", str(out), "--render", str(video)]) == 0
    assert out.is_file() and video.stat().st_size > 1000
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "n.npz"), "--render", "v.avi"])
    assert "expected a .mp4 or .gif" in err and not (tmp_path / "n.npz").exists()


def _corrupt_weights(export: Path) -> None:
    for name in ("model.safetensors", "model_ema.safetensors"):
        (export / "generator" / name).write_bytes(b"not a safetensors file")


def _corrupt_config(export: Path) -> None:
    (export / "generator" / "config.json").write_text("{", encoding="utf-8")


@pytest.mark.parametrize("damage", [None, _corrupt_weights, _corrupt_config])
def test_bad_checkpoint_is_one_line_and_writes_nothing(lsm_run, inputs, tmp_path, capsys, damage):
    import shutil

    if damage is None:
        ckpt, message = tmp_path / "nothing_here", "checkpoint not found"
    else:
        ckpt, message = tmp_path / "export", "corrupt checkpoint"
        shutil.copytree(lsm_run / "lsm", ckpt)
        damage(ckpt)
    out = tmp_path / "out" / "m.npz"
    argv = ["generate", "--audio", str(inputs / "ok.wav"), "--checkpoint", str(ckpt)]
    assert message in one_line_error(capsys, [*argv, "--out", str(out)])
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "gesturelsm/tiny"], "tokenizer: pass the folder"),
        (["--preset", "gesturelsm/tiny", "--tokenizer", "MISSING"], "not a tokenizer export"),
        (["--preset", "gesturelsm/tiny", "model.size=huge"], "expected one of"),
    ],
)
def test_bad_training_input_is_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "lsm", "--no-progress", "--out", str(out), *extra])
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["train", "lsm", "--help"], ["generate", "--help"]])
def test_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage: gesture" in capsys.readouterr().out


def reflow_argv(root, teacher, out, *extra):
    return [
        "train",
        "reflow",
        "--preset",
        "reflow/tiny",
        "--teacher",
        str(teacher),
        "--no-progress",
        "--out",
        str(out),
        "train.max_steps=4",
        "train.log_every=2",
        f"data.cache_dir={root / 'cache'}",
        *extra,
    ]


def test_reflow_trains_resumes_exactly_and_generates(tiny_tokenizer, lsm_run, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(reflow_argv(tiny_tokenizer, lsm_run, straight)) == 0
    assert "reflow: step 4/4" in capsys.readouterr().out
    assert main([*reflow_argv(tiny_tokenizer, lsm_run, resumed), "--steps", "2"]) == 0
    assert main(["train", "reflow", "--resume", str(resumed), "--no-progress"]) == 0
    a = load_file(str(straight / "checkpoints" / "step_0000004" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_0000004" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the student starts from the teacher; its condition encoder stays frozen
    teacher = load_file(str(lsm_run / "lsm" / "generator" / "model_ema.safetensors"))
    student = load_file(str(straight / "lsm" / "generator" / "model.safetensors"))
    enc = [k for k in teacher if k.startswith("encoder.")]
    assert enc and all(torch.equal(teacher[k], student[k]) for k in enc)
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher if "denoiser" in k)
    spec = json.loads((straight / "lsm" / "generator" / "config.json").read_text())
    assert spec["sample"] == {"steps": 2, "guidance": 1.0} and spec["reflow"]["teacher_steps"] == 4
    audio = (0.1 * np.random.default_rng(2).standard_normal(16000 * 2)).astype(np.float32)
    motion = generate(audio, checkpoint=straight)
    assert motion.num_frames == 60 and np.isfinite(motion.poses).all()
    capsys.readouterr()
    err = one_line_error(capsys, ["train", "reflow", "--no-progress", "--out", str(tmp_path / "x")])
    assert "teacher: pass" in err


@pytest.mark.skipif(not (BEAT2 / "smplxflame_30").is_dir(), reason="BEAT2 fixture not available")
def test_trains_on_the_real_beat2_fixture(tiny_tokenizer, tmp_path, capsys):
    argv = [
        "train",
        "lsm",
        "--preset",
        "gesturelsm/tiny",
        "--tokenizer",
        str(tiny_tokenizer / "tok"),
    ]
    argv += ["--data", f"beat2:{BEAT2}", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "train.max_steps=2", "data.split=null"]) == 0
    assert "lsm: step 2/2" in capsys.readouterr().out
    vocab = (tmp_path / "lsm" / "vocabulary" / "vocab.txt").read_text().split("\n")
    assert len(vocab) > 100 and "<unk>" in vocab  # the fixture's TextGrid words


def test_paper_preset_builds_gesturelsm_sizes():
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
    from gesture_apps.systems.gesturelsm.model import LSMGenerator, build_spec
    from motion_tokenizers import RVQVAE, MultiPartTokenizer

    cfg = load_config(LSMRecipeConfig, "gesturelsm/gesturelsm", ["tokenizer=unused"])
    tok = MultiPartTokenizer(
        {p: RVQVAE.gesturelsm(p, width=8, depth=1) for p in cfg.model.parts}, latent_scale=5.0
    )
    spec = build_spec(cfg, tok, vocab_size=100)
    assert spec["pose_length"] == 128 and spec["factor"] == 4
    assert spec["denoiser"]["part_dim"] == 128 and spec["denoiser"]["max_cond_len"] == 32
    with torch.device("meta"):
        gen = LSMGenerator(spec)
    d = gen.denoiser
    assert (d.num_parts, d.latent_dim, len(d.blocks), len(d.cross_blocks)) == (3, 256, 8, 3)
    assert d.seed_frames == 4 and d.cond_dim == 768
    assert 29e6 < sum(p.numel() for p in d.parameters()) < 32e6  # GestureLSM: 30.6 M
    assert (cfg.train.batch_size, cfg.train.betas, cfg.sample.steps) == (128, (0.5, 0.999), 2)
