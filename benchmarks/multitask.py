"""One core for three tasks against three single-task models (PolyViT-style co-training).

Trains the sections of configs/multitask/mini_fmnist_fsdd_multi30k.yaml (Fashion-MNIST with
vit_mini_patch4_28, FSDD single digits with asr_transformer_ctc_mini, Multi30k en->de with
mt_transformer_mini; "mini" core, dropout 0.1) as three single-task runs and as one multitask run
of the three (weighted schedule: exactly --steps-per-task steps of each task), with the same
core, steps per task, optimizer, schedule and seed. Each run's best
checkpoint (singles: by their task's val metric; the multitask run: by its score, the tasks'
val metrics relative to --references, or to 100 and 1 without) is evaluated on the test splits.
With --tune-steps, a cheaper two-task pair (vision + speech) is also trained under every
sampling schedule and compared on validation; a schedule may carry section settings
(``weighted:speech.lr_mult=2``: the speech section's own parameters at twice the LR), and
``--set`` gives the three-task run the same. ``--singles-from DIR`` takes the single-task rows
from an earlier invocation's multitask.json (same steps, seed, LR, precision) instead of
training them again.

Writes ``multitask.json`` and ``multitask.md`` into --out (rewritten as runs finish) and keeps
the run directories in ``--out/runs``. Runs go in parallel processes (--parallel), so their
wall times include sharing the machine.

    PYTHONPATH=. python benchmarks/multitask.py --smoke --out /tmp/mt      # built-in data, CPU
    PYTHONPATH=. python benchmarks/multitask.py --device cuda --data ../shared/data \\
        --steps-per-task 3000 --tune-steps 1000 --parallel 8 --out runs/bench_multitask
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("vision", "speech", "translation")
SCHEDULES = ("weighted", "proportional", "temperature", "uniform")
METRIC = {"vision": ("top1", "max"), "speech": ("cer", "min"), "translation": ("bleu", "max")}


RECIPE = ROOT / "configs/multitask/mini_fmnist_fsdd_multi30k.yaml"
SMOKE_RECIPE = ROOT / "configs/demo/multitask.yaml"


def sections(data: Path, builtin: bool, smoke: bool) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each task's section of the recipe (task, model, data, train, eval) with its data root
    moved into ``data``, and the recipe's core (the demo's for the built-in data)."""
    recipe = yaml.safe_load((SMOKE_RECIPE if builtin else RECIPE).read_text())
    out = {t["name"]: {k: v for k, v in t.items() if k not in ("name", "steps", "reference")}
           for t in recipe["multitask"]["tasks"]}
    for section in out.values():
        if section["data"].get("root"):
            section["data"]["root"] = str(data / Path(section["data"]["root"]).name)
    if smoke:  # smaller built-in data
        out["vision"]["data"]["options"] = {"num_train": 512, "num_val": 64, "num_test": 64}
        out["speech"]["data"]["options"] = {"train_utterances": 128, "eval_utterances": 16}
        out["translation"]["data"]["options"].update(num_samples=400, num_eval=16)
        out["translation"]["tokenizer"]["vocab_size"] = 200
    return out, recipe["multitask"]["core"]


