"""``zoo attention``, ``zoo heads`` and ``zoo prune``: looking inside a trained model. The work is
in `zoo.interpret`; these functions read arguments and print."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cli.base import add_device, command

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.interpret.runs import OpenRun

# the ways attention rollout fuses the heads (zoo.interpret.rollout.HEAD_FUSIONS; a test keeps
# the two equal): named here so that the parser is built without loading torch
HEAD_FUSIONS = ("mean", "max", "min")
RUN_HELP = "run directory (uses best/ or the newest checkpoint) or saved model"


# ---------------------------------------------------------------------------------------------
# zoo attention


def _attention_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("inputs", nargs="+",
                   help="image files, sentences (translation) or audio files (speech)")
    p.add_argument("--out", required=True, help="folder for the PNG figures")
    p.add_argument("--layer", type=int, default=-1,
                   help="translation: decoder layer whose heads are drawn; speech: encoder "
                        "layer whose self-attention is drawn (default: the last)")
    p.add_argument("--head-fusion", default="mean", choices=HEAD_FUSIONS,
                   help="vision: how attention rollout fuses the heads (default mean)")
    add_device(p)


def _task_of(model_dir: Path) -> str:
    from zoo.registry import get_config
    from zoo.saved_model import read_model_config

    config = read_model_config(model_dir)
    return config["task"] if "task" in config else get_config(config["model"]).task


@command("attention", "draw a trained model's attention for some inputs into PNG figures",
         arguments=_attention_args)
def cmd_attention(args: argparse.Namespace) -> int:
    from zoo.inference import load_for_prediction
    from zoo.saved_model import find_model_dir

    task_name = _task_of(find_model_dir(Path(args.run)))
    task, model = load_for_prediction(args.run, task_name, args.device)
    out = Path(args.out)
    if task_name == "classification":
        from zoo.interpret.vision import vision_figures

        paths = vision_figures(task, model, args.inputs, out, args.head_fusion)
    elif task_name == "translation":
        from zoo.interpret.translation import translation_figures

        paths = translation_figures(task, model, args.inputs, out, args.layer)
    elif task_name == "speech_recognition":
        from zoo.interpret.speech import speech_figures

        paths = speech_figures(task, model, args.inputs, out, args.layer)
    else:
        raise ValueError(f"zoo attention does not know how to draw {task_name} models")
    for path in paths:
        print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# zoo heads


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="val", help="data split to score heads on (default val)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="use this many batches, spread over the split (default: all)")
    p.add_argument("--batch-size", type=int, default=None)
    add_device(p)


def _heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory or saved model inside one (needs its recipe)")
    _data_args(p)
    p.add_argument("--ablate", action="store_true",
                   help="also evaluate the run with each head masked alone")
    p.add_argument("--out", default=None, help="heat map PNG (default RUN/heads_SPLIT.png)")


def _print_heads(title: str, values: dict[str, Tensor], heads: dict[str, tuple[int, ...]],
                 fmt: str = "{:.3f}") -> None:
    """A layers x heads table; a pruned head's cell is '-'."""
    from zoo.interpret.extract import short_name

    width = max(len(short_name(n)) for n in values)
    total = max(max(h) for h in heads.values()) + 1
    print(title)
    print(" " * width + "".join(f"{'head ' + str(h):>10}" for h in range(total)))
    for name, row in values.items():
        cells = {h: fmt.format(float(v)) for h, v in zip(heads[name], row)}
        print(f"{short_name(name):<{width}}" + "".join(f"{cells.get(h, '-'):>10}"
                                                       for h in range(total)))


@command("heads", "head importance (Michel et al. 2019) of a run; --ablate: mask each head",
         arguments=_heads_args)
def cmd_heads(args: argparse.Namespace) -> int:
    from zoo.interpret.extract import original_heads
    from zoo.interpret.figures import heads_figure
    from zoo.interpret.importance import head_importance
    from zoo.interpret.runs import open_run

    run = open_run(args.run, args.device)
    loader = run.loader(args.split, args.batch_size, args.max_batches)
    scores = head_importance(run.model, run.task.loss, run.batches(loader))
    heads = original_heads(run.model)
    _print_heads(f"head importance on {args.split} (|dL/dgate|, L2-normalised per layer):",
                 scores, heads)
    panels = {"importance": scores}
    report = {"split": args.split, "importance": {n: s.tolist() for n, s in scores.items()}}
    if args.ablate:
        panels.update(_ablation(run, loader, heads, report))
    out = Path(args.out) if args.out else run.run_dir / f"heads_{args.split}.png"
    print(heads_figure(panels, heads, f"{run.model_dir} on {args.split}", out))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(out.with_suffix(".json"))
    return 0


