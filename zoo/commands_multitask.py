"""``zoo extract RUN --task NAME --out DIR``: one task of a multitask run as a saved model."""

from __future__ import annotations

import argparse

from zoo.cli import command
from zoo.multitask.runs import extract


@command("extract", "write one task of a multitask run out as a single-task saved model")
def cmd_extract(args: argparse.Namespace) -> int:
    out = extract(args.run, args.task, args.out)
    print(f"task section '{args.task}' of {args.run} written to {out} (zoo.load_pretrained "
          "loads it; zoo eval, classify, translate and transcribe take it)")
    return 0


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="multitask run directory (uses best/) or saved multitask model")
    p.add_argument("--task", required=True, metavar="NAME", help="the task section to write out")
    p.add_argument("--out", required=True, help="the saved model directory to create")


cmd_extract.arguments = _add_args
