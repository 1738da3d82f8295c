"""The cross-modal transfer matrix: how well does a core trained on one modality serve another?

Protocol (docs/transfer.md):

1. Sources. The "mini" core (width 128, 6 layers, 4 heads) trained on real data by the zoo's own
   engine from configs/transfer/: text (the Multi30k en-de translation encoder), vision
   (Fashion-MNIST), speech (FSDD single digits), each for ``--source-steps`` steps (cosine to 0,
   10% warmup); ``--source NAME=RUN`` reuses a run instead. The control, "random", is the
   target's own freshly initialised core.
2. Targets. Fashion-MNIST top-1, FSDD accuracy (single digits, official split), Multi30k BLEU
   (greedy). Every cell trains the target's mini recipe for ``--target-steps`` steps (cosine to
   0, 10% warmup, no EMA) from the source's core (``model.init_from`` parts [core]; adapters and
   heads start fresh), frozen (``fpt``: the core's LayerNorms train, the rest of the core is
   frozen) or fully fine-tuned (``full``); same core, steps, data and seeds in every cell.
3. Selection. For every cell and learning rate in ``--lrs``, each seed in ``--seeds`` trains;
   the LR with the best mean validation metric (evaluated once, at the end) is chosen, and the
   table reports the mean (± std over seeds) test metric of that LR.
4. Step time. Per target and regime, ``--timing-steps`` steps of the random-core cell in this
   process, one run at a time, before anything else: the median time of a training step.

Writes ``transfer.md``, ``transfer.json`` and ``transfer.png`` (heatmap) into ``--out``:

    PYTHONPATH=. python benchmarks/transfer.py --out runs/transfer_matrix --device cuda --jobs 8
    PYTHONPATH=. python benchmarks/transfer.py --out /tmp/tm --device cpu --source-steps 20 \\
        --target-steps 20 --lrs 1e-3 --seeds 0 --max-samples 256     # a smoke run, no results
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # transfer_report.py, beside this
from transfer_report import write_report  # noqa: E402

import zoo  # noqa: E402, F401  (registers the models)
from zoo.config import load_recipe  # noqa: E402
from zoo.engine import Trainer, autocast  # noqa: E402
from zoo.saved_model import find_model_dir  # noqa: E402
from zoo.transfer import PRESETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """A task of the matrix: its mini recipe, data folder and headline metric."""

    recipe: str
    data: str  # folder under --data
    metric: str  # the val metric that picks the LR, and the test metric reported
    label: str
    extra: tuple[str, ...] = ()


TARGETS = {
    "text": Target("mt_mini_multi30k", "multi30k", "bleu", "Multi30k en-de BLEU"),
    "vision": Target("vit_mini_fashion_mnist", "fashion-mnist", "top1", "Fashion-MNIST top-1 %"),
    "speech": Target("asr_mini_fsdd_single", "fsdd", "accuracy", "FSDD accuracy %",
                     ("eval.metric=accuracy", "eval.mode=max")),
}  # fmt: skip
SOURCES = ("random", *TARGETS)
TOKENIZER = "spm.model"
RESULTS, PROTOCOL = "results.jsonl", "protocol.json"


def recipe_path(name: str) -> Path:
    return ROOT / "configs" / "transfer" / f"{name}.yaml"


def schedule(steps: int) -> list[str]:
    return [
        "schedule.name=cosine", f"schedule.warmup_steps={max(1, steps // 10)}",
        "schedule.cooldown_steps=0", f"train.max_steps={steps}", "train.epochs=null",
        f"train.eval_every={steps}", f"train.checkpoint_every={steps}", "train.keep_last=1",
        f"train.log_every={max(1, min(50, steps // 4))}",
    ]  # fmt: skip


def common(args: argparse.Namespace, target: Target) -> list[str]:
    """Overrides of every run of ``target``: data root, device, precision, sample caps."""
    out = [f"data.root={Path(args.data) / target.data}", f"train.device={args.device}"]
    if args.precision:
        out.append(f"train.precision={args.precision}")
    if args.max_samples:
        out.append(f"data.max_samples={args.max_samples}")
        if target.metric == "top1":
            out.append(f"data.options.max_eval_samples={args.max_samples}")
    return out


class TimedTrainer(Trainer):
    """The engine's trainer, timing each optimizer step (forward, backward, update; not data)."""

    step_times: list[float]

    def _train_step(self, group: list[dict[str, Any]]) -> None:
        if not hasattr(self, "step_times"):
            self.step_times = []
        sync = torch.cuda.synchronize if self.device.type == "cuda" else lambda: None
        sync()
        start = time.perf_counter()
        super()._train_step(group)
        sync()
        self.step_times.append(time.perf_counter() - start)

    def test_metrics(self) -> dict[str, float]:
        """The final model's metrics on the test split."""
        task, split = self.task, self.splits["test"]
        loader = task.loader(split, self.recipe.eval.batch_size or self.cfg.batch_size, 0)
        self.model.eval()
        with torch.no_grad(), autocast(self.cfg.precision, self.device):
            return {k: float(v) for k, v in task.evaluate(self.model, loader).items()}


