"""``zoo translate RUN [SENTENCE ...]``: translate sentences with a trained translation model.

Sentences come from the command line, else from ``--input FILE`` (one per line), else from
stdin; translations are written one per line, in input order. With ``--nbest N`` each input
gets N lines ``index<TAB>score<TAB>translation``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import Task, get_task
from tasks.translation.data import read_lines
from zoo.checkpoint import find_model_dir, load_pretrained, read_model_config
from zoo.cli import command
from zoo.config import load_recipe, recipe_from_dict
from zoo.distributed import resolve_device
from zoo.records import RECIPE_NAME


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("sentences", nargs="*", help="sentences (default: --input FILE, else stdin)")
    p.add_argument("--input", "-i", default=None, help="text file with one sentence per line")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size (default: the recipe's eval.beam_size; 1 = greedy)")
    p.add_argument("--nbest", type=int, default=1, help="hypotheses per sentence")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _recipe(run: Path, model_dir: Path, model_name: str) -> Any:
    """The run's resolved recipe (RUN/config.yaml, found from the run or the model directory);
    a bare saved model gets a minimal translation recipe."""
    for directory in (run, model_dir, model_dir.parent, model_dir.parent.parent):
        if (directory / RECIPE_NAME).is_file():
            return load_recipe(directory / RECIPE_NAME)
    return recipe_from_dict({"task": "translation", "model": {"name": model_name},
                             "train": {"max_steps": 1}})


def load_translator(run: str | Path, device: str = "cpu") -> tuple[Task, torch.nn.Module]:
    """The translation task (with its vocabulary) and the model saved in a run or model
    directory.

    Raises:
        CheckpointError: the path holds no saved model.
        ValueError: the saved model is not a translation model.
    """
    run = Path(run)
    model_dir = find_model_dir(run)
    config = read_model_config(model_dir)
    task_name = config.get("task", "translation")
    if task_name != "translation":
        raise ValueError(f"{model_dir} holds a {task_name} model, not a translation model")
    task = get_task("translation")(_recipe(run, model_dir, config["model"]), run_dir=None)
    task.load_extra(model_dir, config.get("task_meta") or {})
    model = load_pretrained(model_dir).to(resolve_device(device))
    return task, model


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.sentences:
        return list(args.sentences)
    if args.input is not None:
        return read_lines(args.input)
    return [line.strip() for line in sys.stdin]


@command("translate", "translate sentences with a trained translation model")
def cmd_translate(args: argparse.Namespace) -> int:
    task, model = load_translator(args.run, args.device)
    sentences = _inputs(args)
    todo = [i for i, s in enumerate(sentences) if s]  # an empty line stays an empty line
    found = task.translate(model, [sentences[i] for i in todo], args.beam, args.nbest,
                           batch_size=args.batch_size)
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
