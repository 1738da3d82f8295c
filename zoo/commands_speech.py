"""``zoo transcribe RUN AUDIO...``: one line ``path: text`` per audio file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zoo.checkpoint import find_model_dir
from zoo.cli import command
from zoo.commands import TASK_HELP, check_positive, find_run_recipe, load_for_prediction

log = logging.getLogger(__name__)

TASK = "speech_recognition"


@command("transcribe", "transcribe audio files with a trained speech model")
def cmd_transcribe(args: argparse.Namespace) -> int:
    check_positive(beam_size=args.beam_size)
    task, model = load_for_prediction(args.run, TASK, args.device, args.ensemble or (),
                                      section=args.task)
    _warn_if_synthetic(Path(args.run), task.recipe.data.dataset)
    # a file longer than the model reads is named and left out; the others are transcribed
    refused = {p: why for p in args.audio if (why := task.too_long(model, p)) is not None}
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
    found = find_run_recipe(run, find_model_dir(run))
    if found is not None and dataset == "synthetic":
        log.warning("%s learnt the built-in synthetic tones (one per digit), not speech: on real "
                    "recordings it prints digits that mean nothing", run)


def _add_transcribe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory or saved model directory")
    p.add_argument("audio", nargs="+", help="audio files (any sample rate, mono or stereo)")
    p.add_argument("--beam-size", "--beam", type=int, default=None,
                   help="default: the recipe's decode.beam_size; 1 = greedy")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--ensemble", action="append", metavar="RUN",
                   help="average the model's frame log-probabilities with RUN's (repeatable)")
    p.add_argument("--task", default=None, metavar="NAME", help=TASK_HELP)


cmd_transcribe.arguments = _add_transcribe_args


@command("synthesize", "read text files aloud (eSpeak NG, Flite) into a speech manifest")
def cmd_synthesize(args: argparse.Namespace) -> int:
    from tasks.speech.tts import FLITE_VOICES, synthesize_corpus

    flite = FLITE_VOICES if args.flite == [] else args.flite or ()  # bare --flite: all voices
    stats = synthesize_corpus(args.texts, args.out, args.count, args.seed, args.language,
                              flite_voices=flite, flite_share=args.flite_share)
    print(f"{args.out}/transcripts.tsv: {stats['utterances']} utterances, "
          f"{stats['hours']:.2f} h ({stats['left_out']} lines with other characters left out)")
    return 0


def _add_synthesize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+", help="UTF-8 text files, a sentence per line")
    p.add_argument("--out", required=True, help="folder for wavs/ and transcripts.tsv")
    p.add_argument("--count", type=int, default=None, help="sentences drawn (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sentence, voice, rate and pitch draws")
    p.add_argument("--language", default="en-us", help="eSpeak NG voice (default en-us)")
    p.add_argument("--flite", nargs="*", metavar="VOICE",
                   help="also read with these Flite voices (none given: slt rms awb kal16); "
                        "needs the flite program")
    p.add_argument("--flite-share", type=float, default=0.5,
                   help="share of the sentences Flite reads (default 0.5)")


cmd_synthesize.arguments = _add_synthesize_args
