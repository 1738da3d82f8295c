"""What the masked pre-training benchmarks share: runs through the training engine (optionally
with frozen parts, through ``train.freeze``), initial models saved for ``model.pretrained``,
and the results files."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import zoo
from zoo.config import load_recipe, recipe_from_dict, recipe_to_dict
from zoo.engine import train
from zoo.inference import evaluate_run

log = logging.getLogger("benchmark")


def run(recipe: dict[str, Any], run_dir: Path, frozen: Sequence[str] = (),
        test_split: str | None = None) -> dict[str, float]:
    """Train ``recipe`` into ``run_dir`` (skipped when it already finished there) and return
    the best checkpoint's metrics on ``test_split`` (or the last validation metrics)."""
    if not (run_dir / "best").is_dir():
        if frozen:  # the engine's train.freeze, by name pattern (a probe: adapter.*, core.*)
            recipe = {**recipe, "train": {**recipe["train"], "freeze": [f"{p}*" for p in frozen]}}
        train(recipe_from_dict(recipe), run_dir)
    if test_split is None:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        evals = [e for e in map(json.loads, lines) if e.get("type") == "eval"]
        return {k: v for k, v in evals[-1].items() if isinstance(v, float)}
    _, metrics, _ = evaluate_run(run_dir, test_split, device=recipe["train"]["device"])
    return metrics


def pretrain_recipe(path: str, overrides: Sequence[str]) -> dict[str, Any]:
    """A shipped recipe with ``key=value`` overrides, as a dict."""
    return recipe_to_dict(load_recipe(path, list(overrides)))


def save_init(model: nn.Module, directory: Path) -> Path:
    """Save an initial model for a recipe's ``model.pretrained``."""
    return zoo.save_pretrained(model, directory)


def load_part(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model`` (strict about unexpected keys); return the missing keys."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"keys the model does not have: {unexpected[:3]}")
    return missing


def summarise(values: list[float]) -> str:
    """``mean ± sd (a, b, ...)`` of per-seed values."""
    if not values:
        return "-"
    shown = ", ".join(f"{v:.2f}" for v in values)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({shown})"


def write_results(out: Path, name: str, results: dict[str, Any], table: list[str]) -> None:
    """``out/name.json`` (every number) and ``out/name.md`` (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))


def device_overrides(device: str, precision: str) -> list[str]:
    return [f"train.device={device}", f"train.precision={precision}"]


def pretrain_overrides(args: argparse.Namespace, *extra: str) -> list[str]:
    """Step 1's overrides: ``args.pretrain_steps`` steps with a tenth of them (at most 500) of
    warm-up, four evaluations, one checkpoint at the end, ``args.data_root``, ``extra`` and the
    device."""
    steps = args.pretrain_steps
    return [f"train.max_steps={steps}", f"schedule.warmup_steps={min(500, steps // 10)}",
            f"train.eval_every={max(steps // 4, 1)}", f"train.checkpoint_every={steps}",
            f"data.root={args.data_root}", *extra, *device_overrides(args.device, args.precision)]


def add_shared_args(p: argparse.ArgumentParser, data_root: str, data_help: str,
                    pretrained_help: str) -> None:
    """The options both benchmarks take: --out, --data-root, --pretrained, --device,
    --precision."""
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and results")
    p.add_argument("--data-root", default=data_root, help=data_help)
    p.add_argument("--pretrained", default=None, help=pretrained_help)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])


def new_results(args: argparse.Namespace) -> dict[str, Any]:
    """The results file's content before any run: the arguments, and no runs yet."""
    return {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}


def record(results: dict[str, Any], run_dir: Path, metrics: dict[str, float], metric: str,
           label: str) -> None:
    """Keep a run's test metrics under its folder's name and log its ``metric``."""
    results["runs"][run_dir.name] = metrics
    logging.info("%s: test %s %.2f", run_dir.name, label, metrics[metric])
