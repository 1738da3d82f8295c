"""The zoo command itself: a parser that knows every command without importing torch, commands
grouped by what they do, exit status and one line on stderr from the real program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zoo.cli.helpers import ROOT
from zoo.cli import GROUP_ORDER, build_parser
from zoo.cli.base import COMMANDS, command
from zoo.cli.catalog import MODALITIES, TASKS

GROUPS = {
    "catalog": ["list", "info"],
    "training": ["train", "eval", "demo", "plot", "average", "extract"],
    "prediction": ["classify", "translate", "transcribe", "generate", "fill-mask"],
    "interpret": ["attention", "heads", "prune"],
    "tools": ["synthesize"],
}

# the help of the command and of a few subcommands, then what they imported
HELP = """
import sys
from zoo.cli import main
for argv in (["--help"], ["list", "--help"], ["train", "--help"], ["translate", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "tasks", "encoders")))
"""


def test_help_knows_every_command_without_importing_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", HELP], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *help_text, imported = proc.stdout.strip().splitlines()
    assert imported == "[]"
    epilog = "\n".join(help_text)
    for group, names in GROUPS.items():
        assert f"  {group:<10}  {', '.join(names)}" in epilog


def test_commands_are_grouped_by_what_they_do() -> None:
    groups: dict[str, list[str]] = {}
    for name, cmd in COMMANDS.items():
        groups.setdefault(cmd.group, []).append(name)
    assert {g: sorted(n) for g, n in groups.items()} == {g: sorted(n) for g, n in GROUPS.items()}
    assert list(GROUP_ORDER) == list(GROUPS)
    shown = build_parser()._subparsers._group_actions[0].choices  # in group order
    assert list(shown) == [name for names in GROUPS.values() for name in names]


def test_a_command_name_registered_twice_raises() -> None:
    with pytest.raises(ValueError, match="command 'list' is already registered"):
        command("list", "another list")(lambda args: 0)
    assert COMMANDS["list"].fn.__module__ == "zoo.cli.catalog"


def test_list_choices_are_the_tasks_and_modalities_of_the_registered_models() -> None:
    import zoo

    configs = [zoo.get_config(name) for name in zoo.list_models()]
    assert set(TASKS) == {cfg.task for cfg in configs}
    assert set(MODALITIES) == {cfg.modality for cfg in configs}


def test_python_m_zoo_exit_code(tmp_path: Path) -> None:
    """The real command: exit code 2 and one line on stderr, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "train", str(tmp_path / "x.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: recipe file not found: {tmp_path}/x.yaml"]
