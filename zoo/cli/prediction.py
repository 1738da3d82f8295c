"""``zoo classify``, ``zoo translate``, ``zoo transcribe``, ``zoo generate`` and ``zoo fill-mask``:
a trained run's predictions.

Each loads the run's task and model (`zoo.inference.load_for_prediction`) and prints what the
task's ``predict`` returns; task-specific work stays behind the Task contract. On a multitask
run, ``--task NAME`` picks the section (`zoo.multitask.runs`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zoo.cli.base import add_device, add_task_section, check_positive, command

log = logging.getLogger(__name__)

RUN_HELP = "run directory (uses best/ or the newest checkpoint) or saved model"


# ---------------------------------------------------------------------------------------------
# zoo classify


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image")
    add_device(p)
    add_task_section(p)


@command("classify", "print the top-5 classes of images with a trained image classifier",
         arguments=_classify_args)
def cmd_classify(args: argparse.Namespace) -> int:
    from zoo.inference import load_for_prediction

    check_positive(topk=args.topk)
    task, model = load_for_prediction(args.run, "classification", args.device, section=args.task)
    for line in task.predict(model, args.images, topk=args.topk):
        print(line)
    return 0


# ---------------------------------------------------------------------------------------------
# zoo translate: sentences from the command line, else from --input FILE (one per line), else
# from stdin; one translation per line in input order, or with --nbest N, N lines
# ``index<TAB>score<TAB>translation`` per input


def _translate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
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
    add_device(p)
    add_task_section(p)


def _sentences(args: argparse.Namespace) -> list[str]:
    from tasks.translation.data import decode_lines, read_lines

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


@command("translate", "translate sentences with a trained translation model",
         arguments=_translate_args)
def cmd_translate(args: argparse.Namespace) -> int:
    from zoo.inference import load_for_prediction

    _check_counts(args)
    task, model = load_for_prediction(args.run, "translation", args.device, section=args.task)
    sentences = _sentences(args)
    beam_size = task.section("decode").beam_size
    if args.beam_size is None and args.nbest > beam_size:
        raise ValueError(
            f"--nbest {args.nbest} needs --beam-size {args.nbest} or more (the run's "
            f"decode.beam_size is {beam_size})"
        )
    found = task.predict(model, sentences, beam_size=args.beam_size, nbest=args.nbest, scores=True,
                         batch_size=args.batch_size)
    for i, hyps in enumerate(found):
        # a blank input, or a search that finished nothing, gives an empty line (a model asked
        # to translate nothing makes something up)
        hyps = hyps or [("", 0.0)]
        if args.nbest == 1:
            print(hyps[0][0])
        else:
            for text, score in hyps:
                print(f"{i}\t{score:.4f}\t{text}")
    return 0


# ---------------------------------------------------------------------------------------------
# zoo transcribe


def _transcribe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory or saved model directory")
    p.add_argument("audio", nargs="+", help="audio files (any sample rate, mono or stereo)")
    p.add_argument("--beam-size", "--beam", type=int, default=None,
                   help="default: the recipe's decode.beam_size; 1 = greedy")
    add_device(p)
    p.add_argument("--ensemble", action="append", metavar="RUN",
                   help="average the model's frame log-probabilities with RUN's (repeatable)")
    add_task_section(p)


@command("transcribe", "transcribe audio files with a trained speech model",
         arguments=_transcribe_args)
def cmd_transcribe(args: argparse.Namespace) -> int:
    """One line ``path: text`` per audio file; a file the model cannot read (longer than its
    positions) is named on stderr and the others are transcribed (exit status 2)."""
    from zoo.inference import load_for_prediction

    check_positive(beam_size=args.beam_size)
    task, model = load_for_prediction(args.run, "speech_recognition", args.device,
                                      args.ensemble or (), section=args.task)
    _warn_if_synthetic(Path(args.run), task.recipe.data.dataset)
    refused = {p: why for p in args.audio if (why := task.check_input(model, p)) is not None}
    for why in refused.values():
        print(f"error: {why}", file=sys.stderr)
    paths = [p for p in args.audio if p not in refused]
    texts = task.predict(model, paths, beam_size=args.beam_size) if paths else []
    for path, text in zip(paths, texts):
        print(f"{path}: {text}")
    return 2 if refused else 0


def _warn_if_synthetic(run: Path, dataset: str) -> None:
    """Say so when the run's recipe trained on the built-in tones, not on speech (``dataset``:
    the speech task's own, a section's in a multitask run)."""
    from zoo.run_recipe import find_run_recipe
    from zoo.saved_model import find_model_dir

    found = find_run_recipe(run, find_model_dir(run))
    if found is not None and dataset == "synthetic":
        log.warning("%s learnt the built-in synthetic tones (one per digit), not speech: on real "
                    "recordings it prints digits that mean nothing", run)


# ---------------------------------------------------------------------------------------------
# zoo generate: the prompt is printed, then the continuation as it is generated; with
# --num-samples N the samples are generated together and printed one after another, separated
# by a line of dashes (nanoGPT's sample.py). The same --seed gives the same text.

SEPARATOR = "-" * 40


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("prompt", nargs="?", default="", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample from the smallest set of tokens whose probability reaches p")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already present (CTRL)")
    p.add_argument("--greedy", action="store_true", help="always the likeliest token")
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    p.add_argument("--num-samples", type=int, default=1, help="continuations to generate")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop a sample before TEXT (repeatable)")
    p.add_argument("--continuation-only", action="store_true", help="do not echo the prompt")
    add_device(p)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@command("generate", "continue a prompt with a trained language model", arguments=_generate_args)
def cmd_generate(args: argparse.Namespace) -> int:
    from tasks.language_modeling.sampling import SamplingOptions
    from zoo.inference import load_for_prediction

    sampling = SamplingOptions(  # a bad option fails before anything is printed
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, repetition_penalty=args.repetition_penalty, greedy=args.greedy,
        seed=args.seed, num_samples=args.num_samples, stop=tuple(args.stop),
    )  # fmt: skip
    task, model = load_for_prediction(args.run, "language_modeling", args.device)
    why = task.check_input(model, args.prompt)  # a bad prompt fails before anything is printed
    if why is not None:
        raise ValueError(why)
    head = "" if args.continuation_only else args.prompt
    if args.num_samples == 1:  # stream the tokens as they come
        _write(head)
        task.predict(model, [args.prompt], sampling, on_text=lambda _, text: _write(text))
        _write("\n")
        return 0
    for i, text in enumerate(task.predict(model, [args.prompt], sampling)[0]):
        _write(("" if i == 0 else SEPARATOR + "\n") + head + text + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# zoo fill-mask RUN "a man is [MASK] a bike": the top-k pieces for every [MASK] of each text,
# with their probabilities, and the text filled with the best ones


def _fill_mask_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("texts", nargs="+", help='sentences with [MASK], e.g. "a man is [MASK] a bike"')
    p.add_argument("--top-k", type=int, default=5, help="pieces shown per [MASK] (default 5)")
    add_device(p)


@command("fill-mask", "predict the [MASK] tokens of sentences with a trained masked LM",
         arguments=_fill_mask_args)
def cmd_fill_mask(args: argparse.Namespace) -> int:
    from zoo.inference import load_for_prediction

    check_positive(top_k=args.top_k)
    task, model = load_for_prediction(args.run, "masked_lm", args.device)
    for line in task.predict(model, args.texts, top_k=args.top_k):
        print(line)
    return 0
