"""``zoo fill-mask RUN "a man is [MASK] a bike"``: the top-k pieces for every [MASK] of each
text, with their probabilities, and the text filled with the best ones."""

from __future__ import annotations

import argparse

from zoo.cli import command
from zoo.commands import load_for_prediction


@command("fill-mask", "predict the [MASK] tokens of sentences with a trained masked LM")
def cmd_fill_mask(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    task, model = load_for_prediction(args.run, "masked_lm", args.device)
    for line in task.predict(model, args.texts, top_k=args.top_k):
        print(line)
    return 0


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("texts", nargs="+", help='sentences with [MASK], e.g. "a man is [MASK] a bike"')
    p.add_argument("--top-k", type=int, default=5, help="pieces shown per [MASK] (default 5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


cmd_fill_mask.arguments = _add_args
