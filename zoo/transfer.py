"""Transfer: initialise parts of a model from any saved model, and freeze parameters by name.

``init_from(model, path, parts)`` reads the named parts (``core``, ``decoder``, ``adapter``,
``head``..., or fnmatch patterns over state-dict names) of a saved model or run directory of
any task straight from its ``model.safetensors``, by key; the source model is never built, so
a vision core initialises a speech model. A tensor of the part that the source lacks starts
fresh (a Conformer core initialised from a plain Transformer core keeps its own macaron
feed-forwards and convolution modules); one whose shape differs is an error.

``freeze(model, spec)`` sets ``requires_grad=False`` on the parameters a preset or a list of
fnmatch patterns selects, before the optimizer and DDP are built, so frozen parameters are
neither optimized nor all-reduced. The presets:

- ``linear_probe``: only what reads the core's output trains: ``head`` (and where there is a
  decoder: ``decoder``, ``decoder_head``, ``tgt_adapter``). In translation the source and target
  embeddings are tied to the output projection, so that one table trains too. In a multitask
  model the same parts of every task train (``tasks.<name>.head.*``, ...).
- ``frozen_core``: the whole ``core`` (the encoder stack) is frozen; adapters, decoder and head
  train.
- ``fpt``: the Frozen Pretrained Transformer (Lu et al. 2021): the core is frozen except its
  LayerNorms (``core.*norm*``); adapters (positions included) and head train.

A BatchNorm whose parameters are all frozen stays in eval mode during training (its running
statistics are used, not updated, as detectron2's FrozenBatchNorm2d), so a frozen part is
bit-identical at the end of a run, buffers included (see `frozen_batchnorms`).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from zoo.errors import CheckpointError
from zoo.saved_model import WEIGHTS_NAME, find_model_dir, read_model_config

logger = logging.getLogger(__name__)

# what reads the core's output, in a single-task model and in each task of a multitask model
# (``tasks.<name>.head.*``, ...)
_READOUT = ("head.*", "decoder.*", "decoder_head.*", "tgt_adapter.*")
# preset -> (patterns of parameters to freeze, patterns that stay trainable among those)
PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "linear_probe": (("*",), _READOUT + tuple(f"tasks.*.{p}" for p in _READOUT)),
    "frozen_core": (("core.*",), ()),
    "fpt": (("core.*",), ("core.*norm*",)),
}
_GLOB = re.compile(r"[*?\[.]")  # a part with one of these is a name pattern, not a part name


# ---------------------------------------------------------------------------------------------
# Reading a saved model by key


class _Source:
    """The tensors of a saved model's ``model.safetensors``, read lazily by name.

    Tied tensors are stored once; the file's metadata maps each dropped name to the kept one,
    and both names are served here.
    """

    def __init__(self, path: str | Path) -> None:
        self.dir = find_model_dir(path)
        config = read_model_config(self.dir)
        self.model_name, self.task = config["model"], config.get("task")
        self.file = self.dir / WEIGHTS_NAME
        try:
            self._handle = safe_open(str(self.file), framework="pt")
            stored = set(self._handle.keys())
            meta = self._handle.metadata() or {}
        except Exception as e:  # safetensors raises its own error type, or OSError
            raise CheckpointError(
                f"{self.file} is missing, corrupt or not a safetensors file ({e})"
            ) from e
        aliases = {k: v for k, v in meta.items() if k not in stored and v in stored}
        self.names = {**{k: k for k in stored}, **aliases}  # any name -> its stored name

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle.get_slice(self.names[name]).get_shape())

    def tensor(self, name: str) -> Tensor:
        return self._handle.get_tensor(self.names[name])

    def describe(self) -> str:
        return f"{self.dir} ({self.model_name})"


def _parts_of(names: Iterable[str]) -> list[str]:
    """The top-level parts that state-dict ``names`` belong to, in order of appearance."""
    return list(dict.fromkeys(n.split(".")[0] for n in names))


def _select(part: str, target: list[str], source: _Source, model: nn.Module) -> list[str]:
    """The target names that ``part`` (a part name or an fnmatch pattern) selects."""
    valid = _parts_of(target)
    if not _GLOB.search(part):
        if part not in valid:
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(
                f"unknown part '{part}'{hint}: {type(model).__name__} has parts "
                f"{', '.join(valid)}, or give an fnmatch pattern such as 'core.blocks.0.*'"
            )
        if part not in _parts_of(source.names):
            raise ValueError(
                f"the source model {source.describe()} has no part '{part}'; its parts are "
                f"{', '.join(sorted(_parts_of(source.names)))}"
            )
        return [n for n in target if n.startswith(f"{part}.")]
    selected = [n for n in target if fnmatch.fnmatchcase(n, part)]
    if not selected:
        raise ValueError(
            f"pattern '{part}' matches no tensor of {type(model).__name__}, whose names look "
            f"like {target[len(target) // 2]}"
        )
    return selected


def _plan(
    model: nn.Module, source: _Source, parts: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """The target names to load and to leave fresh, and the source names left unused."""
    if not parts:
        raise ValueError("init_from needs at least one part, e.g. [core]")
    target = model.state_dict()
    names = list(target)
    loaded: list[str] = []
    fresh: list[str] = []
    unused: list[str] = []
    for part in parts:
        selected = _select(part, names, source, model)
        for name in selected:
            if name not in source.names:
                fresh.append(name)
                continue
            found, want = source.shape(name), tuple(target[name].shape)
            if found != want:
                raise ValueError(
                    f"tensor '{name}' has shape {found} in {source.file} but {want} in "
                    f"{type(model).__name__}, so part '{part}' cannot be loaded"
                )
            loaded.append(name)
        if not any(n in source.names for n in selected):
            raise ValueError(
                f"part '{part}' of {source.describe()} shares no tensor name with "
                f"{type(model).__name__}'s, so it cannot initialise it"
            )
        if not _GLOB.search(part):
            unused += [n for n in source.names if n.startswith(f"{part}.") and n not in target]
    return list(dict.fromkeys(loaded)), list(dict.fromkeys(fresh)), unused


def init_from(model: nn.Module, path: str | Path, parts: Sequence[str] = ("core",)) -> dict:
    """Copy ``parts`` of the saved model at ``path`` into ``model``, in place.

    Args:
        model: the model to initialise (any family; its own init stays where nothing loads).
        path: a saved model directory, or a run directory holding one (``best/`` first).
        parts: part names (``core``, ``decoder``, ``adapter``, ``head``, ``src_adapter``...,
            the model's top-level modules) or fnmatch patterns over state-dict names.

    Returns:
        A summary event for ``metrics.jsonl``: the source, and the names loaded, left fresh
        (the target has them, the source does not) and unused (the source has them).

    Raises:
        CheckpointError: ``path`` holds no readable saved model.
        ValueError: an unknown part, a part the source lacks or shares no tensor name with,
            or a tensor whose shape differs (one sentence naming it and both shapes).
    """
    source = _Source(path)
    loaded, fresh, unused = _plan(model, source, parts)
    state = model.state_dict()
    with torch.no_grad():
        for name in loaded:
            state[name].copy_(source.tensor(name))  # state-dict tensors share the parameters'
    tied = _tied_to(model, loaded)
    logger.info(
        "init_from %s: %d tensors of %s loaded; %d started fresh%s%s",
        source.describe(),
        len(loaded),
        ", ".join(parts),
        len(fresh),
        f" ({summarize(fresh)})" if fresh else "",
        f"; tied to a loaded tensor, so loaded too: {', '.join(tied)}" if tied else "",
    )
    if unused:
        logger.info("init_from: %d tensors of the source unused (%s)", len(unused),
                    summarize(unused))
    return {
        "type": "init_from", "step": 0, "source": str(source.dir),
        "source_model": source.model_name, "source_task": source.task, "parts": list(parts),
        "num_loaded": len(loaded), "num_fresh": len(fresh), "loaded": loaded, "fresh": fresh,
        "tied": tied, "unused": unused,
    }  # fmt: skip


def _tied_to(model: nn.Module, loaded: list[str]) -> list[str]:
    """Names outside ``loaded`` whose tensor is shared with a loaded one (they changed too)."""
    by_storage: dict[int, list[str]] = {}
    for name, tensor in model.state_dict().items():
        if tensor.numel():
            by_storage.setdefault(tensor.data_ptr(), []).append(name)
    done = set(loaded)
    return [
        other
        for names in by_storage.values()
        if len(names) > 1 and done & set(names)
        for other in names
        if other not in done
    ]


def summarize(names: Sequence[str]) -> str:
    """Module names with layer indices folded, for a log line: ``core.blocks.*.ff1.fc1 x6``."""
    groups: dict[str, set[str]] = {}
    for name in names:
        module = re.sub(r"\.(weight|bias)$", "", name)
        groups.setdefault(re.sub(r"\.\d+\.", ".*.", module), set()).add(module)
    return ", ".join(f"{k} x{len(v)}" if len(v) > 1 else k for k, v in groups.items())


# ---------------------------------------------------------------------------------------------
# Freezing


def _parameters(model: nn.Module) -> list[tuple[nn.Parameter, list[str]]]:
    """Each parameter once, with all its names (a tied parameter has several)."""
    found: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        found.setdefault(id(param), (param, []))[1].append(name)
    return list(found.values())


def _patterns(spec: str | Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(freeze patterns, patterns kept trainable among them, whether the user wrote them)."""
    if isinstance(spec, str):
        if spec in PRESETS:
            return (*PRESETS[spec], False)
        if not _GLOB.search(spec):
            close = difflib.get_close_matches(spec, list(PRESETS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(
                f"freeze '{spec}' is not a preset{hint}; use one of {', '.join(PRESETS)} or a "
                f"list of fnmatch patterns over parameter names, e.g. [core.*]"
            )
        spec = [spec]  # one pattern, e.g. "core.blocks.0.*"
    return tuple(spec), (), True


def freeze(model: nn.Module, spec: str | Sequence[str]) -> dict:
    """Freeze (``requires_grad=False``) the parameters ``spec`` selects, in place.

    A parameter with several names (tied) is frozen when one of its names matches a pattern
    and, for a preset, none matches the preset's trainable patterns.

    Args:
        model: the model, before its optimizer and any DDP wrapper are built.
        spec: a preset (``linear_probe``, ``frozen_core``, ``fpt``) or fnmatch patterns over
            parameter names (``["core.*", "adapter.patch_embed.*"]``).

    Returns:
        A summary event for ``metrics.jsonl``: trainable and total parameter counts and the
        frozen parameter names.

    Raises:
        ValueError: an unknown preset, a pattern that matches no parameter, or a spec that
            would freeze every parameter.
    """
    frozen_pat, keep_pat, user = _patterns(spec)
    params = _parameters(model)
    names = [n for _, ns in params for n in ns]
    if user:
        for pattern in frozen_pat:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(
                    f"freeze pattern '{pattern}' matches no parameter of {type(model).__name__}, "
                    f"whose names look like {names[len(names) // 2]}"
                )
    frozen = []
    for param, aliases in params:
        hit = any(fnmatch.fnmatchcase(n, p) for n in aliases for p in frozen_pat)
        if hit and not any(fnmatch.fnmatchcase(n, p) for n in aliases for p in keep_pat):
            param.requires_grad_(False)
            frozen.append(aliases[0])
    total = sum(p.numel() for p, _ in params)
    trainable = sum(p.numel() for p, _ in params if p.requires_grad)
    if trainable == 0:
        raise ValueError(f"freeze {spec!r} freezes every parameter of {type(model).__name__}; "
                         "nothing would train")
    logger.info(
        "freeze %s: %s of %s parameters train (%.1f%%); frozen: %s",
        spec, f"{trainable:,}", f"{total:,}", 100 * trainable / total, summarize(frozen) or "none",
    )  # fmt: skip
    return {
        "type": "freeze", "step": 0, "freeze": spec if isinstance(spec, str) else list(spec),
        "trainable_params": trainable, "total_params": total, "frozen": frozen,
    }  # fmt: skip


def frozen_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm modules whose parameters are all frozen: keep them in eval mode while
    training, or their running statistics would still move with every batch."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and any(True for _ in m.parameters())
        and not any(p.requires_grad for p in m.parameters())
    ]


def append_events(run_dir: str | Path, events: Sequence[dict[str, Any]]) -> None:
    """Add ``events`` as lines of ``RUN/metrics.jsonl`` (before the run's own events)."""
    if events:
        with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in events)
