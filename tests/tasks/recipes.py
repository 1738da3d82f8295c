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
from tasks.base import get_task
from tasks.classification import ViTConfig
from tasks.language_modeling import GPTConfig
from tasks.masked_image import MAEConfig
from tasks.masked_lm import BertConfig
from tasks.masked_speech import MaskedSpeechConfig
from tasks.options import SECTIONS
from tasks.speech import ASRConfig
from tasks.translation import Seq2SeqConfig

# The defaults of the recipe sections a task reads (zoo.config's DataSection, TrainSection,
# EvalSection), limited to the settings tasks use.
DATA = {"dataset": "synthetic", "root": None, "val_fraction": 0.1, "num_workers": 0,
        "max_samples": None}
TRAIN = {"seed": 0, "batch_size": 32, "max_steps": None, "label_smoothing": 0.0}
EVAL = {"batch_size": None, "split": "val", "metric": None}

# The tiny model of each task (zoo's test_vit, test_mt_transformer, test_asr_transformer, ...):
# family config and its settings besides the "test" core.
TINY = {
    "classification": (ViTConfig, {"img_size": 32, "patch_size": 8, "num_classes": 10}),
    "translation": (Seq2SeqConfig, {"vocab_size": 100, "decoder_depth": 2}),
    "speech_recognition": (ASRConfig, {"n_mels": 40}),
    "language_modeling": (GPTConfig, {"vocab_size": 100, "max_len": 128}),
    "masked_lm": (BertConfig, {"vocab_size": 100}),
    "masked_image": (MAEConfig, {"img_size": 32, "patch_size": 8, "decoder_dim": 32,
                                 "decoder_depth": 1, "decoder_num_heads": 4}),
    "masked_speech": (MaskedSpeechConfig, {"n_mels": 40}),
}


def make_recipe(
    task: str,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    **sections: dict[str, Any] | None,
) -> SimpleNamespace:
    """A recipe for ``task``: ``data`` (with ``options``), ``model`` (name, overrides), ``train``
    and ``eval`` over the schema's defaults; ``data.options`` and the task's own sections
    (``augment``, ``loss``, ``decode``, ``tokenizer``) as the dataclasses it declares in
    ``option_types``, built from plain values (lists become tuples, as in a checked recipe).
    Checking keys and bounds is the recipe checker's job (tests/zoo/test_config.py)."""
    cls = get_task(task)
    known = {"train", "eval", *(name for name in SECTIONS if "." not in name)}
    unknown = set(sections) - known
    if unknown:
        raise TypeError(f"make_recipe takes data, model and {sorted(known)}, not {sorted(unknown)}")
    data = {**DATA, **(data or {})}
    typed = {"data.options": data.pop("options", None) or {},
             **{name: sections.get(name) or {} for name in SECTIONS if "." not in name}}
    built = {name: _build(cls.option_types[name], values) if name in cls.option_types else None
             for name, values in typed.items()}
    model = {"name": f"tiny_{task}", "overrides": {}, "pretrained": None, "init_from": None,
             **(model or {})}
    return SimpleNamespace(
        task=task,
        model=SimpleNamespace(**model),
        data=SimpleNamespace(**data, options=built.pop("data.options")),
        train=SimpleNamespace(**{**TRAIN, **(sections.get("train") or {})}),
        eval=SimpleNamespace(**{**EVAL, **(sections.get("eval") or {})}),
        **built,
    )


def _tuples(value: Any) -> Any:
    """Lists as tuples, also inside lists and dicts (a checked recipe's form)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _build(cls: type, values: dict[str, Any]) -> Any:
    return cls(**{k: _tuples(v) for k, v in values.items()})


def tiny_config(task: str, **overrides: Any) -> Any:
    """The tiny family config of ``task`` with ``overrides`` (core settings such as ``depth``
    go into its core)."""
    cls, defaults = TINY[task]
    core = {k: overrides.pop(k) for k in list(overrides) if k in CORE_FIELDS}
    fields = {k: _tuples(v) for k, v in {**defaults, **overrides}.items()}
    return cls(**fields, core=make_core_config("test", **core))


def tiny_model(task: str, **overrides: Any) -> nn.Module:
    """The tiny model of ``task`` built from `tiny_config`."""
    return tiny_config(task, **overrides).build()
