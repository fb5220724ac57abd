"""The one export format: a tiny GestureLSM bundle round trip, first-release exports, bad
manifests."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flow_backbones import SpatialTemporalDenoiser
from gesture_apps import main
from gesture_apps.data.codec import load_tokenizer_bundle
from gesture_apps.errors import GenerationError
from gesture_apps.runtime import load_config
from gesture_apps.runtime.bundle import FORMAT, open_bundle
from gesture_apps.systems.gesturelsm import train as lsm
from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
from gesture_apps.systems.gesturelsm.export import LSMBundle, load_lsm
from gesture_apps.systems.gesturelsm.pipeline import generate_motion
from gesture_data.datasets import synthetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny tokenizer run and a tiny GestureLSM trained in memory, then exported."""
    root = tmp_path_factory.mktemp("bundle")
    cache = f"data.cache_dir={root / 'cache'}"
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    assert main([*argv, "--out", str(root / "tok"), "train.max_steps=2", cache]) == 0
    cfg = load_config(
        LSMRecipeConfig,
        "gesturelsm/tiny",
        [f"tokenizer={root / 'tok'}", "train.max_steps=3", cache],
    )
    run = lsm.prepare(cfg, root / "lsm_run", progress=False)
    run.trainer.train_and_export(root / "lsm_run", None, lambda tmp: lsm.export(run, tmp))
    averaged = copy.deepcopy(run.trainer.raw_model)
    run.trainer.ema.copy_to(averaged)
    memory = LSMBundle(
        averaged.generator.eval(), run.tokenizer, run.normalizer, run.vocab, run.spec, root
    )
    clip = synthetic.make_clip(5, 3.0, seed=11)
    sf.write(root / "speech.wav", clip.audio, clip.sample_rate)
    return root, memory, clip


def test_a_bundle_generates_what_the_model_in_memory_generates(trained, capsys):
    root, memory, clip = trained
    want = generate_motion(memory, clip.audio, steps=2, guidance=2.0, seed=4)
    out = root / "gen.npz"
    argv = ["generate", "--audio", str(root / "speech.wav"), "--checkpoint"]
    argv += [str(root / "lsm_run"), "--steps", "2", "--guidance", "2", "--seed", "4"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    got = np.load(out)
    # the same float32 computation on the same weights: bit for bit
    np.testing.assert_array_equal(got["poses"], want.poses)
    np.testing.assert_array_equal(got["trans"], want.trans)


def test_the_manifest_describes_every_network(trained):
    root, memory, _ = trained
    bundle = open_bundle(root / "lsm_run")
    assert bundle.folder == root / "lsm_run" / "lsm" and not bundle.legacy
    m = json.loads((bundle.folder / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["system"] == "gesturelsm"
    assert (m["layout"], m["fps"], m["sample_rate"]) == ("beat2", 30.0, 16000)
    assert set(m["components"]) == {"generator", "tokenizer", "normalizer", "vocabulary"}
    den = m["components"]["generator"]["config"]["denoiser"]
    # every constructor argument is saved: the denoiser is rebuilt from the manifest alone
    assert set(den) == set(SpatialTemporalDenoiser.preset_config("tiny"))
    rebuilt = SpatialTemporalDenoiser(**den)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in memory.generator.denoiser.parameters()
    )
    tok_cfg = m["components"]["tokenizer"]["config"]
    assert tok_cfg == json.loads((bundle.path("tokenizer") / "config.json").read_text())
    assert m["components"]["vocabulary"]["config"] == {"size": len(memory.vocab)}
    parts = m["components"]["normalizer"]["config"]["parts"]
    assert parts == {k: len(mean) for k, (mean, _) in memory.normalizer.stats.items()}


def _first_release_lsm(bundle_dir: Path, out: Path) -> None:
    """The bundle rewritten as the first release's ``lsm/`` export (config version 1: the
    denoiser's preset name and only the arguments that differ from it)."""
    b = open_bundle(bundle_dir)
    out.mkdir()
    spec = copy.deepcopy(b.config("generator"))
    preset = SpatialTemporalDenoiser.preset_config("tiny")
    always = ("num_parts", "part_dim", "cond_dim", "max_cond_len")  # it wrote these four
    den = {k: v for k, v in spec["denoiser"].items() if preset[k] != v or k in always}
    spec.update(version=1, denoiser=den, denoiser_size="tiny", fps=30.0, sample_rate=16000)
    (out / "config.json").write_text(json.dumps(spec))
    for name in ("model.safetensors", "model_ema.safetensors"):
        shutil.copy(b.path("generator", name), out / name)
    shutil.copy(b.path("vocabulary", "vocab.txt"), out / "vocab.txt")
    shutil.copy(b.path("normalizer", "normalizer.npz"), out / "normalizer.npz")
    shutil.copytree(b.path("tokenizer"), out / "tokenizer")


def test_a_first_release_lsm_export_still_generates_the_same(trained, tmp_path):
    root, memory, clip = trained
    _first_release_lsm(root / "lsm_run" / "lsm", tmp_path / "lsm")
    old = load_lsm(tmp_path / "lsm")
    assert open_bundle(tmp_path / "lsm").legacy
    a = generate_motion(old, clip.audio, steps=2, guidance=2.0, seed=1)
    b = generate_motion(memory, clip.audio, steps=2, guidance=2.0, seed=1)
    np.testing.assert_array_equal(a.poses, b.poses)


def test_a_first_release_tokenizer_export_still_loads(trained, tmp_path):
    root, memory, _ = trained
    b = open_bundle(root / "tok")
    assert b.system == "tokenizer" and not b.has("tokenizer_ema")  # no EMA by default
    old = tmp_path / "tokenizer"
    shutil.copytree(b.path("tokenizer"), old / "model")
    shutil.copy(b.path("normalizer", "normalizer.npz"), old / "normalizer.npz")
    parts = list(memory.tokenizer.part_names)
    tok, _, bundle = load_tokenizer_bundle(old, parts)
    assert bundle.legacy and list(tok.part_names) == parts
    for k, v in memory.tokenizer.state_dict().items():
        assert torch.equal(tok.state_dict()[k], v), k


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("system"), "missing key 'system'"),
        (lambda m: m.update(format="gesture-bundle/9"), "is not 'gesture-bundle/1'"),
        (lambda m: m.update(fps="30"), "'fps' has the wrong type"),
        (lambda m: m["components"].update(extra={"config": {}}), "extra: component folder"),
        (lambda m: m.update(system="no_such_system"), "unknown system 'no_such_system'"),
    ],
)
def test_bad_manifests_are_named(trained, tmp_path, capsys, edit, message):
    root, _, _ = trained
    copy_dir = tmp_path / "b"
    shutil.copytree(root / "lsm_run" / "lsm", copy_dir)
    manifest = json.loads((copy_dir / "manifest.json").read_text())
    edit(manifest)
    (copy_dir / "manifest.json").write_text(json.dumps(manifest))
    argv = ["generate", "--audio", str(root / "speech.wav"), "--checkpoint", str(copy_dir)]
    assert main([*argv, "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.npz").exists()


def test_an_unreadable_manifest_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(GenerationError, match=r"manifest\.json: unreadable manifest"):
        open_bundle(tmp_path)
