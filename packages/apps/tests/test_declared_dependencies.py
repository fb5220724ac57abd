"""Every third-party module a package imports is a dependency it declares.

A module that is only reachable through another dependency (``safetensors`` through
``accelerate``, ``tqdm`` through ``transformers``) works in the workspace and breaks the day that
dependency drops it; this walks every source file's imports with ``ast`` and maps each top-level
name to its distribution, so an undeclared import fails here rather than on a user's machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2]
MEMBERS = sorted(p.parent for p in PACKAGES.glob("*/pyproject.toml"))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in reqs}


def _imported_top_level(src: Path) -> dict[str, str]:
    """``{top-level module: first file that imports it}`` over absolute imports under ``src``."""
    found: dict[str, str] = {}
    for f in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                found.setdefault(n.split(".")[0], str(f.relative_to(src.parent)))
    return found


@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_every_third_party_import_is_declared(member):
    declared = _declared(member / "pyproject.toml")
    own = {p.name for p in (member / "src").iterdir() if p.is_dir()}
    dists = packages_distributions()
    # workspace members are editable installs, which packages_distributions() does not list
    for m in MEMBERS:
        dist = tomllib.loads((m / "pyproject.toml").read_text())["project"]["name"]
        for pkg in (m / "src").iterdir():
            dists.setdefault(pkg.name, [dist])
    missing = []
    for module, where in _imported_top_level(member / "src").items():
        if module in sys.stdlib_module_names or module in own or module == "__future__":
            continue
        owners = {_normalise(d) for d in dists.get(module, [])}
        assert owners, f"{where}: imports {module!r}, which no installed distribution provides"
        if not owners & declared:
            missing.append(f"{module} ({where}; from {sorted(owners)})")
    assert not missing, f"{member.name} imports undeclared dependencies: {missing}"
