"""The ``zoo`` subcommands that train and use runs: train, eval, demo, plot, average, classify.

Each is a small function registered with ``@command``; the work is in ``zoo.engine`` and
``zoo.checkpoint``. These functions are the only place here that prints (the CLI's output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tasks.base import Task, get_task
from zoo.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_save_safetensors,
    atomic_write_bytes,
    average_checkpoints,
    find_model_dir,
    load_pretrained,
    read_model_config,
)
from zoo.cli import command
from zoo.config import Recipe, load_recipe, recipe_from_dict
from zoo.distributed import resolve_device
from zoo.engine import train
from zoo.multitask.runs import multitask_for_prediction, only_section
from zoo.records import RECIPE_NAME, STATE_NAME, plot_curves
from zoo.run_dir import atomic_dir, checkpoint_dirs, resume_recipe

DEMO_RECIPES = Path(__file__).resolve().parent.parent / "configs" / "demo"
DEMO_NAMES = ("vision", "translation", "speech", "lm")
DEMO_CHOICES = (*DEMO_NAMES, "multitask")  # the multitask demo runs when asked for
TASK_HELP = "a multitask run: its task section to use (needed when it has several of the kind)"


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def check_positive(**flags: int | None) -> None:
    """Refuse a count flag below 1, naming it as typed: ``check_positive(batch_size=0)`` ->
    "--batch-size must be at least 1, got 0" (None: not given)."""
    for name, value in flags.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``key=value`` overrides come after options too (``zoo train R --out D k=v``).

    argparse fills all positionals from the first run of them, so ``k=v`` after ``--out D``
    would be rejected; intermixed parsing is what fixes that, but argparse cannot intermix at
    the top level (it has subparsers), so this subcommand's parser uses it for itself.
    """
    plain = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        parser.parse_known_args = plain  # the intermixed parser calls it (Python < 3.13)
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args

    parser.parse_known_args = parse_known_args


# ---------------------------------------------------------------------------------------------
# zoo train


def default_out_dir(recipe: Recipe, recipe_path: str | Path) -> Path:
    """``recipe.out_dir``, else ``runs/<recipe file stem>``."""
    return Path(recipe.out_dir) if recipe.out_dir else Path("runs") / Path(recipe_path).stem


@command("train", "train a recipe (YAML) into a run directory")
def cmd_train(args: argparse.Namespace) -> int:
    if not _is_main_process():  # under torchrun, one process talks
        logging.getLogger().setLevel(logging.WARNING)
    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else default_out_dir(recipe, args.recipe)
    if args.resume:  # the run's own recorded recipe, not the file's values
        recipe = resume_recipe(out, args.recipe, args.overrides)
    metrics = train(recipe, out, resume=args.resume)
    if _is_main_process():
        print(f"run directory: {out}")
        for key, value in metrics.items():
            print(f"{key}: {_cell(value)}")
    return 0


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
    _overrides_anywhere(p)


cmd_train.arguments = _train_args


# ---------------------------------------------------------------------------------------------
# zoo eval


def find_run_recipe(
    path: Path, model_dir: Path, overrides: Sequence[str] = ()
) -> tuple[Path, Recipe] | None:
    """The run directory and its recipe (``config.yaml``, with ``overrides`` applied) given to
    a command as ``path``, or found above the model directory; None for a saved model that
    stands alone."""
    for folder in (path, model_dir, model_dir.parent, model_dir.parent.parent):
        if (folder / RECIPE_NAME).is_file():
            return folder, load_recipe(folder / RECIPE_NAME, overrides, upgrade=True)
    return None


def _run_recipe(path: Path, model_dir: Path, overrides: Sequence[str] = ()) -> tuple[Path, Recipe]:
    found = find_run_recipe(path, model_dir, overrides)
    if found is None:
        raise CheckpointError(f"no {RECIPE_NAME} beside {model_dir}: eval needs the run's recipe")
    return found


def with_ensemble(
    task: Task, model: torch.nn.Module, runs: Sequence[str | Path], device: torch.device
) -> torch.nn.Module:
    """``model`` alone when ``runs`` is empty, else the task's ensemble of it and the models
    of ``runs`` (run directories or saved model directories, loaded onto ``device``).

    Raises:
        CheckpointError: a path holds no saved model.
        ValueError: a model of another task, or one the task cannot average with ``model``.
    """
    if not runs:
        return model
    others = []
    for run in runs:
        model_dir, config = _saved_model(run, task.name, ", so it cannot join the ensemble")
        meta = config.get("task_meta") or {}
        others.append((model_dir, load_pretrained(model_dir).to(device), meta))
    return task.ensemble(model, others)