def _common(args: argparse.Namespace, steps: int, evals: int) -> dict[str, Any]:
    return {
        "optim": {"lr": args.lr, "weight_decay": 0.05, "betas": [0.9, 0.98]},
        "schedule": {"name": "cosine", "warmup_steps": max(1, steps // 20)},
        "train": {"max_steps": steps, "seed": args.seed, "precision": args.precision,
                  "device": args.device, "eval_every": max(1, steps // evals),
                  "checkpoint_every": max(1, steps // evals), "keep_last": 1, "log_every": 50},
    }  # fmt: skip


def single_recipe(section: dict[str, Any], core: Any, args: argparse.Namespace) -> dict:
    """One task alone, with exactly the multitask run's core (``multitask.core``)."""
    recipe = copy.deepcopy(section)
    train = recipe.pop("train")
    if isinstance(core, dict) and "size" in core:  # a size with settings on top
        shared = {"core": core["size"], **{k: v for k, v in core.items() if k != "size"}}
    else:
        shared = {"core": core}
    recipe["model"].setdefault("overrides", {}).update(shared)
    common = _common(args, args.steps_per_task, args.evals)
    common["train"].update(train)
    return {**recipe, **common}


SECTION_SETTINGS = ("lr_mult", "loss_weight")


def parse_settings(items: list[str], tasks: list[str], where: str) -> dict[str, dict[str, float]]:
    """``["speech.lr_mult=2", ...]`` -> ``{"speech": {"lr_mult": 2.0}}``; one sentence naming the
    item when it is not TASK.KEY=NUMBER of a task in ``tasks``."""
    found: dict[str, dict[str, float]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        task, dot, setting = key.partition(".")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not (eq and dot) or task not in tasks or setting not in SECTION_SETTINGS \
                or number is None:
            raise SystemExit(f"{where}: {item!r} is not TASK.KEY=NUMBER with TASK one of "
                             f"{', '.join(tasks)} and KEY one of {', '.join(SECTION_SETTINGS)}")
        found.setdefault(task, {})[setting] = number
    return found


def parse_schedule(spec: str, tasks: list[str]) -> tuple[str, dict[str, dict[str, float]]]:
    """``weighted:speech.lr_mult=2`` -> ("weighted", {"speech": {"lr_mult": 2.0}})."""
    schedule, *items = spec.split(":")
    if schedule not in SCHEDULES:
        raise SystemExit(f"--schedules: unknown schedule {schedule!r} in {spec!r}; choose from "
                         f"{', '.join(SCHEDULES)}")
    return schedule, parse_settings(items, tasks, f"--schedules {spec!r}")


def multi_recipe(parts: dict[str, dict], core: Any, steps: int, args: argparse.Namespace,
                 schedule: str, references: dict[str, float] | None = None,
                 settings: dict[str, dict[str, float]] | None = None) -> dict:
    """The tasks in ``parts`` on one core, ``steps`` each under ``schedule``; ``settings`` adds
    section keys (lr_mult, loss_weight) by task."""
    tasks = []
    for name, section in parts.items():
        entry = {"name": name, **copy.deepcopy(section), "steps": steps}
        entry.update((settings or {}).get(name, {}))
        if references and name in references:
            entry["reference"] = references[name]
        tasks.append(entry)
    return {"task": "multitask", "model": {"name": "multitask"},
            "multitask": {"core": core, "sampling": schedule, "tasks": tasks},
            **_common(args, steps * len(parts), args.evals)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# One run, in its own process


def run_job(recipe_path: Path, run_dir: Path) -> dict[str, Any]:
    """Train a recipe, evaluate its best checkpoint on test; what the report needs."""
    sys.path.insert(0, str(ROOT))
    import torch

    from zoo.config import load_recipe
    from zoo.engine import train
    from zoo.inference import evaluate_run

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = load_recipe(recipe_path)
    start = time.perf_counter()
    last = train(recipe, run_dir)
    seconds = time.perf_counter() - start
    best = json.loads((run_dir / "best" / "config.json").read_text())
    test = _test_metrics(evaluate_run, run_dir, recipe)
    import zoo

    model = zoo.load_pretrained(run_dir / "best")
    return {"train_seconds": seconds, "last": last, "best_step": best["step"],
            "val": best["metrics"], "test": test,
            "params": sum(p.numel() for p in model.parameters())}  # fmt: skip


def _test_metrics(evaluate_run: Any, run_dir: Path, recipe: Any) -> dict[str, Any]:
    """The best checkpoint's test metrics; a multitask run's sections one by one when some
    have no test split (the built-in tones have none)."""
    device = recipe.train.device
    try:
        return evaluate_run(run_dir, "test", device=device)[1]
    except ValueError as e:
        if recipe.multitask is None:
            return {"error": str(e)}
    found: dict[str, Any] = {}
    for section in recipe.multitask.tasks:
        try:
            found.update(evaluate_run(run_dir, "test", device=device, section=section["name"])[1])
        except ValueError:
            continue
    found.pop("score", None)  # of the last section alone
    return found


def launch(name: str, recipe: dict, out: Path, deadline: float) -> dict[str, Any]:
    """Run one job in a child process (killed at ``deadline``); its result or its error."""
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run_dir, result_path = folder / name, folder / f"{name}.json"
    cmd = [sys.executable, __file__, "--job", str(path), "--run", str(run_dir),
           "--result", str(result_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    with open(folder / f"{name}.log", "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            return {"error": "stopped at the --budget deadline"}
    if proc.returncode != 0 or not result_path.is_file():
        tail = (folder / f"{name}.log").read_text().strip().splitlines()[-1:]
        return {"error": f"exit {proc.returncode}: {tail[0] if tail else ''}"}
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# The report


def _metric(result: dict, split: str, task: str, multi: bool) -> float | None:
    metric = METRIC[task][0]
    values = result.get(split) or {}
    return values.get(f"{task}/{metric}" if multi else metric)


def _points(task: str, single: float | None, multi: float | None) -> float | None:
    """multi - single in points, positive when the multitask run is better."""
    if single is None or multi is None:
        return None
    _, mode = METRIC[task]
    sign = 1.0 if mode == "max" else -1.0
    return sign * (multi - single)  # points: every metric is in percent (BLEU on its 0-100)


def markdown(results: dict[str, Any]) -> str:
    meta, runs = results["meta"], results["runs"]
    lines = [f"# Multitask vs single-task ({meta['steps_per_task']} steps per task, "
             f"{meta['device']}, seed {meta['seed']})", ""]
    if meta["builtin"]:
        lines += ["Built-in data and the test models (the demo's sections).", ""]
    if meta["smoke"]:
        lines += ["Smoke run on the built-in data with the test models: the numbers only show "
                  "that the script works; they are not results.", ""]
    multi = runs.get("multitask", {})
    lines += ["Gaps: multi - single in points (CER x 100), + where the multitask model is "
              "better.", "", "| task | metric | single val | multi val | val gap | single test | "
              "multi test | test gap |", "|---|---|---|---|---|---|---|---|"]
    for task in meta["tasks"]:
        single = runs.get(f"single_{task}", {})
        cells = [_metric(single, "val", task, False), _metric(multi, "val", task, True),
                 _metric(single, "test", task, False), _metric(multi, "test", task, True)]
        gaps = [_points(task, cells[0], cells[1]), _points(task, cells[2], cells[3])]
        shown = [f"{c:.4g}" if c is not None else "-" for c in cells]
        shown.insert(2, "-" if gaps[0] is None else f"{gaps[0]:+.2f}")
        shown.append("-" if gaps[1] is None else f"{gaps[1]:+.2f}")
        lines.append(f"| {task} | {METRIC[task][0]} | {' | '.join(shown)} |")
    singles = [runs.get(f"single_{t}", {}) for t in meta["tasks"]]
    lines += ["", "| | parameters | train wall time (s) |", "|---|---|---|"]
    if all("params" in s for s in singles):
        lines.append(f"| {len(singles)} single models | {sum(s['params'] for s in singles):,} | "
                     f"{sum(s['train_seconds'] for s in singles):.0f} (sum) |")
    if "params" in multi:
        lines.append(f"| one multitask model | {multi['params']:,} | "
                     f"{multi['train_seconds']:.0f} |")
    lines += _tune_table(runs, meta["tune_steps"], meta["tune_tasks"])
    errors = {k: v["error"] for k, v in runs.items() if "error" in v}
    lines += ["", *[f"- {k}: {e}" for k, e in errors.items()]]
    return "\n".join(lines) + "\n"


def _tune_table(runs: dict[str, Any], steps: int, pair: list[str]) -> list[str]:
    tune = {k: v for k, v in runs.items() if k.startswith("tune_")}
    if not tune:
        return []
    keys = [f"{t}/{METRIC[t][0]}" for t in pair]
    lines = ["", f"Sampling schedules on the {' + '.join(pair)} pair ({steps} steps per task "
             "under weighted), validation:", "",
             f"| schedule | score | {' | '.join(keys)} | steps {'/'.join(pair)} |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for name, r in tune.items():
        val = r.get("val") or {}
        cells = [f"{val.get(k, float('nan')):.4g}" for k in ["score", *keys]]
        lines.append(f"| {name[5:]} | {' | '.join(cells)} | {r.get('steps', '-')} |")
    return lines


def _task_steps(run_dir: Path, pair: list[str]) -> str:
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    counts: dict[str, int] = {}
    for e in events:
        for key, value in e.items():
            if e.get("type") == "train" and key.endswith("/steps"):
                counts[key[:-6]] = counts.get(key[:-6], 0) + value
    return "/".join(str(counts.get(t, 0)) for t in pair)


def save(results: dict[str, Any], out: Path) -> None:
    # atomic: runs still going read multitask.json (and a kill mid-write must not empty it)
    from zoo.atomic import atomic_write_bytes

    atomic_write_bytes(out / "multitask.json", (json.dumps(results, indent=1) + "\n").encode())
    atomic_write_bytes(out / "multitask.md", markdown(results).encode())


# ---------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="folder for multitask.json, multitask.md, runs/")
    p.add_argument("--steps-per-task", type=int, default=None, help="default 3000 (smoke: 20)")
    p.add_argument("--tune-steps", type=int, default=None,
                   help="steps per task of the schedule comparison (0: none; smoke: 10)")
    p.add_argument("--schedules", default=",".join(SCHEDULES),
                   help="compared when tuning; each may carry section settings: "
                        "weighted:speech.lr_mult=2:speech.loss_weight=2")
    p.add_argument("--tune-tasks", default="vision,speech", help="the pair the schedules train")
    p.add_argument("--schedule", default="weighted", choices=SCHEDULES,
                   help="the three-task run's schedule")
    p.add_argument("--set", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="a section setting of the three-task run (lr_mult, loss_weight)")
    p.add_argument("--singles-from", type=Path, default=None,
                   help="an earlier --out whose single-task rows are reused, not retrained")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--precision", default=None, help="default: bf16 on cuda, else fp32")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--references", default="",
                   help="vision=93.1,speech=0.01,translation=35: single-task val metrics the "
                        "multitask run's best checkpoint is chosen against (default: none)")
    p.add_argument("--evals", type=int, default=4, help="evaluations per run")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--budget", type=float, default=1e9, help="seconds; later runs are killed")
    p.add_argument("--tasks", default=",".join(TASKS), help="a subset, e.g. vision,speech")
    p.add_argument("--builtin", action="store_true",
                   help="the demo's sections: built-in data, test models (a CPU-sized run)")
    p.add_argument("--smoke", action="store_true", help="--builtin with less data, tiny steps")
    p.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # internal: one run
    p.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps_per_task = args.steps_per_task or (20 if args.smoke else 3000)
    args.tune_steps = args.tune_steps if args.tune_steps is not None else (10 if args.smoke else 0)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.tune_tasks = [t for t in args.tune_tasks.split(",") if t]
    args.builtin = args.builtin or args.smoke
    unknown = sorted(set(args.tasks + args.tune_tasks) - set(TASKS))
    if unknown:
        p.error(f"--tasks: unknown task {unknown[0]}; choose from {', '.join(TASKS)}")
    return args


COMPARABLE = ("steps_per_task", "seed", "lr", "precision", "builtin", "smoke", "evals")


def earlier_singles(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The single-task rows of an earlier run of this benchmark, if it ran them as this one
    would (the keys of COMPARABLE); one sentence naming what differs otherwise."""
    path = folder / "multitask.json"
    try:
        earlier = json.loads(path.read_text())
        meta, runs = earlier["meta"], earlier["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--singles-from: cannot read {path} ({e.__class__.__name__})") from None
    for key in COMPARABLE:
        if meta.get(key) != getattr(args, key):
            raise SystemExit(f"--singles-from: {path} has {key}={meta.get(key)!r}, this run "
                             f"{getattr(args, key)!r}; its single-task rows are not comparable")
    found = {f"single_{t}": runs.get(f"single_{t}") for t in args.tasks}
    missing = [name for name, run in found.items() if not run or "error" in run]
    if missing:
        raise SystemExit(f"--singles-from: {path} has no finished {missing[0]} row")
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.job is not None:
        result = run_job(args.job, args.run)
        args.result.write_text(json.dumps(result) + "\n")
        return result
    if args.out is None:
        raise SystemExit("--out is required")
    deadline = time.time() + args.budget
    every, core = sections(args.data, args.builtin, args.smoke)
    parts = {t: every[t] for t in args.tasks}
    results = {"meta": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k not in ("job", "run", "result")}}, "runs": {}}
    jobs: dict[str, dict] = {}
    if args.singles_from is not None:
        results["runs"].update(earlier_singles(args.singles_from, args))
    else:
        jobs.update({f"single_{t}": single_recipe(parts[t], core, args) for t in args.tasks})
    refs = dict(item.split("=") for item in args.references.split(",") if item)
    jobs["multitask"] = multi_recipe(parts, core, args.steps_per_task, args, args.schedule,
                                     {k: float(v) for k, v in refs.items()},
                                     parse_settings(args.set, args.tasks, "--set"))
    pair = {t: every[t] for t in args.tune_tasks}
    same: dict[str, str] = {}  # a tune run identical to the multitask run is that run
    for spec in [s for s in args.schedules.split(",") if s] if args.tune_steps else []:
        schedule, settings = parse_schedule(spec, args.tune_tasks)
        recipe = multi_recipe(pair, core, args.tune_steps, args, schedule, None, settings)
        if recipe == jobs["multitask"]:
            same[f"tune_{spec}"] = "multitask"
        else:
            jobs[f"tune_{spec}"] = recipe
    names = [*results["runs"], *jobs, *same]
    order = ["multitask", *(n for n in jobs if n != "multitask")]  # the longest run first
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        futures = {pool.submit(launch, n, jobs[n], args.out, deadline): n for n in order}
        for future in as_completed(futures):  # each result saved as soon as it is there
            name = futures[future]
            result = future.result()
            for alias in [name, *(a for a, n in same.items() if n == name)]:
                results["runs"][alias] = dict(result, **({"same_as": name} if alias != name
                                                         else {}))
                if alias.startswith("tune_") and "error" not in result:
                    results["runs"][alias]["steps"] = _task_steps(args.out / "runs" / name,
                                                                  args.tune_tasks)
            results["runs"] = {n: results["runs"][n] for n in names if n in results["runs"]}
            save(results, args.out)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
