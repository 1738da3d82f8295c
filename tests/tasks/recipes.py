"""Recipes and models for the task tests, built without ``zoo`` (tasks never import it, and
neither do their tests).

A task reads its recipe by attribute (``recipe.data``, ``recipe.train``, ``recipe.eval``; see
tasks/base.py), so a namespace with the recipe schema's defaults stands in for
``zoo.config.Recipe``; a model is its family config's ``build()``, as in test_models.py.
``tests/zoo/test_task_test_helpers.py`` checks that these defaults and the tiny configs equal
zoo's recipe defaults and ``test_*`` variants.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from torch import nn

from encoders.core import CORE_FIELDS, make_core_config
from tasks.classification import ViTConfig
from tasks.speech import ASRConfig
from tasks.translation import Seq2SeqConfig

# The defaults of the recipe sections a task reads (zoo.config's DataSection, TrainSection,
# EvalSection), limited to the settings tasks use.
DATA = {
    "dataset": "synthetic",
    "root": None,
    "val_fraction": 0.1,
    "num_workers": 0,
    "image_size": None,
    "max_samples": None,
    "src_lang": None,
    "tgt_lang": None,
    "vocab_size": None,
    "sample_rate": None,
    "options": {},
}
TRAIN = {"seed": 0, "batch_size": 32, "max_steps": None, "label_smoothing": 0.0}
EVAL = {"batch_size": None, "split": "val", "metric": None, "beam_size": 1}

# The tiny model of each task (zoo's test_vit, test_mt_transformer, test_asr_transformer):
# family config and its settings besides the "test" core.
TINY = {
    "classification": (ViTConfig, {"img_size": 32, "patch_size": 8, "num_classes": 10}),
    "translation": (Seq2SeqConfig, {"vocab_size": 100, "decoder_depth": 2}),
    "speech_recognition": (ASRConfig, {"n_mels": 40}),
}


def make_recipe(
    task: str,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> SimpleNamespace:
    """A recipe for ``task`` with the schema's defaults under ``data``, ``model`` (name,
    overrides) and the other ``sections`` (``train``, ``eval``)."""
    unknown = set(sections) - {"train", "eval"}
    if unknown:
        raise TypeError(f"make_recipe takes data, model, train and eval, not {sorted(unknown)}")
    model = {"name": f"tiny_{task}", "overrides": {}, "pretrained": None, **(model or {})}
    return SimpleNamespace(
        task=task,
        model=SimpleNamespace(**model),
        data=SimpleNamespace(**{**DATA, "options": {}, **(data or {})}),
        train=SimpleNamespace(**{**TRAIN, **sections.get("train", {})}),
        eval=SimpleNamespace(**{**EVAL, **sections.get("eval", {})}),
    )


def tiny_config(task: str, **overrides: Any) -> Any:
    """The tiny family config of ``task`` with ``overrides`` (core settings such as ``depth``
    go into its core)."""
    cls, defaults = TINY[task]
    core = {k: overrides.pop(k) for k in list(overrides) if k in CORE_FIELDS}
    return cls(**{**defaults, **overrides}, core=make_core_config("test", **core))


def tiny_model(task: str, **overrides: Any) -> nn.Module:
    """The tiny model of ``task`` built from `tiny_config`."""
    return tiny_config(task, **overrides).build()
