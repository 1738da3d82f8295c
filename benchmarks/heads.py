"""Head pruning measured: the metric against the share of attention heads removed, by importance
(Michel et al. 2019, recomputed every 10%) and at random (the control of Budhraja et al. 2020),
with and without a short fine-tune after pruning, and the inference time of the pruned models
(timed in one process, interleaved), for a "mini" model of each task.

A model is trained first (or taken from ``--run TASK=DIR``); importance is scored on batches of
its train split and the metric read on ``--eval-split``, so the heads are not chosen on the
split that grades them. Results go to ``--out``: results.json, results.md, heads_<task>.png.

    python benchmarks/heads.py --tasks vision --train-steps 300 --finetune-steps 30  # CPU
    python benchmarks/heads.py --device cuda --amp --train-steps 3000 --finetune-steps 300
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from timing import interleaved  # benchmarks/timing.py, beside this script

import zoo  # noqa: F401  (registers the models)
from zoo.atomic import atomic_write_bytes
from zoo.config import recipe_from_dict, recipe_to_dict
from zoo.engine import train
from zoo.interpret.extract import original_heads
from zoo.interpret.importance import head_importance
from zoo.interpret.prune import kept_indices, plan_pruning, prune_heads, random_scorer
from zoo.interpret.runs import OpenRun, open_run, save_changed_model
from zoo.model_card import model_flops
from zoo.pretrained import load_pretrained
from zoo.saved_model import find_model_dir

STEP = 0.1  # share of the heads removed per round, as Michel et al.


def recipe(task: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """The training recipe of ``task``'s mini model for ``steps`` steps."""
    data, cuda = Path(args.data), args.device.startswith("cuda")
    train_section = {"max_steps": steps, "eval_every": steps, "checkpoint_every": steps,
                     "log_every": max(1, steps // 10), "precision": "bf16" if cuda else "fp32",
                     "device": args.device, "seed": args.seed}
    warmup = {"warmup_steps": max(1, min(500, steps // 10))}
    if task == "vision":
        return {"task": "classification",
                "model": {"name": "vit_mini_patch4_28"},
                "data": {"dataset": "fashion_mnist", "root": str(data / "fashion-mnist"),
                         "val_fraction": 0.05},
                "augment": {"policy": "flip", "crop_padding": 2},
                "optim": {"lr": 1e-3, "weight_decay": 0.05},
                "schedule": {"name": "cosine", **warmup},
                "train": {**train_section, "batch_size": 128, "label_smoothing": 0.1},
                "eval": {"batch_size": 512}}
    if task == "translation":
        return {"task": "translation",
                "model": {"name": "mt_transformer_mini"},
                "data": {"dataset": "parallel", "root": str(data / "multi30k"),
                         "options": {"src_lang": "en", "tgt_lang": "de",
                                     "test_split": "test_2016_flickr"}},
                "tokenizer": {"vocab_size": 8000},
                "optim": {"lr": 1e-3, "weight_decay": 1e-4, "betas": [0.9, 0.98]},
                "schedule": {"name": "cosine", **warmup},
                "train": {**train_section, "batch_size": 4096, "label_smoothing": 0.1,
                          "clip_grad": 1.0},
                "eval": {"batch_size": 8192}, "decode": {"beam_size": 1}}
    if task == "speech":
        return {"task": "speech_recognition",
                "model": {"name": "asr_transformer_ctc_mini"},
                "data": {"dataset": "fsdd", "root": str(data / "fsdd"), "val_fraction": 0.1,
                         "options": {"test_speakers": ["theo"]}},
                "optim": {"lr": 2e-3, "weight_decay": 0.01},
                "schedule": {"name": "cosine", **warmup},
                "train": {**train_section, "batch_size": 32},
                "eval": {"batch_size": 64}, "decode": {"beam_size": 1}}
    raise ValueError(f"unknown task '{task}'; expected vision, translation or speech")


def forward(task: str, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
    """One inference forward pass (the translation decoder teacher-forced)."""
    if task == "vision":
        return model(batch["images"])
    if task == "translation":
        return model(batch["src"], batch["tgt_in"])
    return model(batch["audio"], batch["audio_lengths"])


def nested_plans(run: OpenRun, fractions: list[float], scorer) -> dict[float, dict]:
    """Masks for every fraction from one iterative pass to the largest: the scorer sees the
    masks of 0, 10%, 20%, ... in turn, and each round prunes on from the last."""
    seen: list[dict] = []

    def record(masks):
        seen.append(masks)
        return scorer(masks)

    top = max(fractions)
    final = plan_pruning(run.model, top, record, step=STEP)
    plans = {round(k * STEP, 6): masks for k, masks in enumerate(seen)}
    plans[round(top, 6)] = final
    return {f: plans[round(f, 6)] for f in fractions}


def finetune_recipe(task: str, run: OpenRun, saved: Path,
                    args: argparse.Namespace) -> dict[str, Any]:
    """The recipe that fine-tunes the pruned model ``saved``: the run's own (its data, loss,
    augmentation and decoding) when the run came from ``--run``, else the task's mini recipe;
    ``--finetune-steps`` at ``--finetune-lr`` times its LR, cosine with 10% warm-up, no EMA (an
    average with decay 0.999 would barely leave the pruned weights in a short fine-tune)."""
    steps = args.finetune_steps
    if task in args.runs:
        tuned = recipe_to_dict(run.recipe)
        tuned["model"]["init_from"] = None
        tuned["train"].update(max_steps=steps, eval_every=steps, checkpoint_every=steps,
                              log_every=max(1, steps // 10), device=args.device, seed=args.seed)
    else:
        tuned = recipe(task, args, steps)
    tuned["model"]["pretrained"] = str(saved)
    tuned["optim"]["lr"] *= args.finetune_lr
    tuned["optim"]["layer_decay"] = None
    tuned["schedule"] = {"name": "cosine", "warmup_steps": max(1, steps // 10)}
    tuned["train"]["ema_decay"] = None
    return tuned


def finetune(task: str, run: OpenRun, pruned: torch.nn.Module, args: argparse.Namespace,
             tag: str) -> torch.nn.Module:
    """``pruned`` trained on for ``--finetune-steps`` at ``--finetune-lr`` times the LR."""
    folder = Path(args.out) / task / tag
    saved = save_changed_model(pruned, run.model_dir, folder / "model", {"pruned": tag},
                               run.run_dir)
    train(recipe_from_dict(finetune_recipe(task, run, saved, args)), folder / "tuned")
    return load_pretrained(find_model_dir(folder / "tuned")).to(args.device)


def measure(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or open) the task's model, prune it every way, evaluate and time it."""
    base = Path(args.runs.get(task) or Path(args.out) / task / "base")
    if not (base / "best").is_dir():
        start = time.perf_counter()
        train(recipe_from_dict(recipe(task, args, args.train_steps)), base)
        logging.info("%s: trained %d steps in %.0f s", task, args.train_steps,
                     time.perf_counter() - start)
    run = open_run(base, args.device)
    run.model.eval()
    eval_loader = run.loader(args.eval_split, None, args.eval_batches)
    scored = run.batches(run.loader("train", None, args.importance_batches))
    metric = run.metric
    scorers = {
        "importance": lambda masks: head_importance(run.model, run.task.loss, scored, masks),
        "random": random_scorer(args.seed),
    }
    rows, timed = [], {}
    for method, scorer in scorers.items():
        for fraction, masks in nested_plans(run, args.fractions, scorer).items():
            pruned = prune_heads(run.model, kept_indices(masks)).eval()
            row = {"method": method, "fraction": fraction,
                   "heads": sum(len(h) for h in original_heads(pruned).values()),
                   "params": sum(p.numel() for p in pruned.parameters()),
                   "flops": model_flops(pruned)[0],
                   metric: run.evaluate(pruned, eval_loader)[metric]}
            if args.finetune_steps:
                tuned = finetune(task, run, pruned, args, f"{method}_{fraction:.1f}")
                row[f"{metric}_tuned"] = run.evaluate(tuned.eval(), eval_loader)[metric]
            logging.info("%s %s", task, row)
            rows.append(row)
            if method == "importance":
                timed[fraction] = pruned
    return {"metric": metric, "mode": run.task.metric_mode, "rows": rows,
            "heads_total": sum(len(h) for h in original_heads(run.model).values()),
            "ms_per_batch": time_models(task, run, timed, args)}


@torch.no_grad()
def time_models(task: str, run: OpenRun, models: dict[float, Any],
                args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per evaluation batch of each pruned model, timed interleaved."""
    batch = run.batches(run.loader(args.eval_split, args.time_batch_size, 1))[0]
    cuda = args.device.startswith("cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and args.amp else None
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(model):
        def call() -> None:
            if amp is None:
                forward(task, model, batch)
            else:
                with amp:
                    forward(task, model, batch)
        return call

    steps = {f"{f:.1f}": step(m) for f, m in models.items()}
    seconds = interleaved(steps, args.repeats, iters=args.iters, warmup=2, sync=sync)
    return {k: 1000 * v for k, v in seconds.items()}


def table(task: str, result: dict[str, Any]) -> list[str]:
    """The Markdown rows of one task: a line per fraction, both methods side by side."""
    metric, ms = result["metric"], result["ms_per_batch"]
    by = {(r["method"], r["fraction"]): r for r in result["rows"]}
    tuned = f"{metric}_tuned" in result["rows"][0]
    head = ["pruned", "heads", "params", f"{metric} importance", f"{metric} random"]
    head += [f"{metric} importance + FT", f"{metric} random + FT"] if tuned else []
    head += ["GFLOPs/sample (importance)", "ms/batch (importance)", "speed-up"]
    lines = [f"### {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fractions = sorted({r["fraction"] for r in result["rows"]})
    base = ms.get(f"{fractions[0]:.1f}")
    for f in fractions:
        imp, rnd = by[("importance", f)], by[("random", f)]
        cells = [f"{f:.0%}", str(imp["heads"]), f"{imp['params']:,}", f"{imp[metric]:.4g}",
                 f"{rnd[metric]:.4g}"]
        if tuned:
            cells += [f"{imp[metric + '_tuned']:.4g}", f"{rnd[metric + '_tuned']:.4g}"]
        cells.append(f"{imp['flops'] / 1e9:.3g}" if "flops" in imp else "-")
        t = ms.get(f"{f:.1f}")
        cells += [f"{t:.2f}", f"{base / t:.2f}x"] if t else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(task: str, result: dict[str, Any], path: Path) -> None:
    """The metric against the share of heads pruned, one line per method and fine-tune."""
    from zoo.interpret.figures import pyplot

    plt, metric = pyplot(), result["metric"]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for method, color in (("importance", "tab:blue"), ("random", "tab:orange")):
        rows = sorted((r for r in result["rows"] if r["method"] == method),
                      key=lambda r: r["fraction"])
        x = [100 * r["fraction"] for r in rows]
        ax.plot(x, [r[metric] for r in rows], ":", color=color, marker="o", label=method)
        if f"{metric}_tuned" in rows[0]:
            ax.plot(x, [r[f"{metric}_tuned"] for r in rows], "-", color=color, marker="s",
                    label=f"{method} + fine-tune")
    ax.set_xlabel("heads pruned (%)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} after pruning ({result['heads_total']} heads)")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["vision", "translation", "speech"])
    p.add_argument("--out", default="runs/bench_heads")
    p.add_argument("--data", default="../shared/data", help="folder holding the datasets")
    p.add_argument("--run", action="append", default=[], metavar="TASK=DIR",
                   help="use this trained run instead of training one")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="time in bf16 autocast (CUDA)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=0, help="0: no fine-tune")
    p.add_argument("--finetune-lr", type=float, default=0.3, help="times the training LR")
    p.add_argument("--fractions", type=float, nargs="+",
                   default=[round(0.1 * i, 1) for i in range(10)])
    p.add_argument("--importance-batches", type=int, default=8)
    p.add_argument("--eval-split", default="val")
    p.add_argument("--eval-batches", type=int, default=None, help="default: the whole split")
    p.add_argument("--time-batch-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.runs = dict(item.split("=", 1) for item in args.run)
    bad = [f for f in args.fractions if abs(f / STEP - round(f / STEP)) > 1e-6 or not 0 <= f < 1]
    if bad:
        p.error(f"--fractions must be multiples of {STEP} in [0, 1), got {bad[0]}")
    return args


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in args.tasks:
        start = time.perf_counter()
        results[task] = measure(task, args)
        results[task]["seconds"] = time.perf_counter() - start
        plot(task, results[task], out / f"heads_{task}.png")
        settings = {k: v for k, v in vars(args).items() if k != "runs"}
        record = json.dumps({"settings": settings, **results}, indent=1) + "\n"
        atomic_write_bytes(out / "results.json", record.encode())
        lines = [f"Device {args.device}; {args.train_steps} training steps, fine-tune "
                 f"{args.finetune_steps} steps; importance on {args.importance_batches} train "
                 f"batches; metric on {args.eval_split}.", ""]
        for name, result in results.items():
            lines += table(name, result)
        (out / "results.md").write_text("\n".join(lines))
        print("\n".join(table(task, results[task])), flush=True)


if __name__ == "__main__":
    main()
