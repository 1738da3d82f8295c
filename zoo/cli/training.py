"""``zoo train``, ``zoo eval``, ``zoo demo``, ``zoo plot``, ``zoo average`` and ``zoo extract``:
making runs and reading them. The work is in `zoo.engine`, `zoo.inference`, `zoo.averaging` and
`zoo.multitask.runs`."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from zoo.cli.base import (
    add_device,
    add_task_section,
    cell,
    check_positive,
    command,
    overrides_anywhere,
    print_table,
)

DEMO_RECIPES = Path(__file__).resolve().parents[2] / "configs" / "demo"
DEMO_NAMES = ("vision", "translation", "speech", "lm")
DEMO_CHOICES = (*DEMO_NAMES, "multitask")  # the multitask demo runs when asked for


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def default_out_dir(recipe: Any, recipe_path: str | Path) -> Path:
    """``recipe.out_dir``, else ``runs/<recipe file stem>``."""
    return Path(recipe.out_dir) if recipe.out_dir else Path("runs") / Path(recipe_path).stem


# ---------------------------------------------------------------------------------------------
# zoo train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file, e.g. configs/demo/vision.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=3e-4")
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its own recipe (key=value changes it) from its "
        "newest checkpoint, or start it over when it has none",
    )
    overrides_anywhere(p)


@command("train", "train a recipe (YAML) into a run directory", arguments=_train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from zoo.config import load_recipe

    if not _is_main_process():  # under torchrun, one process talks
        logging.getLogger().setLevel(logging.WARNING)
    recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe is named before torch loads
    out = Path(args.out) if args.out else default_out_dir(recipe, args.recipe)
    from zoo.engine import train
    from zoo.run_recipe import resume_recipe

    if args.resume:  # the run's own recorded recipe, not the file's values
        recipe = resume_recipe(out, args.recipe, args.overrides)
    metrics = train(recipe, out, resume=args.resume)
    if _is_main_process():
        print(f"run directory: {out}")
        for key, value in metrics.items():
            print(f"{key}: {cell(value)}")
    return 0


# ---------------------------------------------------------------------------------------------
# zoo eval


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/) or saved model directory")
    p.add_argument("--split", default="val", help="val or test (default: val)")
    p.add_argument("--batch-size", type=int, default=None)
    add_device(p)
    p.add_argument("--ensemble", action="append", metavar="RUN",
                   help="average this run's model with RUN's (repeatable; speech recognition)")
    add_task_section(p, "a multitask run: evaluate this task section only")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="change the run's recipe for this evaluation, e.g. decode.beam_size=1",
    )
    overrides_anywhere(p)


@command("eval", "evaluate a trained run on its validation or test split", arguments=_eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.inference import evaluate_run

    check_positive(batch_size=args.batch_size)
    others = args.ensemble or []
    model_dir, metrics, report = evaluate_run(
        args.run, args.split, args.batch_size, args.device, report=True,
        overrides=args.overrides, ensemble=others, section=args.task,
    )
    members = f" (ensemble with {', '.join(map(str, others))})" if others else ""
    print(f"{model_dir}{members} on {args.split}:")
    for key, value in metrics.items():
        print(f"  {key}: {value:.4f}")
    for line in report:
        print(line)
    return 0


# ---------------------------------------------------------------------------------------------
# zoo demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every recipe")
    p.add_argument("--only", action="append", choices=DEMO_CHOICES, help="run only this demo")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    overrides_anywhere(p)


@command("demo", "train every task briefly on built-in data and print the metrics",
         arguments=_demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    from zoo.config import load_recipe

    names = args.only or list(DEMO_NAMES)
    _one_thread_unless_asked()
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-demo-") as tmp:
        out_root = Path(args.out) if args.out else Path(tmp)
        for name in names:
            path = DEMO_RECIPES / f"{name}.yaml"
            if not path.is_file():
                print(f"skipping {name}: no recipe {path}")
                continue
            rows.append(_demo_one(name, load_recipe(path, args.overrides), out_root / name))
    if not rows:
        print("no demo recipe found")
        return 1
    print()
    print_table(rows, ["demo", "task", "model", "steps", "metric", "value", "best", "time"])
    where = f"the runs are in {args.out}" if args.out else (
        "the runs were written to a temporary directory and removed: pass --out DIR to keep them")
    print(f"\n{where}")
    if any(row["demo"] == "speech" for row in rows):
        print("the speech demo learnt synthetic tones standing for digits, not speech: on real "
              "recordings it transcribes nothing meaningful")
    return 0


def _one_thread_unless_asked() -> None:
    """The demo models are tiny: a second thread gains little, and on a busy machine OpenMP
    threads that spin waiting for each other make a run many times slower."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def _demo_one(name: str, recipe: Any, out: Path) -> dict[str, Any]:
    from tasks.base import get_task
    from zoo.engine import train
    from zoo.run_dir import checkpoint_dirs

    start = time.perf_counter()
    metrics = train(recipe, out)
    metric = recipe.eval.metric or get_task(recipe.task).metric
    return {
        "demo": name, "task": recipe.task, "model": recipe.model.name,
        "steps": checkpoint_dirs(out)[-1].name.removeprefix("step_").lstrip("0"),
        "metric": metric, "value": metrics.get(metric), "best": metrics.get(f"best_{metric}"),
        "time": f"{time.perf_counter() - start:.0f} s",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# zoo plot, zoo average, zoo extract


@command("plot", "plot a run's loss and metric curves to RUN/curves.png",
         arguments=lambda p: p.add_argument("run", help="run directory"))
def cmd_plot(args: argparse.Namespace) -> int:
    from zoo.records import plot_curves

    run = Path(args.run)
    if not run.is_dir():
        what = "is a file, not a directory" if run.exists() else "does not exist"
        raise FileNotFoundError(f"run directory {run} {what}")
    path = plot_curves(run)
    if path is None:
        print(f"nothing plotted for {run} (no metrics.jsonl events, or matplotlib is missing)")
        return 1
    print(path)
    return 0


def _average_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--last", type=int, required=True, help="how many checkpoints to average")
    p.add_argument("--out", default=None, help="output model directory (default: RUN/averaged)")


@command("average", "average the last N checkpoints of a run into a model directory",
         arguments=_average_args)
def cmd_average(args: argparse.Namespace) -> int:
    from zoo.averaging import average_run

    check_positive(last=args.last)
    out = average_run(args.run, args.last, args.out)
    print(f"averaged the last {args.last} checkpoints of {args.run} into {out}")
    return 0


def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="multitask run directory (uses best/) or saved multitask model")
    p.add_argument("--task", required=True, metavar="NAME", help="the task section to write out")
    p.add_argument("--out", required=True, help="the saved model directory to create")


@command("extract", "write one task of a multitask run out as a single-task saved model",
         arguments=_extract_args)
def cmd_extract(args: argparse.Namespace) -> int:
    from zoo.multitask.runs import extract

    out = extract(args.run, args.task, args.out)
    print(f"task section '{args.task}' of {args.run} written to {out} (zoo.load_pretrained "
          "loads it; zoo eval, classify, translate and transcribe take it)")
    return 0
