"""Saved models timed against each other in one process, interleaved (a model and its pruned
copies, say): each forward runs on its task's example sample (``Task.example_input``) repeated
``--batch`` times, and the table gives the median time, the speed-up over the first model and
the forward FLOPs per sample.

    python benchmarks/time_models.py runs/p0/model runs/p30/model runs/p60/model --batch 16
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from timing import interleaved  # benchmarks/timing.py, beside this script

from tasks.base import get_task
from zoo.model_card import model_flops
from zoo.pretrained import load_pretrained
from zoo.saved_model import find_model_dir


def batch_of(sample: list[Any], batch: int) -> list[Any]:
    """The example sample's tensors repeated ``batch`` times along their first dimension."""
    return [a.repeat(batch, *[1] * (a.dim() - 1)) if isinstance(a, torch.Tensor) else a
            for a in sample]


def time_models(paths: list[str], batch: int, repeats: int, iters: int) -> list[dict[str, Any]]:
    """A row per model: its path, sample, FLOPs per sample, median ms per call, speed-up."""
    models = {p: load_pretrained(find_model_dir(Path(p))).eval() for p in paths}
    calls, rows = {}, []
    for path, model in models.items():
        sample, what = get_task(model.cfg.task).example_input(model.cfg)
        inputs = batch_of(list(sample), batch)
        calls[path] = lambda m=model, x=inputs: m(*x)
        rows.append({"model": path, "sample": what, "flops": model_flops(model)[0]})
    with torch.no_grad():
        seconds = interleaved(calls, repeats, iters=iters, warmup=2)
    for row in rows:
        row["ms"] = 1000 * seconds[row["model"]]
        row["speed_up"] = seconds[paths[0]] / seconds[row["model"]]
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="saved models or run directories; the first is 1.00x")
    p.add_argument("--batch", type=int, default=1, help="copies of the example sample per call")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds (the median is kept)")
    p.add_argument("--iters", type=int, default=2, help="calls per model and round")
    args = p.parse_args(argv)
    rows = time_models(args.models, args.batch, args.repeats, args.iters)
    print(f"batch {args.batch} x {rows[0]['sample']}, {torch.get_num_threads()} threads\n")
    print("| model | GFLOPs / sample | ms / call | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['flops'] / 1e9:.3g} | {r['ms']:.1f} | {r['speed_up']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