def median_ms(times: list[float], skip: int = 3) -> float | None:
    kept = times[skip:] if len(times) > skip else times
    return round(1000 * statistics.median(kept), 3) if kept else None


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run (a source, a cell or a timing run) in this process; return its metrics
    and timings. A run that fails (a diverged LR) is recorded with its error, not raised."""
    logging.basicConfig(level=job["log_level"], format="%(message)s")
    torch.set_num_threads(job["threads"])
    run_dir, start = Path(job["run_dir"]), time.perf_counter()
    result = {
        **{k: job[k] for k in ("kind", "name", "run_dir", "overrides")},
        **{k: job.get(k) for k in ("target", "source", "regime", "lr", "seed")},
        "val": None, "test": None, "step_ms": None, "trainable_params": None, "error": None,
    }  # fmt: skip
    if job.get("tokenizer") and Path(job["tokenizer"]).is_file():
        run_dir.mkdir(parents=True, exist_ok=True)  # the vocabulary is the same in every run
        shutil.copy(job["tokenizer"], run_dir / TOKENIZER)
    try:
        trainer = TimedTrainer(load_recipe(job["recipe"], job["overrides"]), run_dir)
        result["trainable_params"] = sum(
            p.numel() for p in trainer.model.parameters() if p.requires_grad)
        final = trainer.fit()
        result.update(val=final.get(job["metric"]), val_metrics=final,
                      step_ms=median_ms(trainer.step_times))
        if job["kind"] == "cell":
            result["test"] = trainer.test_metrics().get(job["metric"])
    except (ValueError, RuntimeError) as e:  # TrainingError (NaN loss) is a ValueError
        result["error"] = f"{type(e).__name__}: {e}"
    result["seconds"] = round(time.perf_counter() - start, 1)
    if job.get("tokenizer") and (run_dir / TOKENIZER).is_file():
        share_tokenizer(run_dir / TOKENIZER, Path(job["tokenizer"]))
    if not job["keep"]:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def share_tokenizer(trained: Path, cache: Path) -> None:
    """Keep the first run's vocabulary for the later ones (parallel runs may race here)."""
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        shutil.copy(trained, tmp)
        os.replace(tmp, cache)


def source_jobs(args: argparse.Namespace, reused: dict[str, str]) -> list[dict[str, Any]]:
    jobs = []
    for name in args.sources:
        if name == "random" or name in reused:
            continue
        target = TARGETS[name]
        overrides = [*common(args, target), *schedule(args.source_steps), *target.extra]
        jobs.append(job(args, "source", name, recipe_path(target.recipe), overrides,
                        args.out / "sources" / name, target.metric, keep=True))
    return jobs


