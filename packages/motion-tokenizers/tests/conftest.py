import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]


def fixtures_dir() -> Path:
    return Path(os.environ.get("GESTURE_FIXTURES", REPO / ".." / "shared" / "fixtures")).resolve()


@pytest.fixture
def beat2_dir() -> Path:
    d = fixtures_dir() / "beat2"
    if not (d / "smplxflame_30" / "2_scott_0_1_1.npz").is_file():
        pytest.skip(f"BEAT2 fixture not found under {d}")
    return d


@pytest.fixture(autouse=True, scope="module")
def _threads():
    # the CI box has 2 cores; more threads only add contention. Restored after each module so
    # the count never leaks into another package's tests.
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def smooth_motion(n: int, T: int, C: int, seed: int = 0) -> torch.Tensor:
    """Random smooth trajectories ``(n, T, C)``: low-pass filtered random walks, unit-ish scale."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T + 8, C, generator=g).cumsum(1)
    x = torch.nn.functional.avg_pool1d(x.transpose(1, 2), 9, stride=1).transpose(1, 2)
    return (x - x.mean((0, 1))) / x.std((0, 1))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models, which are all per-op overhead: on the
    shared 2-core box the SG tokenizer's 24-step training fixture took 7.0 s at 1 thread and
    101.8 s at 2 (results equal to 3e-4). Use with ``pytestmark = usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
