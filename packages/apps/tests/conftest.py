import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The test models are tiny: one intra-op thread is 5-10x faster than two on a shared 2-core
    machine, where OpenMP workers wait on cores that other processes hold. Module scope: autouse
    fixtures run before the module's trained-model fixtures, which get the same count; restored
    afterwards, so no other package's tests inherit it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _default_dtype_is_left_alone():
    """A test that changes torch's default dtype must restore it: every later test (in any
    package: CI runs them in one process) would otherwise build float64 models."""
    yield
    assert torch.get_default_dtype() == torch.float32, "a test left the default dtype changed"


@pytest.fixture
def beat2_root() -> Path:
    """The shared BEAT2 fixture folder (``GESTURE_FIXTURES``, default ``../shared/fixtures``
    beside the checkout); the test is skipped when it is absent."""
    base = os.environ.get("GESTURE_FIXTURES")
    root = Path(base) if base else Path(__file__).resolve().parents[3].parent / "shared/fixtures"
    if not (root / "beat2" / "wave16k").is_dir():
        pytest.skip(f"BEAT2 fixture not found under {root}")
    return root / "beat2"


VIDEO_VAE = Path(__file__).resolve().parent / "data" / "omnihuman_vae"


@pytest.fixture(scope="session")
def video_vae() -> Path:
    """A tiny video VAE (``VideoVAE.tiny(base_dim=8, z_dim=16)``) trained by this project's
    own ``gesture train omnihuman-vae`` on 32 x 32 rendered synthetic clips: OmniHuman's
    "pretrained VAE" stand-in for the end-to-end tests (the VAE's own training is tested in
    test_omnihuman_vae.py; training one good enough to draw the figure takes ~10 CPU minutes,
    more than the suite's budget). How it was made: ``data/omnihuman_vae/README.md``."""
    return VIDEO_VAE
