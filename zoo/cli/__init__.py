"""The ``zoo`` command: one subcommand per job, grouped by what they do, one module per group.

==========  ===============================================
catalog     list, info
training    train, eval, demo, plot, average, extract
prediction  classify, translate, transcribe, generate, fill-mask
interpret   attention, heads, prune
tools       synthesize
==========  ===============================================

The parser knows every command once this package is imported. Errors a user can fix are printed
as one sentence (no traceback) with exit status 2.

A new command: write ``@command("name", "help")`` (from `zoo.cli.base`) over ``fn(args) -> int``
in a module of this package that imports only the standard library and ``zoo.cli.base`` at its
top (the library inside ``fn``: ``zoo --help`` must not import torch), and add the module to
the import line below.
"""

from __future__ import annotations

import argparse
import logging
import sys

from zoo.cli import (  # noqa: F401  (register the commands)
    catalog,
    interpret,
    prediction,
    tools,
    training,
)
from zoo.cli.base import COMMANDS, Command
from zoo.errors import CheckpointError
from zoo.signals import Stopped

# The order of the groups in ``zoo --help``; a group not named here comes after these.
GROUP_ORDER = ("catalog", "training", "prediction", "interpret", "tools")

# Exceptions whose message is written for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    OSError,
    ImportError,  # an optional package a command needs (named in the message)
    CheckpointError,
)


def _in_group_order() -> list[tuple[str, Command]]:
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    return sorted(COMMANDS.items(), key=lambda item: rank.get(item[1].group, len(rank)))


def _groups() -> str:
    """The commands of each group, for the end of ``zoo --help``."""
    groups: dict[str, list[str]] = {}
    for name, cmd in _in_group_order():
        groups.setdefault(cmd.group, []).append(name)
    width = max(map(len, groups))
    lines = [f"  {group:<{width}}  {', '.join(names)}" for group, names in groups.items()]
    return "commands by group:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``zoo`` with every registered command and its arguments."""
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="transformer-zoo command line",
        epilog=_groups() + "\n\n`zoo COMMAND --help` lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in _in_group_order():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script and ``python -m zoo``.

    Exit status: 0 done, 1 nothing to do, 2 bad input (one sentence on stderr), 130 and 143
    stopped by SIGINT and SIGTERM (128 + the signal, as a shell reports it).
    """
    try:
        return _run(argv)
    except KeyboardInterrupt as err:  # Ctrl-C anywhere, also while importing: one line
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 130
    except Stopped as err:
        print(f"stopped: {err}", file=sys.stderr)
        return err.exit_status


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
