"""The ``zoo`` command. Each subcommand is a small function; errors a user can fix are printed
as one sentence (no traceback) with a non-zero exit code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from zoo.checkpoint import CheckpointError
from zoo.registry import list_models, model_info
from zoo.signals import Stopped

log = logging.getLogger("zoo")

# Exceptions whose message is written for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    OSError,
    ImportError,  # an optional package a command needs (named in the message)
    CheckpointError,
)

COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``fn(args) -> int`` as subcommand ``name``; ``fn.arguments(parser)`` adds its
    arguments."""

    def wrap(fn):
        COMMANDS[name] = (help, fn)
        return fn

    return wrap


# the values of the family configs' ``task`` and ``modality``
TASKS = (
    "classification", "translation", "speech_recognition", "language_modeling", "masked_lm",
    "masked_image",
)
MODALITIES = ("vision", "text", "speech")


def _format_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _add_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    p.add_argument("--task", default=None, choices=TASKS)
    p.add_argument("--modality", default=None, choices=MODALITIES)


@command("list", "list registered models")
def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, task=args.task, modality=args.modality)
    if not names:
        print(f"no model matches '{args.pattern}'")
        return 1
    rows = [model_info(n) for n in names]
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'task':<18}  {'modality':<8}  {'params':>8}")
    for r in rows:
        params = _format_params(r["num_params"])
        print(f"{r['name']:<{width}}  {r['task']:<18}  {r['modality']:<8}  {params:>8}")
    return 0


cmd_list.arguments = _add_list_args


@command("info", "show a model's config and parameter count")
def cmd_info(args: argparse.Namespace) -> int:
    from zoo.model_card import forward_flops, recipe_results

    info = model_info(args.name)
    print(f"{info['name']}: {info['task']} / {info['modality']}, {info['num_params']:,} parameters")
    if info["task"] == "multitask":  # its tasks, and so its inputs, come from a recipe
        print("a core alone here; a multitask recipe adds its tasks' models (docs/multitask.md)")
    else:
        flops, sample = forward_flops(args.name)
        print(f"forward FLOPs per sample: {flops / 1e9:,.2f} G ({sample})")
    for row in recipe_results(args.name):
        print(f"measured: {row['recipe']}: {row['result']} ({row['measured']}; the recipe "
              "overrides some settings)")
    print(json.dumps(info["config"], indent=2))
    return 0


cmd_info.arguments = lambda p: p.add_argument("name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="transformer-zoo command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        getattr(fn, "arguments", lambda _: None)(p)
        p.set_defaults(func=fn)
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
    import zoo  # noqa: F401  (registers models)
    import zoo.commands_masked  # noqa: F401  (fill-mask)
    from zoo import (  # noqa: F401  (subcommands)
        commands,
        commands_generate,
        commands_interpret,
        commands_multitask,
        commands_speech,
        commands_translate,
    )

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
