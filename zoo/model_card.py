"""Model cards for `zoo info`: FLOPs per sample, counted by ``torch.utils.flop_counter``, and the
measured results of the recipes that train the model (``docs/results.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from zoo.registry import create_model

ROOT = Path(__file__).resolve().parent.parent  # a source checkout: configs/ and docs/
SPEECH_SECONDS = 10  # a speech sample is 10 s of audio
TEXT_TOKENS = 32  # a text sample is 32 source (and 32 target) tokens


def example_input(model: nn.Module) -> tuple[tuple[Any, ...], str]:
    """One sample of the model's input, and how the card describes it."""
    cfg = model.cfg
    if cfg.task == "classification":
        size = cfg.img_size
        return (torch.zeros(1, cfg.in_chans, size, size),), f"one {size}x{size} image"
    if cfg.task == "translation":
        ids = torch.full((1, TEXT_TOKENS), 4)
        return (ids, ids), f"{TEXT_TOKENS} source and {TEXT_TOKENS} target tokens"
    if cfg.task == "speech_recognition":
        frames = SPEECH_SECONDS * cfg.sample_rate
        audio = torch.zeros(1, frames) if cfg.features == "waveform" else (
            torch.zeros(1, SPEECH_SECONDS * 100, cfg.n_mels))  # 10 ms frames
        return (audio, torch.tensor([audio.shape[1]])), f"{SPEECH_SECONDS} s of audio"
    raise ValueError(f"no example input for task '{cfg.task}'")


def forward_flops(name: str) -> tuple[int, str]:
    """FLOPs of one inference forward pass of model ``name`` on one sample (a multiply-add
    counts 2), and the sample's description."""
    model = create_model(name).eval()
    args, what = example_input(model)
    # the math backend: its matmuls are counted, while the CPU's fused attention kernel is not
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(*args)
    return counter.get_total_flops(), what


def recipe_results(name: str, root: Path = ROOT) -> list[dict[str, str]]:
    """The measured results (``docs/results.yaml``) of every recipe whose model is ``name``."""
    table = root / "docs" / "results.yaml"
    if not table.is_file():
        return []
    rows = []
    for recipe, result in (yaml.safe_load(table.read_text(encoding="utf-8")) or {}).items():
        path = root / recipe
        if path.is_file() and _recipe_model(path) == name:
            rows.append({"recipe": recipe, **result})
    return rows


def _recipe_model(path: Path) -> str | None:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model = recipe.get("model") or {}
    return model.get("name") if isinstance(model, dict) else None
