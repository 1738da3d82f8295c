"""The multitask model: one shared ``core`` and, per task, the rest of that task's own model.

``MultitaskModel`` holds one ``core`` and a ``tasks`` dict of complete single-task models (an
``ImageClassifier``, a ``Seq2SeqTransformer``, a ``SpeechRecognizer``...) whose ``core`` is
that one module. Each task's model keeps its own parts under their usual names, so the
weights read ``core.*`` (once) and ``tasks.<name>.adapter.*``, ``tasks.<name>.head.*``,
``tasks.<name>.decoder.*``, ...; ``model.tasks[name]`` *is* that task's single-task model and
``save_pretrained(model.tasks[name], DIR)`` writes it out as one (`zoo extract`).

A step that trains one task leaves the other tasks' parts without gradients, so AdamW skips
them (no update, no weight decay) and DDP is told to expect unused parameters.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from encoders import TransformerEncoder
from encoders.core import CoreConfig, core_size, make_core_config
from zoo.registry import build_model, get_config

# Core settings that regularise training rather than shape the core: the run's core sets them.
REGULARISATION = ("dropout", "attn_drop", "drop_path")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def core_base(value: str | dict[str, Any] | CoreConfig) -> CoreConfig:
    """The core a recipe's ``multitask.core`` starts from: its named size when it names one
    (the settings beside ``size`` then apply to every section's model), else the core itself.
    Each section's model must have this core."""
    if isinstance(value, dict) and "size" in value:
        return core_size(value["size"])
    return make_core(value)


def make_core(value: str | dict[str, Any] | CoreConfig) -> CoreConfig:
    """A core config from a size name, a ``CoreConfig``, or a dict of core settings that may
    name a size to start from (``{"size": "mini", "dropout": 0.1}``).

    Raises:
        ValueError: an unknown size. TypeError: a key that is not a core setting.
    """
    if isinstance(value, dict) and "size" in value:
        rest = {k: v for k, v in value.items() if k != "size"}
        return make_core_config(core_size(value["size"]), **rest)
    return make_core_config(value)


def core_mismatch(core: CoreConfig, run_core: CoreConfig) -> list[str]:
    """The settings (other than `REGULARISATION`) in which ``core`` differs from ``run_core``."""
    return [
        f.name
        for f in dataclasses.fields(CoreConfig)
        if f.name not in REGULARISATION and getattr(core, f.name) != getattr(run_core, f.name)
    ]


def check_core(section: str, model_name: str, core: CoreConfig, run_core: CoreConfig) -> None:
    """Refuse a section whose model has another core than the run's, naming both.

    Raises:
        ValueError: the cores differ in a setting that shapes them.
    """
    differ = core_mismatch(core, run_core)
    if differ:
        own = ", ".join(f"{k}={getattr(core, k)}" for k in differ)
        run = ", ".join(f"{k}={getattr(run_core, k)}" for k in differ)
        raise ValueError(
            f"task section '{section}': model {model_name} has a core with {own}, but the run's "
            f"core (multitask.core) is of a size with {run}; every section needs a model of the "
            "run's core size"
        )


def check_name(name: Any) -> str:
    """A section name usable as a module key, a folder and a metric prefix.

    Raises:
        ValueError: anything but a letter or underscore followed by letters, digits, _ or -.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"task section name {name!r} must start with a letter or _ and hold only letters, "
            "digits, _ and - (it prefixes metrics and names a folder)"
        )
    return name


def _resolve(entry: Any) -> dict[str, Any]:
    """One ``tasks`` entry checked and with its model's full settings (its core left out: the
    shared core replaces it, as ``create_model(name, core=...)`` would)."""
    if not isinstance(entry, dict) or set(entry) - {"name", "model", "config"} or (
        "name" not in entry or "model" not in entry
    ):
        raise TypeError(f"a multitask model's task entry is {{name, model, config}}, got {entry!r}")
    name = check_name(entry["name"])
    try:
        cfg = get_config(entry["model"], **dict(entry.get("config") or {}))
    except (TypeError, ValueError) as e:
        raise type(e)(f"task section '{name}': {e}") from None
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "core"}
    return {"name": name, "model": entry["model"], "config": settings}


@dataclass
class MultitaskConfig:
    """Several registered single-task models on one shared core (PolyViT, Likhosherstov et al.
    2022: one ViT co-trained on images, video and audio).

    Attributes:
        core: the shared core; every task's model is built with it.
        tasks: one entry per task: ``{"name": section name, "model": registered model name,
            "config": that model's settings}`` (resolved to all of them, without ``core``).
    """

    task: ClassVar[str] = "multitask"
    modality: ClassVar[str] = "multi"

    core: CoreConfig = field(default_factory=lambda: core_size("test"))
    tasks: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        self.core = make_core(self.core)
        self.tasks = tuple(_resolve(entry) for entry in self.tasks)
        names = [t["name"] for t in self.tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"task section '{twice[0]}' is listed twice; names must differ")

    def build(self) -> MultitaskModel:
        return MultitaskModel(self)


class MultitaskModel(nn.Module):
    """``core`` shared by the single-task models in ``tasks`` (see the module docstring).

    A core parameter trains when it trains in any task's own model (a ViT with ``fc_norm``
    freezes its core's unused final norm, which another task still uses).
    """

    # DDP: a step trains one task, so the other tasks' parts get no gradient in it
    find_unused_parameters: ClassVar[bool] = True

    def __init__(self, cfg: MultitaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        models = {
            t["name"]: build_model(t["model"], get_config(t["model"], **t["config"], core=cfg.core))
            for t in cfg.tasks
        }
        trains: dict[str, bool] = {}
        for model in models.values():
            for key, p in model.core.named_parameters():
                trains[key] = trains.get(key, False) or p.requires_grad
        # the first task's own core is the shared one: a one-task model starts as its single
        # model would from the same seed
        first = next(iter(models.values()), None)
        self.core = first.core if first is not None else TransformerEncoder.from_config(cfg.core)
        for key, p in self.core.named_parameters():
            p.requires_grad_(trains.get(key, p.requires_grad))
        for model in models.values():
            model.core = self.core
        self.tasks = nn.ModuleDict(models)

    def forward(self, *args: Any, task: str, **kwargs: Any) -> Any:
        """Task ``task``'s model on its own inputs (see its ``forward``)."""
        return self.tasks[task](*args, **kwargs)

    def forward_features(self, *args: Any, task: str, **kwargs: Any) -> Any:
        """The core's output tokens (B, N, D) and padding mask (B, N) of task ``task``'s
        inputs, from its adapter and the shared core."""
        return self.tasks[task].forward_features(*args, **kwargs)

    def forward_head(self, *args: Any, task: str, **kwargs: Any) -> Any:
        """Task ``task``'s head (and decoder) on the core's output (see its ``forward_head``)."""
        return self.tasks[task].forward_head(*args, **kwargs)


class TaskView:
    """Task ``name`` of a DDP-wrapped `MultitaskModel`, as the task's own loss sees a model:
    calling it runs the wrapper (so DDP syncs the step's gradients) with ``task=name``; any
    attribute is the task's own model's."""

    def __init__(self, wrapper: nn.Module, inner: MultitaskModel, name: str) -> None:
        self._wrapper, self._name, self._model = wrapper, name, inner.tasks[name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, task=self._name, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._model, attr)