def _saved_model(run: str | Path, task_name: str, purpose: str = "") -> tuple[Path, dict]:
    """The model directory of ``run`` and its config.json, which must be a ``task_name``
    model (a config without a task is taken as one).

    Raises:
        CheckpointError: the path holds no saved model.
        ValueError: the saved model belongs to another task.
    """
    model_dir = find_model_dir(Path(run))
    config = read_model_config(model_dir)
    saved_task = config.get("task", task_name)
    if saved_task != task_name:
        raise ValueError(f"{model_dir} holds a {saved_task} model, not a {task_name} "
                         f"model{purpose}")
    return model_dir, config


def load_for_prediction(
    run: str | Path,
    task_name: str,
    device: str = "auto",
    ensemble: Sequence[str | Path] = (),
    section: str | None = None,
) -> tuple[Task, torch.nn.Module]:
    """The task (with what it saved beside the model: vocabulary, class names) and the model
    of a run directory (its best/, else newest checkpoint) or a saved model directory;
    averaged with the models of the ``ensemble`` runs when there are any. For a multitask run,
    its ``task_name`` section's task and model (``section`` names one, see zoo/multitask/runs).

    Raises:
        CheckpointError: the path holds no saved model.
        ValueError: the saved model belongs to another task.
    """
    run = Path(run)
    picked = multitask_for_prediction(run, task_name, section, device)
    if picked is not None:
        if ensemble:
            raise ValueError("--ensemble takes single-task models: write this run's task out "
                             "with zoo extract first")
        return picked
    model_dir, config = _saved_model(run, task_name)
    found = find_run_recipe(run, model_dir)
    if found is None:  # a bare saved model: the task's defaults
        minimal = {"task": task_name, "model": {"name": config["model"]}, "train": {"max_steps": 1}}
        recipe = recipe_from_dict(minimal)
    else:
        recipe = found[1]
    task = get_task(task_name)(recipe)
    task.load_extra(model_dir, config.get("task_meta") or {})
    device = resolve_device(device, setting="--device")
    model = with_ensemble(task, load_pretrained(model_dir).to(device), ensemble, device)
    return task, model


