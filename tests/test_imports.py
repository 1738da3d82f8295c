"""The layers import alone and only downwards: zoo -> tasks -> encoders; inside them, every module
imports alone and no import cycle hides in a function."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages above it, which it must never import
UPWARD = {"encoders": ("tasks", "zoo"), "tasks": ("zoo",)}


def _no_upward_modules(package: str) -> str:
    above = UPWARD.get(package, ())
    checks = " or ".join(f"m == {p!r} or m.startswith({p + '.'!r})" for p in above)
    guard = f"assert not any({checks} for m in sys.modules), sorted(sys.modules)" if above else ""
    return f"import {package}, sys; {guard}"


PACKAGES = ("encoders", "tasks", "zoo")

# Imports each module of the three packages by itself: the packages' modules are forgotten
# between two imports (torch and the other libraries stay loaded: they are slow and not ours).
EACH_ALONE = """
import importlib, sys
import torch, torchaudio, torchvision  # noqa: F401
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("encoders", "tasks", "zoo")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
assert not failed, failed
"""


def _modules() -> dict[str, Path]:
    """Every module of the three packages by its dotted name (``__main__`` left out)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@pytest.fixture(scope="module")
def fresh_imports() -> dict[str, subprocess.CompletedProcess]:
    """Import each package in its own fresh interpreter, and each module alone in a fourth, all
    at once (torch is slow to import, so running them side by side saves most of the wait)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = {package: ["-c", _no_upward_modules(package)] for package in PACKAGES}
    commands["each module"] = ["-c", EACH_ALONE, *_modules()]
    procs = {
        what: subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for what, args in commands.items()
    }
    results = {}
    for package, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[package] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_alone_without_loading_the_layers_above(package, fresh_imports) -> None:
    result = fresh_imports[package]
    assert result.returncode == 0, result.stderr


def test_every_module_imports_alone(fresh_imports) -> None:
    result = fresh_imports["each module"]
    assert result.returncode == 0, result.stderr


def _imported_roots(path: Path, package_parts: list[str]) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, (node.module or "").split(".")[0]))
            elif node.level > len(package_parts):
                found.append((node.lineno, "<beyond the top package>"))
            else:
                found.append((node.lineno, package_parts[0]))
    return found


def _upward_imports(package: str) -> tuple[int, list[str]]:
    """How many files were checked, and each import of a layer above ``package``."""
    files = sorted((ROOT / package).rglob("*.py"))
    bad = []
    for path in files:
        parts = list(path.relative_to(ROOT).parts[:-1])  # the file's package, e.g. tasks/speech
        for line, root in _imported_roots(path, parts):
            if root in UPWARD[package] or root.startswith("<"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {root}")
    return len(files), bad


@pytest.mark.parametrize("package", sorted(UPWARD))
def test_no_file_imports_a_layer_above(package: str) -> None:
    checked, bad = _upward_imports(package)
    assert checked >= 3  # the walk found the package's files
    assert bad == []


def test_the_static_check_catches_upward_imports(tmp_path: Path) -> None:
    source = "import torch\nfrom zoo.registry import create_model\nimport tasks.speech as s\n"
    source += "from ... import x\n"
    path = tmp_path / "bad.py"
    path.write_text(source)
    roots = _imported_roots(path, ["encoders", "adapters"])
    assert roots == [(1, "torch"), (2, "zoo"), (3, "tasks"), (4, "<beyond the top package>")]


# ---------------------------------------------------------------------------------------------
# Import cycles, also those hidden in functions


def _imports(path: Path, name: str) -> list[tuple[str, bool]]:
    """(dotted name, at module level) of every import a module runs; ``from X import Y``
    gives ``X.Y`` (the caller keeps the longest prefix that is a module). Imports under
    ``if TYPE_CHECKING:`` never run and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.extend((f"{base}.{alias.name}", top) for alias in node.names)
        inner = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return found


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that importing ``name`` runs last: the longest prefix that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """module -> {module of ours it imports: whether at module level}. Importing ``a.b`` also
    runs package ``a``; that edge to a module's own packages is implied and left out."""
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for imported, top in _imports(path, name):
            target = _ours(imported, modules)
            if target is None or target == name or name.startswith(target + "."):
                continue
            edges[target] = edges.get(target, False) or top
    return graph


