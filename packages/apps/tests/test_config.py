"""Typed configs: presets, dotted overrides and their one-line errors."""

import re
from pathlib import Path

import pytest

from gesture_apps.errors import ConfigError
from gesture_apps.runtime import (
    TrainConfig,
    from_dict,
    list_presets,
    load_config,
    parse_override,
    preset_path,
    presets_dir,
    to_dict,
)
from gesture_apps.runtime.registry import SYSTEMS, get_system
from gesture_apps.systems.distill.config import DistillRecipeConfig
from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
from gesture_apps.systems.gesturelsm.reflow import ReflowRecipeConfig
from gesture_apps.systems.omniges.audio_recipe import AudioCodecRecipeConfig
from gesture_apps.systems.omniges.config import OmnigesRecipeConfig
from gesture_apps.systems.omniges.text_recipe import TextVAERecipeConfig
from gesture_apps.systems.omnihuman.config import OmniHumanRecipeConfig
from gesture_apps.systems.omnihuman.vae_recipe import VideoVAERecipeConfig
from gesture_apps.systems.semantic_gesticulator.config import SGRecipeConfig
from gesture_apps.systems.t2m_gpt.config import T2MRecipeConfig
from gesture_apps.systems.t2m_gpt.evaluator import T2MEvaluatorRecipeConfig
from gesture_apps.systems.tokenizer.config import TokenizerRecipeConfig

ROOT = Path(__file__).resolve().parents[3]
RECIPES = {
    "tokenizer": TokenizerRecipeConfig,
    "gesturelsm": LSMRecipeConfig,
    "reflow": ReflowRecipeConfig,
    "distill": DistillRecipeConfig,
    "omniges": OmnigesRecipeConfig,
    "omniges_audio": AudioCodecRecipeConfig,
    "omniges_text": TextVAERecipeConfig,
    "omnihuman": OmniHumanRecipeConfig,
    "omnihuman_vae": VideoVAERecipeConfig,
    "semantic_gesticulator": SGRecipeConfig,
    "t2m_evaluator": T2MEvaluatorRecipeConfig,
    "t2m_gpt": T2MRecipeConfig,
}


def test_presets_ship_inside_the_package_and_the_root_folder_lists_them():
    names = list_presets()
    assert {"tokenizer/tiny", "tokenizer/gesturelsm"} <= set(names)
    assert presets_dir().parent.name == "gesture_apps"
    listed = set(
        re.findall(r"^\| `([a-z0-9_/]+)` \|", (ROOT / "configs" / "README.md").read_text(), re.M)
    )
    assert listed == set(names)
    # the package folder is the one source of truth: no stray copies at the root
    assert not list((ROOT / "configs").glob("**/*.yaml"))


def test_preset_names_per_system_and_first_release_names():
    tiny = preset_path("tokenizer/tiny")
    assert tiny == presets_dir() / "tokenizer" / "tiny.yaml"
    assert preset_path("tiny", "tokenizer") == tiny  # short name after `gesture train tokenizer`
    assert preset_path("tokenizer_tiny") == tiny  # the first release's flat names
    assert preset_path("lsm_demo") == presets_dir() / "gesturelsm" / "demo.yaml"
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        preset_path("tiny")  # ambiguous without a system


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_into_its_recipe_config(name):
    system = name.split("/")[0]
    cfg = load_config(RECIPES[system], name)
    if system in SYSTEMS:  # the registry builds the same config class
        assert get_system(system).config_class() is RECIPES[system]
        assert cfg.recipe in get_system(system).names
    # round trip: the dict stored in checkpoints rebuilds the same config
    assert from_dict(RECIPES[system], to_dict(cfg)) == cfg


def test_paper_and_tiny_tokenizer_presets():
    paper = load_config(TokenizerRecipeConfig, "tokenizer_gesturelsm")
    assert (paper.model.size, paper.train.batch_size, paper.train.lr) == ("gesturelsm", 256, 2e-4)
    assert paper.train.milestones == (200_000,) and paper.train.betas == (0.9, 0.99)
    assert paper.model.parts == ("upper", "hands", "lower", "face")
    tiny = load_config(TokenizerRecipeConfig, "tokenizer_tiny")
    assert tiny.model.size == "tiny" and tiny.data.num_clips == 2


def test_overrides_are_typed():
    cfg = load_config(
        TokenizerRecipeConfig,
        "tokenizer_tiny",
        [
            "train.lr=1e-3",
            "train.max_steps=7",
            "train.milestones=[3, 5]",
            "train.ema_decay=null",
            "model.parts=[upper]",
            "model.kind=rvqvae",
            "data.source=beat2:/data/BEAT2",
            "data.seconds=2",
        ],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 7 and cfg.train.milestones == (3, 5)
    assert cfg.train.ema_decay is None
    assert cfg.model.parts == ("upper",) and cfg.model.kind == "rvqvae"
    assert cfg.data.source == "beat2:/data/BEAT2" and cfg.data.seconds == 2.0


def test_parse_override():
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown config key 'train.lrr' (known: max_steps, batch_size"),
        (["trian.lr=1"], "unknown config key 'trian'"),
        (["train.max_steps=abc"], "train.max_steps: expected an integer, found 'abc'"),
        (["train.max_steps=0"], "train: max_steps must be at least 1, found 0"),
        (["train.mixed_precision=fp8"], "train.mixed_precision: expected one of 'no', 'fp16'"),
        (["train.betas=[0.9]"], "train.betas: expected 2 values, found 1"),
        (["train=3"], "train: expected a mapping, found int"),
        (["train.lr"], "override 'train.lr': expected KEY=VALUE"),
        (["train.lr.x=1"], "override 'train.lr.x=1': 'lr' is not a section"),
        (["model.parts=[arm]"], "model: parts: expected names from"),
        (["data.source=s3://x"], "data: source: expected 'synthetic' or 'beat2:PATH'"),
    ],
)
def test_bad_overrides_give_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TokenizerRecipeConfig, "tokenizer_tiny", overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope' \(available: .*tokenizer/tiny"):
        load_config(TokenizerRecipeConfig, "nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TokenizerRecipeConfig, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid yaml"):
        load_config(TokenizerRecipeConfig, str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(TokenizerRecipeConfig, str(bad))


def test_user_yaml_file_and_defaults(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  max_steps: 3\n")
    cfg = load_config(TokenizerRecipeConfig, str(own))
    assert cfg.train.max_steps == 3 and cfg.train.batch_size == TrainConfig().batch_size


def test_a_saved_run_without_a_backfilled_key_resumes_with_its_default():
    """Keys added after a run was saved (marked BACKFILL) may be missing from its
    run_config.json; any other missing key is still refused."""
    from gesture_apps.runtime import from_dict, to_dict
    from gesture_apps.systems.distill.config import DistillRecipeConfig

    saved = to_dict(DistillRecipeConfig())
    del saved["consistency"]["shift"], saved["teacher"]["task"]
    cfg = from_dict(DistillRecipeConfig, saved, complete=True)
    assert cfg.consistency.shift == 1.0 and cfg.teacher.task == "a2g"
    del saved["consistency"]["guidance"]
    with pytest.raises(ConfigError, match=r"consistency\.guidance"):
        from_dict(DistillRecipeConfig, saved, complete=True)