def evaluate_run(
    path: str | Path,
    split: str = "val",
    batch_size: int | None = None,
    device: str = "auto",
    report: bool = False,
    overrides: Sequence[str] = (),
    ensemble: Sequence[str | Path] = (),
    section: str | None = None,
) -> tuple[Path, dict[str, float], list[str]]:
    """Evaluate the model saved in a run (its best/, else newest checkpoint) or a model dir.

    Args:
        report: let the task write its report of the evaluation into the run directory (for
            classification ``confusion_{split}.png`` and ``per_class_{split}.json``).
        overrides: ``dotted.key=value`` changes to the run's recipe for this evaluation only
            (e.g. ``decode.beam_size=1`` or ``decode.len_penalty=0.6``); the run's
            ``config.yaml`` is not rewritten.
        ensemble: further runs (or model directories) whose models are averaged with this
            one's (speech recognition: frame by frame); its report is written to ``path``'s
            run as ``<split>_ensemble``.
        section: of a multitask run, evaluate this task section only.
    Returns:
        The model directory evaluated, its metrics on ``split`` and the report's lines.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    path = Path(path)
    model_dir = find_model_dir(path)
    run_dir, recipe = _run_recipe(path, model_dir, overrides)
    config = read_model_config(model_dir)
    task = get_task(config.get("task", recipe.task))(recipe, run_dir=run_dir)
    if section is not None:
        task = only_section(task, section)
    task.prepare()
    task.load_extra(model_dir, config.get("task_meta") or {})
    splits = task.datasets()
    if split not in splits:
        raise ValueError(f"split '{split}' does not exist here; the data has {sorted(splits)}")
    device = resolve_device(device, setting="--device")
    model = with_ensemble(task, load_pretrained(model_dir).to(device), ensemble, device)
    batch_size = batch_size or recipe.eval.batch_size or recipe.train.batch_size
    loader = task.loader(splits[split], batch_size)
    with torch.no_grad():
        metrics = {k: float(v) for k, v in task.evaluate(model, loader).items()}
    # an ensemble's report is named apart, so it does not replace the run's own
    name = f"{split}_ensemble" if ensemble else split
    lines = task.write_report(run_dir, name) if report else []
    return model_dir, metrics, lines


@command("eval", "evaluate a trained run on its validation or test split")
def cmd_eval(args: argparse.Namespace) -> int:
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


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/) or saved model directory")
    p.add_argument("--split", default="val", help="val or test (default: val)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--ensemble", action="append", metavar="RUN",
                   help="average this run's model with RUN's (repeatable; speech recognition)")
    p.add_argument("--task", default=None, metavar="NAME",
                   help="a multitask run: evaluate this task section only")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="change the run's recipe for this evaluation, e.g. decode.beam_size=1",
    )
    _overrides_anywhere(p)


cmd_eval.arguments = _eval_args


# ---------------------------------------------------------------------------------------------
# zoo demo


@command("demo", "train every task briefly on built-in data and print the metrics")
def cmd_demo(args: argparse.Namespace) -> int:
    names = args.only or list(DEMO_NAMES)
    if "OMP_NUM_THREADS" not in os.environ:
        # The demo models are tiny: a second thread gains little, and on a busy machine
        # OpenMP threads that spin waiting for each other make a run many times slower.
        torch.set_num_threads(1)
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
    _print_table(rows, ["demo", "task", "model", "steps", "metric", "value", "best", "time"])
    where = f"the runs are in {args.out}" if args.out else (
        "the runs were written to a temporary directory and removed: pass --out DIR to keep them")
    print(f"\n{where}")
    if any(row["demo"] == "speech" for row in rows):
        print("the speech demo learnt synthetic tones standing for digits, not speech: on real "
              "recordings it transcribes nothing meaningful")
    return 0


def _demo_one(name: str, recipe: Recipe, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = train(recipe, out)
    metric = recipe.eval.metric or get_task(recipe.task).metric
    return {
        "demo": name, "task": recipe.task, "model": recipe.model.name,
        "steps": checkpoint_dirs(out)[-1].name.removeprefix("step_").lstrip("0"),
        "metric": metric, "value": metrics.get(metric), "best": metrics.get(f"best_{metric}"),
        "time": f"{time.perf_counter() - start:.0f} s",
    }  # fmt: skip


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every recipe")
    p.add_argument("--only", action="append", choices=DEMO_CHOICES, help="run only this demo")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    _overrides_anywhere(p)


cmd_demo.arguments = _demo_args


# ---------------------------------------------------------------------------------------------
# zoo plot, zoo average


@command("plot", "plot a run's loss and metric curves to RUN/curves.png")
def cmd_plot(args: argparse.Namespace) -> int:
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


cmd_plot.arguments = lambda p: p.add_argument("run", help="run directory")


def average_run(run: str | Path, last: int, out: str | Path | None = None) -> Path:
    """Average the weights of a run's last ``last`` checkpoints into a saved model directory.

    Raises:
        ValueError: fewer checkpoints than ``last``, or ``out`` already exists.
    """
    run = Path(run)
    found = checkpoint_dirs(run)
    if last < 1 or len(found) < last:
        raise ValueError(f"{run} has {len(found)} checkpoints; cannot average the last {last}")
    chosen = found[-last:]
    out = Path(out) if out else run / "averaged"
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    averaged = average_checkpoints([c / WEIGHTS_NAME for c in chosen])

    def write(tmp: Path) -> None:
        for item in chosen[-1].iterdir():  # config.json and the task's files
            if item.name not in (WEIGHTS_NAME, STATE_NAME):
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, tmp / item.name)
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))
        config["averaged_from"] = [c.name for c in chosen]
        atomic_write_bytes(tmp / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        atomic_save_safetensors(averaged, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        load_pretrained(tmp)  # the result must load

    atomic_dir(out, write)
    return out


@command("average", "average the last N checkpoints of a run into a model directory")
def cmd_average(args: argparse.Namespace) -> int:
    check_positive(last=args.last)
    out = average_run(args.run, args.last, args.out)
    print(f"averaged the last {args.last} checkpoints of {args.run} into {out}")
    return 0


def _average_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--last", type=int, required=True, help="how many checkpoints to average")
    p.add_argument("--out", default=None, help="output model directory (default: RUN/averaged)")


cmd_average.arguments = _average_args


# ---------------------------------------------------------------------------------------------
# zoo classify


@command("classify", "print the top-5 classes of images with a trained image classifier")
def cmd_classify(args: argparse.Namespace) -> int:
    check_positive(topk=args.topk)
    task, model = load_for_prediction(args.run, "classification", args.device, section=args.task)
    for line in task.predict(model, args.images, topk=args.topk):
        print(line)
    return 0


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (uses best/ or the newest checkpoint) or saved model")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task", default=None, metavar="NAME", help=TASK_HELP)


cmd_classify.arguments = _classify_args
