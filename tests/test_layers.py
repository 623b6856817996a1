"""The package's three layers: imports go course → engine → lessons, never back, and nothing cycles.

Every ``import`` of the package is read from the source (ast), function-level imports included,
so a lazy import cannot hide a wrong direction or a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PACKAGE = Path(__file__).resolve().parent.parent / "minisd3"
RANK = {"lesson": 0, "engine": 1, "course": 2, "cli": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "cli" if len(parts) > 1 else "lesson"  # minisd3/__init__ re-exports lesson helpers
    return parts[1] if parts[1] in ("engine", "course") else "lesson"


def package_imports() -> dict[str, set[str]]:
    """module → the package modules it imports (``from . import x`` resolved to the module x when it is one)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    child = f"{target}.{alias.name}"
                    found.add(child if child in modules else target)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minisd3"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("minisd3"))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_layer_rule_holds_for_every_import():
    wrong = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, targets in package_imports().items()
             for b in targets if RANK[layer(b)] > RANK[layer(a)]]
    assert not wrong, "imports must go course → engine → lessons:\n" + "\n".join(sorted(wrong))


def test_the_layer_rule_would_catch_a_lesson_importing_the_engine():
    assert RANK[layer("minisd3.engine.loop")] > RANK[layer("minisd3.autoencoder")]
    assert RANK[layer("minisd3.course.plotting")] > RANK[layer("minisd3.engine.grids")]
    assert layer("minisd3.cli") == "cli" and layer("minisd3") == "lesson"


def test_no_import_cycles():
    graph = package_imports()
    graph = {a: {b for b in targets if b != "minisd3"} for a, targets in graph.items()}  # the package root
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def third_party_imports() -> tuple[set[str], set[str]]:
    """(modules imported at a module's top level, modules imported only inside functions) of the package."""
    top, lazy = set(), set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_nodes = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            roots = {n.split(".")[0] for n in names} - {"minisd3", "__future__"} - set(sys.stdlib_module_names)
            (top if id(node) in top_nodes else lazy).update(roots)
    return top, lazy - top


DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "torch_fidelity": "torch-fidelity", "IPython": "ipython"}


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for r in requirements}

    extras = set().union(*map(names, project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), extras


def test_pyproject_declares_what_the_package_imports():
    top, lazy = third_party_imports()
    required, optional = declared()
    as_dist = {m: DISTRIBUTION.get(m, m).lower() for m in top | lazy}
    assert {as_dist[m] for m in top} <= required, f"imported at module top but not a dependency: " \
        f"{sorted(as_dist[m] for m in top if as_dist[m] not in required)}"
    assert {as_dist[m] for m in lazy} <= required | optional, f"imported lazily but declared nowhere: " \
        f"{sorted(as_dist[m] for m in lazy if as_dist[m] not in required | optional)}"


def test_the_version_is_written_once():
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", []) and "version" not in project
    import minisd3

    assert minisd3.__version__.count(".") == 2


@pytest.mark.parametrize("blocked", [("torchvision", "torch_fidelity", "diffusers", "transformers")])
def test_help_runs_without_the_optional_dependencies(blocked):
    """``python -m minisd3 --help`` (and a subcommand's) with the optional packages made unimportable."""
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in blocked)
    for argv in (["--help"], ["train", "--help"], ["grade", "--help"]):
        code = (f"import sys; {block}; sys.argv = ['minisd3', *{argv!r}]; "
                "import runpy; runpy.run_module('minisd3', run_name='__main__')")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
        assert done.returncode == 0, done.stderr
        assert "usage: minisd3" in done.stdout


def test_ruff_finds_nothing():
    """The linter configured in pyproject.toml is clean over the package, the tests and the benchmarks."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "minisd3", "tests", "benchmarks", "conftest.py"],
                          capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_does_not_import_torch():
    """Every --help answers before torch is imported (lazy imports: torch costs seconds of CPU)."""
    commands = ["execute", "exercises", "grade", "train", "sample", "eval", "export", "bench", "autoencoder",
                "encode-latents"]
    code = ("import sys, runpy, contextlib, io\n"
            f"for argv in [['--help']] + [[c, '--help'] for c in {commands!r}]:\n"
            "    sys.argv = ['minisd3', *argv]\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        runpy.run_module('minisd3', run_name='__main__')\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
