"""The layout rules of ../shared/DESIGN.md, checked on the source with ``ast``.

* the apps import graph (every import statement, also the lazy ones in functions) has no cycle;
* a system imports the runtime, ``data/``, the libraries and the generic ``distill`` system,
  never another paper's system; ``runtime/``, ``data/`` and ``evaluation/`` import no system and
  no command;
* no library imports gesture_apps or a sibling library;
* no apps file is longer than 700 lines.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2]
APPS = PACKAGES / "apps" / "src" / "gesture_apps"
LIBRARIES = {
    "motion-tokenizers": "motion_tokenizers",
    "flow-backbones": "flow_backbones",
    "gesture-data": "gesture_data",
    "gesture-eval": "gesture_eval",
}
GENERIC_SYSTEMS = {"distill"}  # systems any system may build on
MAX_LINES = 700


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module ``path`` imports (``from a import b`` yields ``a.b``
    too, since ``b`` may be a submodule; the caller keeps the names that exist)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _apps_graph() -> dict[str, set[str]]:
    files = {_module_name(p, APPS, "gesture_apps"): p for p in APPS.rglob("*.py")}
    return {m: {i for i in _imports(p, m) if i in files and i != m} for m, p in files.items()}


def _system(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "systems":
        return parts[2]
    return None


def test_the_apps_import_graph_has_no_cycle():
    graph = _apps_graph()
    assert len(graph) > 30  # the walk found the package
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_systems_never_import_another_papers_system():
    bad = []
    for m, deps in _apps_graph().items():
        mine = _system(m)
        for d in deps:
            theirs = _system(d)
            if mine and theirs and theirs != mine and theirs not in GENERIC_SYSTEMS:
                bad.append(f"{m} -> {d}")
            if mine in GENERIC_SYSTEMS and theirs and theirs != mine:
                bad.append(f"{m} -> {d} (a generic system names no paper's system)")
    assert not bad, bad


@pytest.mark.parametrize("layer", ["runtime", "data", "evaluation"])
def test_shared_layers_import_no_system_and_no_command(layer):
    bad = [
        f"{m} -> {d}"
        for m, deps in _apps_graph().items()
        if m.startswith(f"gesture_apps.{layer}")
        for d in deps
        if d.startswith(("gesture_apps.systems", "gesture_apps.cli"))
    ]
    assert not bad, bad


@pytest.mark.parametrize("dist", sorted(LIBRARIES))
def test_libraries_import_neither_apps_nor_a_sibling(dist):
    own = LIBRARIES[dist]
    root = PACKAGES / dist / "src" / own
    others = {"gesture_apps", *LIBRARIES.values()} - {own}
    bad = []
    for path in root.rglob("*.py"):
        module = _module_name(path, root, own)
        for name in _imports(path, module):
            if name.split(".")[0] in others:
                bad.append(f"{path.relative_to(PACKAGES)}: imports {name}")
    assert not bad, bad


def test_no_apps_file_is_longer_than_700_lines():
    long = {
        str(p.relative_to(APPS)): n
        for p in APPS.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_rules_catch_what_they_guard(tmp_path):
    # the walk itself: a relative import inside a system resolves to the other system
    f = tmp_path / "x.py"
    f.write_text("from ..gesturelsm import model\nimport gesture_apps.systems.omniges.train\n")
    found = _imports(f, "gesture_apps.systems.omniges.train")
    assert "gesture_apps.systems.gesturelsm.model" in found
    assert _system("gesture_apps.systems.gesturelsm.model") == "gesturelsm"
    assert _system("gesture_apps.systems.demo") is None  # demo wires systems; it is none


def test_the_command_line_imports_no_torch_before_a_command_runs():
    # `gesture --help` and the registry stay fast: torch (~2 s) loads inside the commands
    code = "import sys, gesture_apps.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
