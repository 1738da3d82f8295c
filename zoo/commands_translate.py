"""``zoo translate RUN [SENTENCE ...]``: translate sentences with a trained translation model.

Sentences come from the command line, else from ``--input FILE`` (one per line), else from
stdin; translations are written one per line, in input order. With ``--nbest N`` each input
gets N lines ``index<TAB>score<TAB>translation``.
"""

from __future__ import annotations

import argparse
import sys

import tasks  # noqa: F401  (registers the tasks)
from tasks.translation.data import read_lines
from zoo.cli import command
from zoo.commands import TASK_HELP, load_for_prediction


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("sentences", nargs="*", help="sentences (default: --input FILE, else stdin)")
    p.add_argument("--input", "-i", default=None, help="text file with one sentence per line")
    p.add_argument(
        "--beam",
        type=int,
        default=None,
        help="beam size (default: the recipe's eval.beam_size; 1 = greedy)",
    )
    p.add_argument("--nbest", type=int, default=1, help="hypotheses per sentence")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task", default=None, metavar="NAME", help=TASK_HELP)


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.sentences:
        return list(args.sentences)
    if args.input is not None:
        return read_lines(args.input)
    return [line.strip() for line in sys.stdin]


@command("translate", "translate sentences with a trained translation model")
def cmd_translate(args: argparse.Namespace) -> int:
    task, model = load_for_prediction(args.run, "translation", args.device, section=args.task)
    sentences = _inputs(args)
    todo = [i for i, s in enumerate(sentences) if s]  # an empty line stays an empty line
    found = task.translate(
        model, [sentences[i] for i in todo], args.beam, args.nbest, batch_size=args.batch_size
    )
    texts: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in sentences]
    for i, hyps in zip(todo, found):
        decoded = task.tokenizer.decode([h.tokens for h in hyps])
        texts[i] = [(t, h.score) for t, h in zip(decoded, hyps)]
    for i, hyps in enumerate(texts):
        if args.nbest == 1:
            print(hyps[0][0])
        else:
            for text, score in hyps:
                print(f"{i}\t{score:.4f}\t{text}")
    return 0


cmd_translate.arguments = _add_args
