"""``zoo generate RUN "PROMPT"``: continue a prompt with a trained language model.

The prompt is printed, then the continuation as it is generated. With ``--num-samples N`` the
samples are generated together and printed one after another, separated by a line of dashes
(nanoGPT's sample.py). The same ``--seed`` gives the same text.
"""

from __future__ import annotations

import argparse
import sys

import tasks  # noqa: F401  (registers the tasks)
from tasks.language_modeling.sampling import SamplingOptions
from zoo.cli import command
from zoo.commands import load_for_prediction

SEPARATOR = "-" * 40


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("prompt", nargs="?", default="", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="sample from the smallest set of tokens whose probability reaches p",
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="> 1 discourages tokens already present (CTRL)",
    )
    p.add_argument("--greedy", action="store_true", help="always the likeliest token")
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    p.add_argument("--num-samples", type=int, default=1, help="continuations to generate")
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop a sample before TEXT (repeatable)",
    )
    p.add_argument("--continuation-only", action="store_true", help="do not echo the prompt")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@command("generate", "continue a prompt with a trained language model")
def cmd_generate(args: argparse.Namespace) -> int:
    options = SamplingOptions(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, repetition_penalty=args.repetition_penalty, greedy=args.greedy,
        seed=args.seed, num_samples=args.num_samples, stop=tuple(args.stop),
    )  # fmt: skip
    task, model = load_for_prediction(args.run, "language_modeling", args.device)
    task.prompt_ids(args.prompt)  # a bad prompt fails before anything is printed
    head = "" if args.continuation_only else args.prompt
    if options.num_samples == 1:  # stream the tokens as they come
        _write(head)
        task.generate(model, args.prompt, options, on_text=lambda _, text: _write(text))
        _write("\n")
        return 0
    for i, text in enumerate(task.generate(model, args.prompt, options)):
        _write(("" if i == 0 else SEPARATOR + "\n") + head + text + "\n")
    return 0


cmd_generate.arguments = _add_args
