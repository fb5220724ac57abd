from pathlib import Path

import pytest

from gesture_data._io import fixtures_root

FIX = fixtures_root()
BEAT2 = FIX / "beat2"
H3D = FIX / "humanml3d" / "HumanML3D"


@pytest.fixture(scope="session")
def beat2_root() -> Path:
    if not (BEAT2 / "smplxflame_30" / "2_scott_0_1_1.npz").exists():
        pytest.skip("BEAT2 fixture not available")
    return BEAT2


@pytest.fixture(scope="session")
def beat2_clip(beat2_root):
    from gesture_data.datasets.beat2 import load_clip

    return load_clip(beat2_root, "2_scott_0_1_1", with_phones=True)


@pytest.fixture(scope="session")
def h3d_root() -> Path:
    if not (H3D / "new_joint_vecs" / "012314.npy").exists():
        pytest.skip("HumanML3D fixture not available")
    return H3D