def cell_jobs(args: argparse.Namespace, sources: dict[str, str]) -> list[dict[str, Any]]:
    """Every (seed, LR, target, source, regime) run, seed first: a run cut short still has
    whole matrices of its first seeds."""
    jobs = []
    for seed, lr, tname, source, regime in itertools.product(
        args.seeds, args.lrs, args.targets, args.sources, args.regimes
    ):
        target = TARGETS[tname]
        overrides = cell_overrides(args, target, sources.get(source), regime, lr, seed)
        name = f"{tname}/{source}/{regime}/lr{lr:g}_s{seed}"
        jobs.append(job(args, "cell", name, recipe_path(target.recipe), overrides,
                        args.out / "runs" / name, target.metric, target=tname, source=source,
                        regime=regime, lr=lr, seed=seed))
    return jobs


def cell_overrides(args: argparse.Namespace, target: Target, source_run: str | None,
                   regime: str, lr: float, seed: int) -> list[str]:
    out = [*common(args, target), *schedule(args.target_steps), *target.extra,
           f"optim.lr={lr}", f"train.seed={seed}", "train.ema_decay=null"]
    if regime != "full":
        out.append(f"train.freeze={regime}")
    if source_run is not None:
        out += [f"model.init_from.path={source_run}", "model.init_from.parts=[core]"]
    return out


def job(args: argparse.Namespace, kind: str, name: str, recipe: Path, overrides: list[str],
        run_dir: Path, metric: str, keep: bool | None = None, **cell: Any) -> dict[str, Any]:
    text = cell.get("target") == "text" or (kind == "source" and name == "text")
    return {
        "kind": kind, "name": name, "recipe": str(recipe), "overrides": overrides,
        "run_dir": str(run_dir), "metric": metric, "keep": args.keep_runs if keep is None else keep,
        "tokenizer": str(args.out / "cache" / TOKENIZER) if text else None,
        "threads": args.threads, "log_level": logging.INFO if args.jobs == 1 else logging.WARNING,
        **cell,
    }  # fmt: skip


def run_all(jobs: list[dict[str, Any]], n_jobs: int, log: Path) -> list[dict[str, Any]]:
    """Run the jobs, ``n_jobs`` processes at a time (1: in this process), printing progress and
    appending each result to ``log`` (so that a run cut short keeps what it finished)."""
    results: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(result, default=str) + "\n")
        val = "-" if result["val"] is None else f"{result['val']:.4g}"
        test = "" if result["test"] is None else f" test {result['test']:.4g}"
        error = f" FAILED: {result['error']}" if result["error"] else ""
        print(f"[{len(results)}/{len(jobs)}] {result['kind']} {result['name']}: val {val}{test} "
              f"({result['seconds']:.0f} s, step {result['step_ms']} ms){error}", flush=True)

    if n_jobs == 1:
        for j in jobs:
            done(run_one(j))
        return results
    with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(run_one, j) for j in jobs]:
            done(future.result())
    return results


