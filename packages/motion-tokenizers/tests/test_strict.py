"""The strict loader is shared with flow_backbones as an identical copy (see its docstring)."""

from pathlib import Path

import pytest

import motion_tokenizers._strict as strict

SIBLING = Path(__file__).resolve().parents[2] / "flow-backbones" / "src" / "flow_backbones"


def test_copy_in_flow_backbones_is_identical():
    theirs = SIBLING / "_strict.py"
    if not theirs.is_file():
        pytest.skip("not in the monorepo checkout (isolated install)")
    assert Path(strict.__file__).read_bytes() == theirs.read_bytes()


def test_config_errors_name_file_and_key(tmp_path):
    from motion_tokenizers import RVQVAE
    from motion_tokenizers.errors import CheckpointError

    path = tmp_path / "config.json"
    path.write_text('{"input_dim": 12, "width": NaN}')
    with pytest.raises(CheckpointError, match=r"config\.json: key 'width' is NaN or infinite"):
        strict.check_config(path, RVQVAE)
    path.write_text('{"input_dim": 12, "widht": 8}')
    with pytest.raises(CheckpointError, match=r"config\.json: unknown key\(s\) \['widht'\]"):
        strict.check_config(path, RVQVAE)
