"""``zoo list`` and ``zoo info``: the registered models, and a model's card."""

from __future__ import annotations

import argparse
import json

from zoo.cli.base import command

# the values of the family configs' ``task`` and ``modality`` (tests check they are complete)
TASKS = (
    "classification", "translation", "speech_recognition", "language_modeling", "masked_lm",
    "masked_image", "masked_speech", "multitask",
)
MODALITIES = ("vision", "text", "speech", "multi")


def _format_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    p.add_argument("--task", default=None, choices=TASKS)
    p.add_argument("--modality", default=None, choices=MODALITIES)


@command("list", "list registered models", arguments=_list_args)
def cmd_list(args: argparse.Namespace) -> int:
    import zoo.models  # noqa: F401  (registers the variants)
    from zoo.registry import list_models, model_info

    names = list_models(args.pattern, task=args.task, modality=args.modality)
    if not names:
        print(f"no model matches '{args.pattern}'")
        return 1
    rows = [model_info(n) for n in names]
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'task':<18}  {'modality':<8}  {'params':>8}")
    for r in rows:
        params = _format_params(r["num_params"])
        print(f"{r['name']:<{width}}  {r['task']:<18}  {r['modality']:<8}  {params:>8}")
    return 0


@command("info", "show a model's config and parameter count",
         arguments=lambda p: p.add_argument("name"))
def cmd_info(args: argparse.Namespace) -> int:
    from zoo.model_card import forward_flops, recipe_results
    from zoo.registry import model_info

    info = model_info(args.name)
    print(f"{info['name']}: {info['task']} / {info['modality']}, {info['num_params']:,} parameters")
    if info["task"] == "multitask":  # its tasks, and so its inputs, come from a recipe
        print("a core alone here; a multitask recipe adds its tasks' models (docs/multitask.md)")
    else:
        flops, sample = forward_flops(args.name)
        print(f"forward FLOPs per sample: {flops / 1e9:,.2f} G ({sample})")
    for row in recipe_results(args.name):
        print(f"measured: {row['recipe']}: {row['result']} ({row['measured']}; the recipe "
              "overrides some settings)")
    print(json.dumps(info["config"], indent=2))
    return 0
