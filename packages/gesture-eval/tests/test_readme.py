"""The README's usage example runs as written."""

import re
from pathlib import Path


def test_readme_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    bc, l1, fgd = (float(x) for x in capsys.readouterr().out.split())
    assert 0 < bc < 1 and l1 > 0 and fgd > 0
