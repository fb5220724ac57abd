import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "gesture_data"


def test_no_sibling_imports_and_no_prints():
    siblings = re.compile(
        r"^\s*(from|import)\s+(motion_tokenizers|flow_backbones|gesture_eval|"
        r"gesture_apps)\b",
        re.M,
    )
    for f in SRC.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        assert not siblings.search(text), f
        assert not re.search(r"^\s*print\(", text, re.M), f
    assert (SRC / "py.typed").exists()
