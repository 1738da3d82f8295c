"""The layers import alone and only downwards: zoo -> tasks -> encoders."""

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


@pytest.fixture(scope="module")
def fresh_imports() -> dict[str, subprocess.CompletedProcess]:
    """Import each package in its own fresh interpreter, all three at once (torch is slow to
    import, so running them side by side saves most of the wait)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {
        package: subprocess.Popen(
            [sys.executable, "-c", _no_upward_modules(package)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for package in ("encoders", "tasks", "zoo")
    }
    results = {}
    for package, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[package] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("package", ["encoders", "tasks", "zoo"])
def test_package_imports_alone_without_loading_the_layers_above(package, fresh_imports) -> None:
    result = fresh_imports[package]
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
