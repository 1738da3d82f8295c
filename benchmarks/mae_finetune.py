"""Does MAE pre-training help a small ViT on Fashion-MNIST? (He et al. 2021, on our core.)

1. Pre-train ``mae_vit_mini_patch4_28`` on the training images (configs/pretrain/
   mae_vit_mini_fashion_mnist.yaml, labels unused), or reuse a run (``--pretrained RUN``).
2. Copy its encoder (``adapter.*`` + ``core.*``) into ``vit_mini_patch4_28`` (mean pooling over
   the patch tokens, the class token kept so the keys match) and train it in three regimes,
   each against the same ViT from a random initialisation with the same steps and recipe:
   fine-tuning with 100% and with 10% of the labels, and a linear probe (adapter and core
   frozen; the random-init probe is the baseline) on 100%.
3. Report top-1 on the official 10,000 test images of each run's best validation checkpoint,
   per seed, in ``OUT/mae_finetune.md`` and ``.json``.

    python benchmarks/mae_finetune.py --out runs/bench/mae                       # CPU, tiny
    python benchmarks/mae_finetune.py --out runs/bench/mae --device cuda --precision bf16 \\
        --pretrain-steps 8000 --finetune-steps 3000 --probe-steps 2000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from masked_common import (  # benchmarks/masked_common.py, beside this script
    add_shared_args,
    load_part,
    new_results,
    pretrain_overrides,
    pretrain_recipe,
    record,
    run,
    save_init,
    summarise,
    write_results,
)

import zoo
from tasks.masked_image import encoder_state_dict
from zoo.saved_model import find_model_dir

RECIPE = "configs/pretrain/mae_vit_mini_fashion_mnist.yaml"
TARGET = "vit_mini_patch4_28"
TRAIN_IMAGES = 60000
VAL_FRACTION = 0.05
# regime -> (share of the labels, frozen parameter prefixes)
REGIMES = {"finetune_100": (1.0, ()), "finetune_10": (0.1, ()),
           "probe_100": (1.0, ("adapter.", "core."))}
VIT = {"global_pool": "avg", "class_token": True}  # avg pooling; keys still those of MAE's


def pretrain(args: argparse.Namespace) -> Path:
    if args.pretrained:
        return Path(args.pretrained)
    overrides = pretrain_overrides(args, f"train.batch_size={args.batch_size * 2}")
    run(pretrain_recipe(RECIPE, overrides), args.out / "pretrain")
    return args.out / "pretrain"


def init_dir(args: argparse.Namespace, mae_run: Path, seed: int) -> Path:
    """A ViT whose encoder is the MAE's; its head is drawn from ``seed``."""
    target = args.out / f"init_mae_s{seed}"
    if not (target / "config.json").is_file():
        torch.manual_seed(seed)
        vit = zoo.create_model(TARGET, **VIT)
        mae = zoo.load_pretrained(find_model_dir(mae_run))  # its best/ checkpoint
        missing = load_part(vit, encoder_state_dict(mae.state_dict()))
        assert all(k.startswith("head.") for k in missing), missing
        save_init(vit, target)
    return target


def finetune_recipe(args: argparse.Namespace, regime: str, pretrained: Path | None,
                    seed: int) -> dict[str, Any]:
    share, frozen = REGIMES[regime]
    probe = bool(frozen)
    steps = args.probe_steps if probe else args.finetune_steps
    labelled = int(share * TRAIN_IMAGES * (1 - VAL_FRACTION))
    # MAE fine-tunes with layer-wise LR decay (--layer-decay 0.75); a random init gets none
    layer_decay = args.layer_decay if pretrained is not None and not probe else None
    return {
        "task": "classification",
        "model": {"name": TARGET, "overrides": {**VIT, "drop_path": 0.0 if probe else 0.1},
                  "pretrained": str(pretrained) if pretrained else None},
        "data": {"dataset": "fashion_mnist", "root": args.data_root, "val_fraction": VAL_FRACTION,
                 "max_samples": labelled if share < 1 else None},
        "augment": {"policy": "flip", "crop_padding": 2},
        "optim": {"lr": args.probe_lr if probe else args.lr, "layer_decay": layer_decay,
                  "weight_decay": 0.0 if probe else 0.05},
        "schedule": {"name": "cosine", "warmup_steps": steps // 10},
        "train": {"max_steps": steps, "batch_size": args.batch_size, "seed": seed,
                  "label_smoothing": 0.0 if probe else 0.1, "device": args.device,
                  "precision": args.precision, "eval_every": max(steps // args.evals, 1),
                  "checkpoint_every": steps, "log_every": 50},
        "eval": {"batch_size": 512},
    }


def main() -> None:
    args = parse_args()
    mae_run = pretrain(args)
    results = new_results(args)
    for regime in args.regimes:
        for seed in args.seeds:
            for init in ("mae", "scratch"):
                pretrained = init_dir(args, mae_run, seed) if init == "mae" else None
                recipe = finetune_recipe(args, regime, pretrained, seed)
                run_dir = args.out / f"{regime}_{init}_s{seed}"
                metrics = run(recipe, run_dir, REGIMES[regime][1], test_split="test")
                record(results, run_dir, metrics, "top1", "top-1")
    write_results(args.out, "mae_finetune", results, table(args, results["runs"]))


def table(args: argparse.Namespace, runs: dict[str, dict[str, float]]) -> list[str]:
    source = f"reused {args.pretrained}" if args.pretrained else f"{args.pretrain_steps} steps"
    lines = [
        f"MAE pre-training ({source}) vs. random init, {TARGET}, Fashion-MNIST test top-1 (%), "
        f"seeds {args.seeds}",
        "",
        "| regime | labels | steps | MAE init | random init | gain (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for regime in args.regimes:
        share, frozen = REGIMES[regime]
        steps = args.probe_steps if frozen else args.finetune_steps
        got = {init: [runs[f"{regime}_{init}_s{s}"]["top1"] for s in args.seeds]
               for init in ("mae", "scratch")}
        gain = sum(got["mae"]) / len(got["mae"]) - sum(got["scratch"]) / len(got["scratch"])
        lines.append(f"| {regime} | {share:.0%} | {steps} | {summarise(got['mae'])} | "
                     f"{summarise(got['scratch'])} | {gain:+.2f} |")
    return lines


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_args(p, "../shared/data/fashion-mnist", "the Fashion-MNIST folder",
                    "an MAE run to reuse (skips step 1)")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--probe-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128, help="fine-tuning (pre-training: 2x)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak learning rate")
    p.add_argument("--probe-lr", type=float, default=3e-3, help="linear probe learning rate")
    p.add_argument("--layer-decay", type=float, default=1.0,
                   help="layer-wise LR decay when fine-tuning the MAE init (MAE: 0.75; "
                        "1 = none, which did better at 150 steps)")
    p.add_argument("--evals", type=int, default=2, help="validation evaluations per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
