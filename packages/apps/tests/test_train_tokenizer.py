"""`gesture train tokenizer` end to end at the tiny preset, resume and bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gesture_apps import main
from gesture_data import Normalizer
from motion_tokenizers import MultiPartTokenizer

TINY = ["--preset", "tokenizer/tiny", "--no-progress", "train.max_steps=4", "train.log_every=2"]


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Four uninterrupted steps (shared by the tests below to keep the suite fast)."""
    out = tmp_path_factory.mktemp("straight")
    assert main(["train", "tokenizer", *TINY, "--out", str(out)]) == 0
    return out


def test_trains_and_exports_a_loadable_tokenizer(straight_run, capsys):
    out = straight_run
    assert (out / "checkpoints" / "latest.txt").read_text().strip() == "step_0000004"
    tok = MultiPartTokenizer.from_pretrained(out / "tokenizer" / "tokenizer").eval()
    assert tok.part_names == ["upper", "hands", "lower", "face"]
    norm = Normalizer.load(out / "tokenizer" / "normalizer" / "normalizer.npz")
    assert set(norm.stats) == {"upper", "hands", "lower"}  # the face stays raw
    x = {n: torch.randn(1, 32, d) for n, d in [("upper", 78), ("hands", 180)]}
    x |= {"lower": torch.randn(1, 32, 57), "face": torch.randn(1, 32, 100)}
    z = tok.encode_continuous(x)
    assert z.shape == (1, 8, 64) and torch.isfinite(z).all()
    # un-averaged by default, as GestureLSM and MoMask train their tokenizers
    assert not (out / "tokenizer" / "tokenizer_ema").exists()
    cfg = json.loads((out / "checkpoints" / "step_0000004" / "run_config.json").read_text())
    assert cfg["train"]["max_steps"] == 4 and cfg["model"]["size"] == "tiny"
    history = json.loads((out / "checkpoints" / "step_0000004" / "trainer_state.json").read_text())
    assert [row["step"] for row in history["history"]] == [2, 4]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(out.rglob("*.tmp"))


def test_tokenizer_and_lsm_default_to_the_unaveraged_tokenizer():
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
    from gesture_apps.systems.tokenizer.config import TokenizerRecipeConfig

    for preset in ("tokenizer/tiny", "tokenizer/demo", "tokenizer/gesturelsm"):
        assert load_config(TokenizerRecipeConfig, preset).train.ema_decay is None, preset
    # a config that leaves train.ema_decay out gets no EMA either
    assert load_config(TokenizerRecipeConfig, {"recipe": "tokenizer"}).train.ema_decay is None
    assert LSMRecipeConfig().tokenizer_weights == "model"
    for preset in ("gesturelsm/tiny", "gesturelsm/demo", "gesturelsm/gesturelsm"):
        assert load_config(LSMRecipeConfig, preset).tokenizer_weights == "model", preset


