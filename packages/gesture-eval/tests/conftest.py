import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def fixtures_root() -> Path:
    return Path(os.environ.get("GESTURE_FIXTURES", REPO_ROOT / ".." / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def beat2_root() -> Path:
    root = fixtures_root() / "beat2"
    if not (root / "smplxflame_30" / "2_scott_0_1_1.npz").exists():
        pytest.skip(f"BEAT2 fixtures not found under {root} (set GESTURE_FIXTURES)")
    return root


@pytest.fixture(scope="session")
def smplx_file(tmp_path_factory):
    """A synthetic SMPL-X model file with the official keys and shapes (see synthetic.py)."""
    from gesture_eval import synthetic

    return synthetic.write_synthetic_smplx(
        tmp_path_factory.mktemp("smplx") / "smplx" / "SMPLX_NEUTRAL_2020.npz"
    )
