"""What every ``zoo`` command module uses: the ``@command`` decorator and a few helpers.

A command is a function ``fn(args) -> int`` registered under its name; ``fn.arguments(parser)``
(or ``arguments=`` in the decorator) adds its arguments. A command module imports only the
standard library and ``zoo.cli.base`` at its top, and imports the library (torch, tasks, the
engine) inside the command's function: ``zoo --help`` builds the parser of every command
without importing torch. ``tests/zoo/cli/test_startup.py`` checks this.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A registered subcommand: its help line, function and group (its module's name)."""

    help: str
    fn: Handler
    group: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        getattr(self.fn, "arguments", lambda _: None)(parser)


COMMANDS: dict[str, Command] = {}


Arguments = Callable[[argparse.ArgumentParser], None]


def command(name: str, help: str, arguments: Arguments | None = None):
    """Register ``fn(args) -> int`` as subcommand ``name`` (a name registered twice raises).

    Its arguments come from ``arguments(parser)``, else from ``fn.arguments(parser)`` set after
    the function. Its group in ``zoo --help`` is the last part of its module's name.
    """

    def wrap(fn: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"command '{name}' is already registered")
        if arguments is not None:
            fn.arguments = arguments
        COMMANDS[name] = Command(help, fn, fn.__module__.rsplit(".", 1)[-1])
        return fn

    return wrap


def check_positive(**flags: int | None) -> None:
    """Refuse a count flag below 1, naming it as typed: ``check_positive(batch_size=0)`` ->
    "--batch-size must be at least 1, got 0" (None: not given)."""
    for name, value in flags.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def cell(value: Any) -> str:
    """A value as a table cell: floats to 4 significant digits, None as ``-``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as left-aligned columns under a header line."""
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def add_task_section(parser: argparse.ArgumentParser, help: str = "") -> None:
    """``--task NAME``: the task section of a multitask run that a command uses."""
    parser.add_argument("--task", default=None, metavar="NAME", help=help or (
        "a multitask run: its task section to use (needed when it has several of the kind)"))


def overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``key=value`` overrides come after options too (``zoo train R --out D k=v``).

    argparse fills all positionals from the first run of them, so ``k=v`` after ``--out D``
    would be rejected; intermixed parsing is what fixes that, but argparse cannot intermix at
    the top level (it has subparsers), so this subcommand's parser uses it for itself.
    """
    plain = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        parser.parse_known_args = plain  # the intermixed parser calls it (Python < 3.13)
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args

    parser.parse_known_args = parse_known_args