def _reachable(graph: dict[str, dict[str, bool]], start: str, top_only: bool) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target, top in graph.get(todo.pop(), {}).items():
            if target not in seen and (top or not top_only):
                seen.add(target)
                todo.append(target)
    return seen


def hidden_cycles(graph: dict[str, dict[str, bool]]) -> list[str]:
    """Each import a cycle runs through: a module-level import whose target imports the
    module back at module level, or an import inside a function whose target imports the
    module back in any way (a cycle that only a function call closes)."""
    found = []
    for name, edges in sorted(graph.items()):
        for target, top in sorted(edges.items()):
            if name in _reachable(graph, target, top_only=top):
                where = "at module level" if top else "inside a function"
                found.append(f"{name} imports {target} {where}, and {target} imports {name} back")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, bool]]:
    return import_graph(_modules())


def test_the_graph_sees_every_module_and_its_imports(graph) -> None:
    assert len(graph) >= 60 and "zoo.cli.base" in graph["zoo.cli.training"]
    assert graph["zoo.cli.training"]["zoo.engine"] is False  # inside cmd_train
    assert graph["zoo.pretrained"]["zoo.registry"] is True


def test_no_import_cycle_at_module_level_or_hidden_in_a_function(graph) -> None:
    assert hidden_cycles(graph) == []


def test_the_registry_and_saved_models_do_not_know_each_other(graph) -> None:
    """The registry is name -> config -> model; where weights come from is zoo.pretrained's,
    which alone puts the two together."""
    weights = {"zoo.atomic", "zoo.saved_model", "zoo.trainer_state", "zoo.pretrained"}
    assert _reachable(graph, "zoo.registry", top_only=False) & weights == set()
    assert "zoo.registry" not in _reachable(graph, "zoo.saved_model", top_only=False)
    assert {"zoo.registry", "zoo.saved_model"} <= set(graph["zoo.pretrained"])


def test_the_cli_parser_imports_only_the_standard_library(graph) -> None:
    """``zoo --help`` builds the parser of every command: zoo.cli and everything it imports at
    module level stay clear of torch and of the packages' heavy modules."""
    loaded = {"zoo", "zoo.cli"}  # importing zoo.cli runs zoo/__init__.py first
    loaded |= {m for name in list(loaded) for m in _reachable(graph, name, top_only=True)}
    cli = {m for m in graph if m.startswith("zoo.cli.")}
    assert loaded <= {"zoo", "zoo.cli", "zoo.errors", "zoo.signals", *cli}
    modules = _modules()
    outside = {
        f"{name} imports {imported}"
        for name in loaded
        for imported, top in _imports(modules[name], name)
        if top and _ours(imported, modules) is None
        and imported.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
    }
    assert outside == set()


def test_the_cycle_check_catches_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import g\n\ndef f():\n    return g()\n")
    (tmp_path / "pkg" / "b.py").write_text("def g():\n    from pkg import a\n    return a\n")
    (tmp_path / "pkg" / "c.py").write_text("def h():\n    import torch\n    from pkg.a import f\n")
    modules = {"pkg": tmp_path / "pkg" / "__init__.py"}
    modules |= {f"pkg.{n}": tmp_path / "pkg" / f"{n}.py" for n in "abc"}
    graph = import_graph(modules)
    assert graph["pkg.c"] == {"pkg.a": False}  # torch is not ours; c -> a closes no cycle
    assert hidden_cycles(graph) == [
        "pkg.b imports pkg.a inside a function, and pkg.a imports pkg.b back"
    ]
