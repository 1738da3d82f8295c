"""What the multitask tests share: tiny sections of the three tasks on the built-in data, with
the "test" core shrunk to one layer of width 32, and recipes made of them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

TINY_CORE = {"size": "test", "depth": 1, "dim": 32, "num_heads": 2}
SECTIONS = {
    "vision": {
        "task": "classification", "model": {"name": "test_vit"},
        "data": {"dataset": "synthetic",
                 "options": {"num_train": 64, "num_val": 16, "num_test": 16, "native_size": 16}},
        "train": {"batch_size": 16},
    },
    "translation": {
        "task": "translation", "model": {"name": "test_mt_transformer"},
        "data": {"dataset": "synthetic", "options": {"num_samples": 200, "num_eval": 8}},
        "tokenizer": {"vocab_size": 120},
        "train": {"batch_size": 256},
    },
    "speech": {
        "task": "speech_recognition",
        "model": {"name": "test_asr_transformer", "overrides": {"spec_augment": False}},
        "data": {"dataset": "synthetic", "options": {"train_utterances": 32, "eval_utterances": 8}},
        "train": {"batch_size": 8},
    },
}  # fmt: skip


def tiny_multi(names: tuple[str, ...] = ("vision", "translation", "speech"),
               steps: tuple[int, ...] = (4, 3, 3), **train_options: Any) -> dict[str, Any]:
    """A multitask recipe of the named sections; ``max_steps`` is the sum of their steps."""
    tasks = [{"name": n, **copy.deepcopy(SECTIONS[n]), "steps": s} for n, s in zip(names, steps)]
    return {
        "task": "multitask",
        "model": {"name": "multitask"},
        "multitask": {"core": dict(TINY_CORE), "tasks": tasks},
        "schedule": {"warmup_steps": 1},
        "train": {"max_steps": sum(steps), "eval_every": 5, "checkpoint_every": 5,
                  "log_every": 1, **train_options},
    }  # fmt: skip


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path