def _ablation(run: OpenRun, loader: Any, heads: dict[str, tuple[int, ...]],
              report: dict[str, Any]) -> dict[str, dict[str, Tensor]]:
    """Print the metric's change with each head masked alone, add it to ``report``, and return
    it as a panel of the heads figure."""
    from zoo.interpret.importance import ablate_heads

    metric = run.metric
    baseline, masked = ablate_heads(run.model, lambda m: run.evaluate(m, loader)[metric])
    change = {n: v - baseline for n, v in masked.items()}
    _print_heads(f"{metric} change with the head masked alone (all heads: {baseline:.4g}):",
                 change, heads, "{:+.3g}")
    report.update(metric=metric, baseline=baseline,
                  ablation={n: v.tolist() for n, v in masked.items()})
    return {f"{metric} change when masked": change}


# ---------------------------------------------------------------------------------------------
# zoo prune


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory or saved model inside one")
    p.add_argument("--out", required=True, help="new saved model directory")
    p.add_argument("--fraction", type=float, default=None, help="share of the heads to remove")
    p.add_argument("--per-layer", action="store_true",
                   help="remove the same share in every layer (default: globally)")
    p.add_argument("--step", type=float, default=0.1,
                   help="share removed per round, importance recomputed between (default 0.1)")
    p.add_argument("--random", action="store_true", help="random heads (the control)")
    p.add_argument("--seed", type=int, default=0, help="--random: the draw")
    p.add_argument("--gates", action="store_true",
                   help="remove the heads whose learned gates are closed (head_gate_l0 models)")
    _data_args(p)


@command("prune", "remove attention heads: the least important, random ones, or closed gates",
         arguments=_prune_args)
def cmd_prune(args: argparse.Namespace) -> int:
    from zoo.interpret.extract import original_heads, short_name
    from zoo.interpret.runs import save_changed_model

    if args.gates and (args.fraction is not None or args.random or args.per_layer):
        raise ValueError("--gates prunes the heads a gated model closed: it takes no "
                         "--fraction, --random or --per-layer")
    if not args.gates and args.fraction is None:
        raise ValueError("zoo prune needs --fraction (or --gates for a gated model)")
    prune = _prune_gates if args.gates else _prune_by_scores
    model, pruned, model_dir, run_dir, note = prune(args)
    counts = _head_counts(model, pruned)
    note = {"pruned": {**note, "from": str(model_dir), **counts}}
    out = save_changed_model(pruned, model_dir, args.out, note, run_dir)
    print(f"kept {counts['heads_kept']} of {counts['heads_before']} heads, "
          f"{counts['params_after']:,} of {counts['params_before']:,} parameters: {out}")
    for name, heads in original_heads(pruned).items():
        print(f"  {short_name(name)}: heads {', '.join(map(str, heads))}")
    return 0


def _prune_gates(
    args: argparse.Namespace,
) -> tuple[nn.Module, nn.Module, Path, Path | None, dict[str, Any]]:
    """The saved model, a copy without the heads its learned gates closed, where it came from,
    its run directory (None for a saved model alone) and the note saying how it was pruned."""
    from zoo.interpret.gates import prune_closed_heads
    from zoo.pretrained import load_pretrained
    from zoo.run_recipe import find_run_recipe
    from zoo.saved_model import find_model_dir

    model_dir = find_model_dir(Path(args.run))
    found = find_run_recipe(Path(args.run), model_dir)
    model = load_pretrained(model_dir)
    run_dir = found[0] if found else None
    return model, prune_closed_heads(model), model_dir, run_dir, {"method": "gates"}


def _prune_by_scores(
    args: argparse.Namespace,
) -> tuple[nn.Module, nn.Module, Path, Path | None, dict[str, Any]]:
    """As `_prune_gates`, the run's model pruned by importance (or at random)."""
    from zoo.interpret.importance import head_importance
    from zoo.interpret.prune import kept_indices, plan_pruning, prune_heads, random_scorer
    from zoo.interpret.runs import open_run

    run = open_run(args.run, args.device)
    if args.random:
        scorer = random_scorer(args.seed)
    else:
        batches = run.batches(run.loader(args.split, args.batch_size, args.max_batches))

        def scorer(masks: dict[str, Tensor]) -> dict[str, Tensor]:
            return head_importance(run.model, run.task.loss, batches, masks)

    masks = plan_pruning(run.model, args.fraction, scorer, args.per_layer, args.step)
    pruned = prune_heads(run.model, kept_indices(masks))
    note = {"method": "random" if args.random else "importance", "fraction": args.fraction,
            "per_layer": args.per_layer, "step": args.step}
    note.update({"seed": args.seed} if args.random else {"split": args.split})
    return run.model, pruned, run.model_dir, run.run_dir, note


def _head_counts(before: nn.Module, after: nn.Module) -> dict[str, int]:
    from zoo.interpret.extract import original_heads

    heads = lambda m: sum(len(h) for h in original_heads(m).values())  # noqa: E731
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"heads_before": heads(before), "heads_kept": heads(after),
            "params_before": params(before), "params_after": params(after)}
