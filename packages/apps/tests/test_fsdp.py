"""Sharded (FSDP2) training with the shared Trainer: two CPU processes (gloo) against one."""

import importlib.util
import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model

from flow_backbones import MMDiT
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import from_dict, to_dict
from gesture_apps.runtime.trainer import TrainConfig, Trainer, fsdp_plugin
from motion_tokenizers.errors import CheckpointError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker():
    spec = importlib.util.spec_from_file_location(
        "fsdp_worker", Path(__file__).with_name("fsdp_worker.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _relative_difference(a: dict, b: dict, keys: list[str]) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in keys)
    return float((num / sum((b[k] ** 2).sum() for k in keys)).sqrt())


def test_two_sharded_ranks_train_like_one_process_and_resume_exactly(tmp_path):
    worker = _load_worker()
    worker.train_unsharded(tmp_path)
    # fork: the children reuse this process's imports; a rank that fails raises here
    torch.multiprocessing.start_processes(
        worker.run_rank, args=(2, _free_port(), tmp_path), nprocs=2, start_method="fork"
    )
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    single_log = json.loads((tmp_path / "single.json").read_text())["history"]
    single, mid, sharded, resumed = (
        load_file(str(tmp_path / f"{n}.safetensors"))
        for n in ("single", "single_mid", "sharded", "resumed")
    )

    # really sharded: every parameter a DTensor, the root and each joint block an FSDP unit,
    # each rank storing half of every block (dim-0 chunks; the two halves make the whole)
    for r in (r0, r1):
        assert r["world"] == 2 and r["root_sharded"] and r["all_dtensors"]
        assert r["blocks_sharded"] == [True, True]
    for (mine0, full0), (mine1, full1) in zip(r0["block_numel"], r1["block_numel"], strict=True):
        assert full0 == full1 and mine0 + mine1 == full0
        assert abs(mine0 / full0 - 0.5) < 0.01 and abs(mine1 / full1 - 0.5) < 0.01

    # Sharded vs one process with the same global batch, step by step. The runs differ only
    # in summation order (two half-batch gradients reduce-scattered, per-shard Adam) and run
    # in float64. Measured: |loss difference| <= 2.2e-16 (1 ulp) per step, weights relative
    # 5.6e-17, EMA 0 (its shadow is float32). Bugs measured on the same runs: ranks left on
    # their own initial weights (no broadcast) put the loss off by 2.3e-3 from step 2 (the
    # zero-initialised output heads make step 1 agree) and the weights by 0.94; both ranks
    # reading the same items: loss 0.12, weights 4.4e-2. The bounds (1e-12) sit >= 4000x above
    # the noise and >= 1e9x below those bugs.
    assert [h["step"] for h in r0["history"]] == list(range(1, worker.STEPS + 1))
    assert r0["history"] == r1["history"]  # logged metrics are reduced over the ranks
    for ref, got in zip(single_log, r0["history"], strict=True):
        assert ref.keys() == got.keys() and ref["lr"] == got["lr"]
        for k in ref:
            assert abs(ref[k] - got[k]) < 1e-12, (ref["step"], k, ref[k], got[k])
    assert single.keys() == sharded.keys()
    params = [k for k in single if not k.startswith("ema.")]
    emas = [k for k in single if k.startswith("ema.")]
    assert len(params) == len(emas) > 0
    d_params = _relative_difference(sharded, single, params)
    d_ema = _relative_difference(sharded, single, emas)
    d_loss = max(abs(a["loss"] - b["loss"]) for a, b in zip(single_log, r0["history"], strict=True))
    print(f"loss {d_loss:.3g} weights {d_params:.3g} ema {d_ema:.3g}")
    assert d_params < 1e-12 and d_ema < 1e-12
    # the run moved the weights far more than the bound (so the bound can see a difference)
    assert _relative_difference(mid, single, params) > 1e-4

    # resume-exact under FSDP: the resumed sharded run repeats the uninterrupted one bit for
    # bit (same shards, same reduction order): losses, weights, EMA
    assert r0["resumed_history"] == r0["history"]
    for k in sharded:
        assert torch.equal(resumed[k], sharded[k]), k

    # the checkpoint written by the sharded run is the unsharded format: its weights load into
    # a plain model and equal the one-process run at that step; the recipe export (EMA as a
    # save_pretrained folder, made from gathered weights) loads with from_pretrained
    ckpt = tmp_path / "checkpoint"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["sharded"] and state["num_processes"] == 2 and len(state["rng"]) == 2
    plain = worker.make_model(1)
    load_model(plain, str(ckpt / "model.safetensors"), strict=True)
    got = {k: v for k, v in plain.state_dict().items()}
    assert _relative_difference(got, mid, list(got)) < 1e-12
    exported = MMDiT.from_pretrained(str(ckpt / "model")).double()
    got = {f"ema.{k}": v for k, v in exported.state_dict().items()}
    assert _relative_difference(got, mid, list(got)) < 1e-12
    # Trainer.unsharded_copy(ema=True): a plain model on rank 0 only, with the EMA weights
    assert r0["copy_on_this_rank"] and not r1["copy_on_this_rank"]
    averaged = load_file(str(tmp_path / "unsharded_copy.safetensors"))
    assert averaged.keys() == {k.removeprefix("ema.") for k in emas}
    single_copy = load_file(str(tmp_path / "single_copy.safetensors"))  # unsharded: the same
    for k, v in averaged.items():  # the float32 EMA shadow, cast to the float64 model
        assert torch.equal(v, sharded[f"ema.{k}"].to(v.dtype)), k
        assert torch.equal(single_copy[k], single[f"ema.{k}"].to(v.dtype)), k
    # an unsharded Trainer cannot take over the sharded optimizer state: a clear error
    trainer = Trainer(
        model=worker.make_model(1),
        dataset=worker.make_dataset(),
        loss_fn=worker.flow_loss,
        config=worker.config(2),
        progress=False,
    )
    with pytest.raises(CheckpointError, match="sharded"):
        trainer.load_checkpoint(ckpt)


def test_fsdp_config_file_is_checked_before_any_process_starts(tmp_path):
    # train.fsdp is a plain config value (`train.fsdp=default` on the command line)
    cfg = from_dict(TrainConfig, {"fsdp": "default"})
    assert cfg.fsdp == "default" and from_dict(TrainConfig, to_dict(cfg)) == cfg
    assert TrainConfig().fsdp is None  # data parallel unless asked
    plugin = fsdp_plugin("default")  # the shipped configs/omniges/fsdp.yaml
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["JointBlock"]
    assert plugin.reshard_after_forward is True

    def write(text: str) -> str:
        path = tmp_path / "fsdp.yaml"
        path.write_text(text)
        return str(path)

    head = "distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n"
    with pytest.raises(ConfigError, match="not found"):
        fsdp_plugin(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="distributed_type: expected FSDP, found 'MULTI_GPU'"):
        fsdp_plugin(write("distributed_type: MULTI_GPU\n"))
    with pytest.raises(ConfigError, match=r"fsdp_version: expected 2.*found 1"):
        fsdp_plugin(write(head.replace("2", "1")))
    with pytest.raises(ConfigError, match=r"unsupported key\(s\) \['fsdp_typo'\]"):
        fsdp_plugin(write(head + "  fsdp_typo: 1\n"))
    with pytest.raises(ConfigError, match="FULL_STATE_DICT"):
        fsdp_plugin(write(head + "  fsdp_state_dict_type: SHARDED_STATE_DICT\n"))
    # a block class the model does not have is named with the file, even in one process
    bad = write(
        head + "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
        "  fsdp_transformer_layer_cls_to_wrap: DiTBlock\n"
    )
    with pytest.raises(ConfigError, match=r"fsdp\.yaml: .*\['DiTBlock'\] is not a module class"):
        Trainer(
            model=MMDiT.tiny(),
            dataset=[torch.zeros(1)] * 4,
            loss_fn=lambda m, b: (b.sum(), {}),
            config=TrainConfig(batch_size=2, cpu=True, fsdp=bad),
            progress=False,
        )
