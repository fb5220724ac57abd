"""Run outputs: readable by colleagues (umask modes), atomic against SIGKILL, no stale files."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from gesture_apps.data.motion import Motion, write_beat2_npz
from gesture_apps.runtime import TrainConfig, Trainer, load_config
from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
from gesture_apps.systems.gesturelsm.export import load_lsm
from gesture_apps.systems.gesturelsm.model import LSMGenerator, build_spec
from gesture_data import Normalizer
from gesture_data.datasets.beat2 import Vocabulary
from motion_tokenizers import MultiPartTokenizer


def toy_trainer(out_dir: Path, **overrides) -> Trainer:
    torch.manual_seed(0)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    config = dict(max_steps=2, batch_size=4, lr=1e-2, log_every=1, cpu=True, checkpoint_every=1)
    config.update(overrides)

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean(), {}

    return Trainer(
        model=nn.Linear(4, 2),
        dataset=list(zip(x, x[:, :2], strict=True)),
        loss_fn=loss_fn,
        config=TrainConfig(**config),
        out_dir=out_dir,
        export_fn=lambda t, folder: (folder / "export").mkdir(),
        progress=False,
    )


def test_run_outputs_follow_the_umask(tmp_path):
    # mkstemp/mkdtemp left latest.txt, trainer state and generated npz at 0600
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        toy_trainer(run).train_and_export(run, None, lambda tmp: (tmp / "lsm").mkdir())
        motion = Motion(np.zeros((4, 165), np.float32), np.zeros((4, 3)), np.zeros((4, 100)))
        write_beat2_npz(run / "generated" / "clip.npz", motion)
    finally:
        os.umask(old)
    outputs = [run, *run.rglob("*")]
    names = {p.name for p in outputs}
    assert {"latest.txt", "trainer_state.json", "trainer_state.safetensors", "lsm"} <= names
    assert {"model.safetensors", "run_config.json", "export", "clip.npz"} <= names
    for p in outputs:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


PART_DIMS = {"upper": 78, "hands": 180, "lower": 57}


@pytest.fixture(scope="module")
def lsm_parts():
    cfg = load_config(LSMRecipeConfig, "gesturelsm/tiny", ["tokenizer=unused"])
    tok = MultiPartTokenizer.tiny({p: PART_DIMS[p] for p in cfg.model.parts}).eval()
    return tok, build_spec(cfg, tok, vocab_size=4)


def write_lsm_export(folder: Path, parts, weights: dict[str, nn.Module]) -> None:
    """A first-release lsm/ export (files side by side, no manifest) with the given weights."""
    tok, spec = parts
    out = folder / "lsm"
    out.mkdir()
    for name, module in weights.items():
        save_model(module, str(out / name))
    (out / "config.json").write_text(json.dumps(spec))
    (out / "vocab.txt").write_text("\n".join(Vocabulary(["a", "b"]).itos) + "\n")
    d = {p: PART_DIMS[p] for p in spec["parts"]}
    Normalizer({k: (np.zeros(n), np.ones(n)) for k, n in d.items()}).save(out / "normalizer.npz")
    tok.save_pretrained(out / "tokenizer")


def test_a_new_export_without_ema_leaves_no_stale_ema(tmp_path, lsm_parts):
    _, spec = lsm_parts
    torch.manual_seed(0)
    old, old_ema, new = LSMGenerator(spec), LSMGenerator(spec), LSMGenerator(spec)
    run = tmp_path / "run"
    first = {"model.safetensors": old, "model_ema.safetensors": old_ema}
    toy_trainer(run).train_and_export(
        run, None, lambda tmp: write_lsm_export(tmp, lsm_parts, first)
    )
    second = {"model.safetensors": new}  # retrained with train.ema_decay=null
    toy_trainer(run).train_and_export(
        run, None, lambda tmp: write_lsm_export(tmp, lsm_parts, second)
    )
    assert not (run / "lsm" / "model_ema.safetensors").exists()
    assert (run / "checkpoints" / "latest.txt").is_file()  # the rest of the run is kept
    loaded = load_lsm(run / "lsm", ema=True).generator
    for k, v in new.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path):
    # the worker kills a saving process (SIGKILL, by pid) at each file-system step of the save
    worker = Path(__file__).with_name("save_crash_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(worker), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    kills = [r for r in records if r["killed"]]
    assert len(kills) >= 3 and not records[-1]["killed"]
    for r in records:
        # every visible step_* folder is a whole checkpoint, and resume loads the newest one
        # that latest.txt names: step 2 until step 3 is complete, step 3 after that
        assert r["broken"] == [], r
        assert r["resumed"] in ("step_0000002", "step_0000003"), r
        assert r["resumed_step"] == int(r["resumed"][5:]), r
        assert r["left_over"] == [], r
    assert kills[0]["resumed"] == "step_0000002"
    assert records[-1]["resumed"] == "step_0000003"
    assert records[-1]["visible"] == ["step_0000002", "step_0000003"]  # keep_checkpoints=2
