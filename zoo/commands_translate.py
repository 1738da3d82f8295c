"""``zoo translate RUN [SENTENCE ...]``: translate sentences with a trained translation model.

Sentences come from the command line, else from ``--input FILE`` (one per line), else from
stdin; translations are written one per line, in input order. With ``--nbest N`` each input
gets N lines ``index<TAB>score<TAB>translation``.
"""

from __future__ import annotations

import argparse
import sys

import tasks  # noqa: F401  (registers the tasks)
from tasks.translation.data import decode_lines, read_lines
from zoo.cli import command
from zoo.commands import TASK_HELP, check_positive, load_for_prediction


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("sentences", nargs="*", help="sentences (default: --input FILE, else stdin)")
    p.add_argument("--input", "-i", default=None, help="text file with one sentence per line")
    p.add_argument(
        "--beam-size",
        "--beam",  # fairseq's spelling, kept as an alias
        type=int,
        default=None,
        help="default: the recipe's decode.beam_size; 1 = greedy",
    )
    p.add_argument("--nbest", type=int, default=1, help="hypotheses per sentence")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task", default=None, metavar="NAME", help=TASK_HELP)


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.sentences:
        for number, sentence in enumerate(args.sentences, 1):
            try:  # bytes that are not UTF-8 reach argv as lone surrogates
                sentence.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"sentence {number} on the command line is not valid UTF-8"
                ) from None
        return list(args.sentences)
    if args.input is not None:
        return read_lines(args.input)
    # bytes, not sys.stdin's text: its decoding depends on the locale and may let invalid
    # UTF-8 through as lone surrogates, which sentencepiece then refuses without a word
    return decode_lines(sys.stdin.buffer.read(), "standard input")


def _check_counts(args: argparse.Namespace) -> None:
    """--beam-size, --nbest and --batch-size, named as the user typed them."""
    check_positive(beam_size=args.beam_size, nbest=args.nbest, batch_size=args.batch_size)
    if args.beam_size is not None and args.nbest > args.beam_size:
        raise ValueError(f"--nbest {args.nbest} needs --beam-size {args.nbest} or more, got "
                         f"--beam-size {args.beam_size}")


@command("translate", "translate sentences with a trained translation model")
def cmd_translate(args: argparse.Namespace) -> int:
    _check_counts(args)
    task, model = load_for_prediction(args.run, "translation", args.device, section=args.task)
    sentences = _inputs(args)
    if args.beam_size is None and args.nbest > task.decode.beam_size:
        raise ValueError(
            f"--nbest {args.nbest} needs --beam-size {args.nbest} or more (the run's "
            f"decode.beam_size is {task.decode.beam_size})"
        )
    # an empty or blank line stays an empty line (a model asked to translate nothing makes
    # something up)
    todo = [i for i, s in enumerate(sentences) if s.strip()]
    found = task.translate(
        model, [sentences[i] for i in todo], args.beam_size, args.nbest, batch_size=args.batch_size
    )
    texts: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in sentences]
    for i, hyps in zip(todo, found):
        if hyps:  # a search that finished nothing also gives an empty line
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