def test_tokenizer_ema_averages_codebooks_with_the_weights(tmp_path):
    """With train.ema_decay set, the averaged encoder is exported with codebooks averaged over
    the same steps, never with the live codebooks fitted to the live encoder."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.tokenizer import train as tokenizer

    overrides = ["train.ema_decay=0.5", "train.max_steps=3", "train.checkpoint_every=0"]
    cfg = load_config(tokenizer.TokenizerRecipeConfig, "tokenizer/tiny", overrides)
    run = tokenizer.prepare(cfg, None, progress=False)
    run.trainer.train()
    tokenizer.export(run.trainer, tmp_path, run.normalizer)
    live = MultiPartTokenizer.from_pretrained(tmp_path / "tokenizer" / "tokenizer").state_dict()
    ema = MultiPartTokenizer.from_pretrained(tmp_path / "tokenizer" / "tokenizer_ema").state_dict()
    shadow = run.trainer.ema.shadow
    codebooks = [k for k in live if k.endswith("._codebook.embed")]
    assert len(codebooks) == 12
    for k in codebooks:
        assert torch.equal(ema[k], shadow[f"tokenizer.{k}"]), k
        assert not torch.equal(ema[k], live[k]), k
    conv = next(k for k in live if k.endswith("weight") and live[k].ndim == 3)
    assert not torch.equal(ema[conv], live[conv])  # the weights are averaged too
    # k-means' `initted` flag is integer state: copied, never averaged
    flags = [k for k in live if k.endswith("initted")]
    assert flags and all(torch.equal(ema[k], live[k]) for k in flags)


def test_resume_after_interruption_matches_the_straight_run(straight_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tokenizer", *TINY, "--out", str(out), "--steps", "2"]) == 0
    assert "step 2/4" in capsys.readouterr().out
    assert main(["train", "tokenizer", "--resume", str(out), "--no-progress"]) == 0
    assert "step 4/4" in capsys.readouterr().out
    resumed = weights(out / "checkpoints" / "step_0000004")
    straight = weights(straight_run / "checkpoints" / "step_0000004")
    assert resumed.keys() == straight.keys()
    for k in straight:  # k-means init, code sampling, dropout: every draw repeats exactly
        assert torch.equal(resumed[k], straight[k]), k
    a = json.loads((out / "checkpoints" / "step_0000004" / "trainer_state.json").read_text())
    b = json.loads(
        (straight_run / "checkpoints" / "step_0000004" / "trainer_state.json").read_text()
    )
    assert a["history"] == b["history"] and (a["epoch"], a["cursor"]) == (b["epoch"], b["cursor"])


def test_print_config_applies_overrides(capsys):
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--print-config"]
    argv += ["train.lr=3e-4", "--set", "model.width=8", "--data", "beat2:/x", "train.seed=5"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "lr: 0.0003" in text and "width: 8" in text and "source: beat2:/x" in text
    assert "seed: 5" in text  # an override after the options counts too


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "tokenizer", "--preset", "tokenizer/tiny", "--bogus", "1"])
    assert e.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def one_line_error(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("gesture: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "tokenizer/tiny", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["--preset", "tokenizer/tiny", "train.batch_size=x"], "expected an integer"),
        (["--resume", "MISSING"], "checkpoint not found"),
        (["--preset", "tokenizer/tiny", "--data", "beat2:MISSING"], "not a BEAT2 folder"),
        (["--preset", "tokenizer/tiny", "train.batch_size=500"], "fewer than one global batch"),
        (["--preset", "tokenizer/tiny", "--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "gone") if a.endswith("MISSING") and a[0] != "b" else a for a in extra]
    extra = [f"beat2:{tmp_path / 'gone'}" if a == "beat2:MISSING" else a for a in extra]
    out = tmp_path / "out"
    err = one_line_error(capsys, ["train", "tokenizer", "--no-progress", "--out", str(out), *extra])
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_state", "bad_run_config"])
def test_corrupt_checkpoint_is_one_line_and_changes_nothing(straight_run, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(straight_run, run)
    ckpt = run / "checkpoints" / "step_0000004"
    if damage == "truncate_weights":
        (ckpt / "model.safetensors").write_bytes(b"\x00" * 10)
    elif damage == "delete_state":
        (ckpt / "trainer_state.safetensors").unlink()
    else:
        (ckpt / "run_config.json").write_text("{")
    before = sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*"))
    err = one_line_error(
        capsys, ["train", "tokenizer", "--resume", str(run), "--no-progress", "train.max_steps=6"]
    )
    assert str(ckpt) in err
    assert sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*")) == before


def test_existing_run_needs_resume(straight_run, capsys):
    err = one_line_error(capsys, ["train", "tokenizer", *TINY, "--out", str(straight_run)])
    assert "already holds a run; pass --resume" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["presets", "--help"],
        ["train", "--help"],
        *([*cmd, "--help"] for cmd in (["train", r] for r in ("tokenizer", "lsm", "reflow"))),
        *([cmd, "--help"] for cmd in ("distill", "generate", "eval", "render", "demo")),
    ],
)
def test_every_subcommand_has_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: gesture" in capsys.readouterr().out


def test_train_without_recipe_prints_help(capsys):
    assert main(["train"]) == 2
    assert "tokenizer" in capsys.readouterr().out


def test_presets_command_lists_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "tokenizer/tiny" in out and "tokenizer/gesturelsm" in out


def _beat2_fixture():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    base = Path(os.environ.get("GESTURE_FIXTURES", root.parent / "shared" / "fixtures"))
    return base / "beat2"


@pytest.mark.skipif(not (_beat2_fixture() / "smplxflame_30").is_dir(), reason="no BEAT2 fixture")
def test_trains_on_the_real_beat2_fixture(tmp_path, capsys):
    beat2 = _beat2_fixture()
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    argv += ["--data", f"beat2:{beat2}", "--out", str(tmp_path), "train.max_steps=2"]
    argv += ["data.split=null", f"data.mean_std_dir={beat2 / 'mean_std'}"]
    assert main(argv) == 0
    assert "step 2/2" in capsys.readouterr().out
    norm = Normalizer.load(tmp_path / "tokenizer" / "normalizer" / "normalizer.npz")
    published = Normalizer.from_beat2(beat2 / "mean_std")  # BEAT2's own statistics, not fitted
    for part, (mean, std) in norm.stats.items():
        assert (mean == published.stats[part][0]).all() and (std == published.stats[part][1]).all()


def test_single_part_rvqvae(tmp_path, capsys):
    from motion_tokenizers import RVQVAE

    argv = ["train", "tokenizer", *TINY, "--out", str(tmp_path), "train.max_steps=1"]
    assert main([*argv, "model.kind=rvqvae", "model.parts=[hands]", "model.nb_code=32"]) == 0
    tok = RVQVAE.from_pretrained(tmp_path / "tokenizer" / "tokenizer")
    assert tok.codebook_size == 32
    assert tok(torch.randn(2, 32, 180)).recon.shape == (2, 32, 180)


def test_fitted_stds_are_clamped_to_min_std():
    """data.min_std keeps near-static channels (the synthetic spine's idle sway) from being
    blown up to unit variance; channels that move are left as fitted."""
    from gesture_apps.data.windows import DataConfig, fit_normalizer, load_windows

    cfg = DataConfig(num_clips=1, seconds=4.0, pose_length=32, stride=8)
    windows, _ = load_windows(cfg)
    plain = fit_normalizer(windows, ["upper"], cfg).stats["upper"][1]
    clamped = fit_normalizer(windows, ["upper"], DataConfig(**{**vars(cfg), "min_std": 0.05}))
    clamped = clamped.stats["upper"][1]
    small = plain < 0.05
    assert 0 < small.sum() < small.size  # the clip has both kinds of channel
    assert np.allclose(clamped[small], 0.05) and (clamped[~small] == plain[~small]).all()
    with pytest.raises(ValueError, match="min_std"):
        DataConfig(min_std=0.0)
