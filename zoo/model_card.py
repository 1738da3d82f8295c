"""Model cards for `zoo info`: FLOPs per sample, counted by ``torch.utils.flop_counter``, and the
measured results of the recipes that train the model (``docs/results.yaml``)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import tasks  # noqa: F401  (registers the tasks that get_task finds)
from tasks.base import get_task
from zoo.pretrained import create_model

ROOT = Path(__file__).resolve().parent.parent  # a source checkout: configs/ and docs/


def forward_flops(name: str) -> tuple[int, str]:
    """FLOPs of one inference forward pass of model ``name`` on one sample (a multiply-add
    counts 2), and the sample's description."""
    return model_flops(create_model(name))


def model_flops(model: torch.nn.Module) -> tuple[int, str]:
    """FLOPs of one inference forward pass of ``model`` (a built or loaded model, a pruned one
    too; put in evaluation mode) on its task's example sample, and the sample's description."""
    model = model.eval()
    device = next(model.parameters()).device
    args, what = get_task(model.cfg.task).example_input(model.cfg)  # one sample
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
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
