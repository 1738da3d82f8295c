"""``zoo transcribe RUN AUDIO...``: one line ``path: text`` per audio file."""

from __future__ import annotations

import argparse

from zoo.cli import command
from zoo.commands import load_for_prediction

TASK = "speech_recognition"


@command("transcribe", "transcribe audio files with a trained speech model")
def cmd_transcribe(args: argparse.Namespace) -> int:
    task, model = load_for_prediction(args.run, TASK, args.device)
    texts = task.predict(model, args.audio, beam_size=args.beam_size)
    for path, text in zip(args.audio, texts):
        print(f"{path}: {text}")
    return 0


def _add_transcribe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory or saved model directory")
    p.add_argument("audio", nargs="+", help="audio files (any sample rate, mono or stereo)")
    p.add_argument("--beam-size", type=int, default=None, help="default: the recipe's beam_size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


cmd_transcribe.arguments = _add_transcribe_args
