"""Two CPU processes (gloo) train with the shared Trainer and end with identical weights."""

import importlib.util
import json
import socket
from pathlib import Path

import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker():
    spec = importlib.util.spec_from_file_location(
        "ddp_worker", Path(__file__).with_name("ddp_worker.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    worker = _load_worker()
    # fork: the children reuse this process's imports; a rank that fails raises here
    torch.multiprocessing.start_processes(
        worker.run_rank, args=(2, _free_port(), tmp_path), nprocs=2, start_method="fork"
    )
    w0, w1 = (
        load_file(str(tmp_path / "rank0.safetensors")),
        load_file(str(tmp_path / "rank1.safetensors")),
    )
    assert w0.keys() == w1.keys()
    for k in w0:  # parameters and EMA agree although the ranks started from different weights
        assert torch.equal(w0[k], w1[k]), k
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # one shuffled order per pass, split between the ranks: disjoint batches every step
    for a, b in zip(r0["seen"], r1["seen"], strict=True):
        assert len(a) == len(b) == 3 and not set(a) & set(b)
    # logged metrics are averaged over the ranks, so both logs agree
    assert r0["history"] == r1["history"] and [h["step"] for h in r0["history"]] == [2, 4]
    # rank 0 wrote one checkpoint holding both ranks' RNG states
    state = json.loads(
        (tmp_path / "checkpoints" / "step_0000004" / "trainer_state.json").read_text()
    )
    assert state["num_processes"] == 2 and len(state["rng"]) == 2
