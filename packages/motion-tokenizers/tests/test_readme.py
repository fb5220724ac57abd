import re
from pathlib import Path

import torch


def test_readme_example_runs():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    torch.manual_seed(0)
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)
    assert env["out"].recon.shape == (2, 64, 78)
    assert env["out"].indices.shape == (2, 16, 6)
    assert env["idx"].shape == (2, 16, 6) and env["z"].shape == (2, 16, 128)
    assert env["coarse"].shape == (2, 64, 78)
    assert env["parts"].latent_dim == 64