def timing_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per target and regime, a short run of the random-core cell (the middle LR, seed 0),
    run one at a time in this process before the matrix, for its median step time."""
    jobs, lr = [], args.lrs[len(args.lrs) // 2]
    for tname in args.targets:
        for regime in args.regimes:
            target = TARGETS[tname]
            overrides = cell_overrides(args, target, None, regime, lr, args.seeds[0])
            overrides += schedule(args.timing_steps)
            jobs.append(job(args, "timing", f"{tname}/{regime}", recipe_path(target.recipe),
                            overrides, args.out / "timing" / tname / regime, target.metric,
                            keep=False, target=tname, regime=regime))
    return jobs


def timing_table(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["kind"] == "timing":
            table.setdefault(r["target"], {})[r["regime"]] = {
                k: r[k] for k in ("step_ms", "trainable_params")}
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    p.add_argument("--data", default="../shared/data", help="folder of multi30k/, fsdd/, ...")
    p.add_argument("--device", default="auto", help="train.device of every run: cpu, cuda, auto")
    p.add_argument("--precision", default=None, help="train.precision (default: the recipes')")
    p.add_argument("--source", action="append", default=[], metavar="NAME=RUN",
                   help="reuse a trained source run (text, vision or speech) instead of training")
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--regimes", default="fpt,full", help="full, or train.freeze presets")
    p.add_argument("--source-steps", type=int, default=2000)
    p.add_argument("--target-steps", type=int, default=500)
    p.add_argument("--timing-steps", type=int, default=30)
    p.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--max-samples", type=int, default=None,
                   help="cap the data (smoke runs): data.max_samples, and for Fashion-MNIST "
                        "max_eval_samples; FSDD caps every split")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--keep-runs", action="store_true", help="keep the cells' checkpoints")
    p.add_argument("--report", action="store_true",
                   help="only rewrite the report from --out's results.jsonl (e.g. of a cut run)")
    args = p.parse_args(argv)
    args.sources, args.targets = args.sources.split(","), args.targets.split(",")
    args.regimes = args.regimes.split(",")
    args.lrs = [float(x) for x in args.lrs.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, chosen, valid in [("--sources", args.sources, SOURCES),
                                ("--targets", args.targets, tuple(TARGETS)),
                                ("--regimes", args.regimes, ("full", *PRESETS))]:
        bad = [c for c in chosen if c not in valid]
        if bad:
            p.error(f"{name}: unknown '{bad[0]}'; choose from {', '.join(valid)}")
    if args.report:
        if not (args.out / RESULTS).is_file():
            p.error(f"--report: {args.out / RESULTS} does not exist")
        return
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"--out {args.out} already holds files; choose a new folder")
    for item in args.source:
        name, _, run = item.partition("=")
        if name not in TARGETS or not run:
            p.error(f"--source '{item}' must be NAME=RUN with NAME one of {', '.join(TARGETS)}")
        try:
            find_model_dir(run)
        except Exception as e:  # noqa: BLE001  (a CheckpointError: one sentence)
            p.error(f"--source {name}: {e}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.report:
        protocol = json.loads((args.out / PROTOCOL).read_text(encoding="utf-8"))
        results = [json.loads(line) for line in (args.out / RESULTS).read_text().splitlines()]
    else:
        protocol = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        protocol["command"] = " ".join(["python", "benchmarks/transfer.py",
                                        *(argv if argv is not None else sys.argv[1:])])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / PROTOCOL).write_text(json.dumps(protocol, indent=1), encoding="utf-8")
        results = run_protocol(args)
        protocol["wall_s"] = round(time.perf_counter() - start, 1)
        (args.out / PROTOCOL).write_text(json.dumps(protocol, indent=1), encoding="utf-8")
    reused = dict(item.partition("=")[::2] for item in protocol["source"])
    sources = [r for r in results if r["kind"] == "source"]
    runs = {**reused, **{r["name"]: r["run_dir"] for r in sources}}
    cells = [r for r in results if r["kind"] == "cell"]
    write_report(args.out, protocol, TARGETS, runs, sources, cells, timing_table(results),
                 protocol.get("wall_s", 0.0))
    print(f"wrote {args.out / 'transfer.md'} in {time.perf_counter() - start:.0f} s")


def run_protocol(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time the steps (first, while nothing else runs), train the sources, then the cells;
    return every run's result."""
    log = args.out / RESULTS
    timing = run_all(timing_jobs(args), 1, log) if args.timing_steps else []
    reused = dict(item.partition("=")[::2] for item in args.source)
    sources = run_all(source_jobs(args, reused), min(args.jobs, 3), log)
    runs = {**reused, **{r["name"]: r["run_dir"] for r in sources}}
    cells = run_all(cell_jobs(args, runs), args.jobs, log)
    return timing + sources + cells


if __name__ == "__main__":
    main()
