"""The run directory and what a run leaves in it for people to read.

Layout::

    RUN/config.yaml                     the resolved recipe
    RUN/metrics.jsonl                   one JSON object per train/eval/config event
    RUN/checkpoints/step_00000100/      config.json, model.safetensors, trainer_state.pt
    RUN/best/                           the best model so far by the task's metric
    RUN/curves.png                      loss and metric curves
    RUN/tensorboard/                    scalars, when tensorboard is installed

``RUN/metrics.jsonl`` events look like::

    {"type": "train", "step": 100, "epoch": 1.56, "loss": 0.93, "lr": 0.001, ...}
    {"type": "eval", "step": 100, "epoch": 1.56, "split": "val", "top1": 71.2, ...}
    {"type": "config", "step": 100, "changed": {"optim.lr": {"from": 0.001, "to": 0.0005}}}

A ``config`` event: a resumed run changed these settings of its recipe from this step on.
The run directory itself, its lock and its start-up are `zoo.run_dir`'s.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from zoo.atomic import DiskFullError, atomic_write_bytes

logger = logging.getLogger(__name__)

RECIPE_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
CHECKPOINTS = "checkpoints"
BEST = "best"
STATE_NAME = "trainer_state.pt"
TENSORBOARD_NAME = "tensorboard"


# ---------------------------------------------------------------------------------------------
# metrics.jsonl, progress, TensorBoard


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The events of ``RUN/metrics.jsonl``; a torn last line (a killed run) is skipped."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep only the events up to ``step``: on resume, the steps after the checkpoint are
    trained again, and their events would otherwise appear twice."""
    path = Path(run_dir) / METRICS_NAME
    if path.is_file():
        kept = [e for e in read_metrics(run_dir) if e.get("step", 0) <= step]
        text = "".join(json.dumps(e) + "\n" for e in kept)
        atomic_write_bytes(path, text.encode("utf-8"))


def append_event(run_dir: str | Path, event: dict[str, Any]) -> None:
    """Append one event to ``RUN/metrics.jsonl`` (outside a `Records`, e.g. at a resume)."""
    path = Path(run_dir) / METRICS_NAME
    line = json.dumps({k: _finite(v) for k, v in event.items()}) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as e:
        _raise_write_error(path, line, e)


def _raise_write_error(path: Path, line: str, e: OSError) -> NoReturn:
    """Raise the one-sentence error for a full disk, else ``e`` itself."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(path, len(line.encode("utf-8"))) from e
    raise e


def _finite(value: Any) -> Any:
    # JSON has no NaN or inf; write them as strings so every line stays valid JSON.
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)


class Records:
    """Writes the events of one run (rank 0 only; other ranks get ``enabled=False``).

    Args:
        run_dir: the run directory.
        total_steps: the run's length, for the progress bar.
        initial_step: where a resumed run starts.
        unit: what throughput counts (the task's ``unit``).
        log_every: steps between log lines when there is no progress bar.
        enabled: False on ranks other than 0: nothing is shown or written.
    """

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        initial_step: int,
        unit: str,
        log_every: int,
        enabled: bool = True,
    ) -> None:
        self.run_dir, self.total_steps, self.unit = run_dir, total_steps, unit
        self.log_every, self.enabled = log_every, enabled
        self.bar_enabled = enabled and sys.stderr.isatty()
        self._stack = contextlib.ExitStack()
        self.bar: tqdm | None = None
        self.file = None
        self.tensorboard = None
        if not enabled:
            return
        self.file = self._stack.enter_context(open(run_dir / METRICS_NAME, "a", encoding="utf-8"))
        self.tensorboard = _open_tensorboard(run_dir)
        if self.bar_enabled:
            self._stack.enter_context(logging_redirect_tqdm())
            self.bar = self._stack.enter_context(
                tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)
            )

    def train(self, step: int, epoch: float, values: dict[str, float]) -> None:
        """Record the training values averaged over the last ``log_every`` steps."""
        if not self.enabled:
            return
        self._write({"type": "train", "step": step, "epoch": round(epoch, 4), **values})
        rate = values.get(f"{self.unit}_per_s", 0.0)
        tasks = _task_steps(values)
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss={values['loss']:.4f} lr={values['lr']:.2e} {self.unit}/s={rate:.0f}"
                + (f" {tasks}" if tasks else ""),
                refresh=False,
            )
        else:
            logger.info(
                "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %s/s %.0f%s",
                step,
                self.total_steps,
                epoch,
                values["loss"],
                values["lr"],
                self.unit,
                rate,
                f"  {tasks}" if tasks else "",
            )

    def step_done(self) -> None:
        """Advance the progress bar by one optimizer step."""
        if self.bar is not None:
            self.bar.update(1)

    def eval(self, step: int, epoch: float, split: str, metrics: dict[str, float]) -> None:
        """Record evaluation metrics (always shown as one log line)."""
        if not self.enabled:
            return
        self._write(
            {"type": "eval", "step": step, "epoch": round(epoch, 4), "split": split, **metrics}
        )
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        logger.info("eval step %d (%s): %s", step, split, shown)

    def _write(self, event: dict[str, Any]) -> None:
        line = json.dumps({k: _finite(v) for k, v in event.items()}) + "\n"
        try:
            self.file.write(line)
            self.file.flush()
        except OSError as e:
            with contextlib.suppress(OSError):  # it would only fail to flush again
                self.file.close()
            _raise_write_error(self.run_dir / METRICS_NAME, line, e)
        if self.tensorboard is not None:
            prefix = event["type"]
            for key, value in event.items():
                if key not in ("type", "step", "epoch") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, event["step"])

    def close(self) -> None:
        """Close the bar, metrics.jsonl and TensorBoard writer."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        self._stack.close()


class Meter:
    """Training values between two log lines: unit-weighted sums, the step count and time.

    In a run of several tasks each step names its task, and the values are kept per task too:
    ``<task>/<key>`` is that task's unit-weighted mean, ``<task>/steps`` its steps, and the
    overall ``loss`` the mean over steps of each step's task's loss (their units differ).

    Args:
        unit: what throughput counts (``samples``, ``tokens``).
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.steps, self.units, self.seconds, self.grad_norm, self.lr = 0, 0.0, 0.0, 0.0, 0.0
        self.sums: dict[str, float] = {}
        self.tasks: dict[str, Meter] = {}

    def add(
        self,
        sums: dict[str, float],
        units: float,
        lr: float,
        grad_norm: float,
        seconds: float,
        task: str | None = None,
    ) -> None:
        """Add one optimizer step: ``sums`` are values x units, summed over ranks; ``task``
        names the step's task in a run of several."""
        self.steps += 1
        self.units += units
        self.seconds += seconds
        self.grad_norm += grad_norm
        self.lr = lr
        for key, value in sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        if task is not None:
            self.tasks.setdefault(task, Meter(self.unit)).add(sums, units, lr, grad_norm, seconds)

    def averages(self) -> dict[str, Any]:
        """Unit-weighted means, the last lr, the mean gradient norm and the throughput (with
        the per-task values and ``task``, the one task trained, when the window had one)."""
        values = {k: v / max(self.units, 1e-9) for k, v in self.sums.items()}
        if self.tasks:
            values = {}
            for name, meter in self.tasks.items():
                values.update({f"{name}/{k}": v / max(meter.units, 1e-9)
                               for k, v in meter.sums.items()})
                values[f"{name}/steps"] = meter.steps
            loss = sum(m.steps * m.sums["loss"] / max(m.units, 1e-9) for m in self.tasks.values())
            values["loss"] = loss / max(self.steps, 1)
            if len(self.tasks) == 1:
                values["task"] = next(iter(self.tasks))
        values.update(lr=self.lr, grad_norm=self.grad_norm / max(self.steps, 1))
        values[f"{self.unit}_per_s"] = self.units / max(self.seconds, 1e-9)
        return values


def _task_steps(values: dict[str, Any]) -> str:
    """``"tasks vision 4 (loss 0.91), speech 3 (loss 1.20)"`` for a window of several tasks'
    steps; empty for one task's run."""
    names = [k[: -len("/steps")] for k in values if k.endswith("/steps")]
    shown = [f"{n} {values[n + '/steps']} (loss {values.get(n + '/loss', math.nan):.4f})"
             for n in names]
    return "tasks " + ", ".join(shown) if shown else ""


def _open_tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        logger.debug("tensorboard is not installed; no TensorBoard scalars")
        return None
    return SummaryWriter(str(run_dir / TENSORBOARD_NAME))


# ---------------------------------------------------------------------------------------------
# Curves


# Panels of curves.png: metrics of one family share an axis (and a scale), others get their own.
METRIC_FAMILIES = {
    "top1": "accuracy (%)", "top5": "accuracy (%)", "accuracy": "accuracy (%)",
    "bleu": "BLEU / chrF", "bleu_lc": "BLEU / chrF", "chrf": "BLEU / chrF",
    "cer": "error rate (%)", "wer": "error rate (%)",
    "ppl": "perplexity", "nll": "loss",
}  # fmt: skip
_STYLES = ["o-", "s--", "^:", "d-."]  # identical curves stay visible under each other


def plot_curves(run_dir: str | Path, metric: str | None = None) -> Path | None:
    """Plot a run's loss and evaluation metrics to ``RUN/curves.png``: a loss panel, then one
    labelled panel per metric family, the run named in the title.

    Args:
        run_dir: the run directory, holding metrics.jsonl.
        metric: unused (every evaluation metric is plotted); kept for callers that pass one.

    Returns:
        The PNG's path, or None when matplotlib is missing or there is nothing to plot.
    """
    run_dir = Path(run_dir)
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot backend state
    except ImportError:
        logger.info("matplotlib is not installed; skipping %s", CURVES_NAME)
        return None
    events = read_metrics(run_dir)
    train = [e for e in events if e.get("type") == "train" and _is_number(e.get("loss"))]
    evals = [e for e in events if e.get("type") == "eval"]
    if not train and not evals:
        logger.info("no metrics in %s to plot", run_dir)
        return None
    panels = _panels(train, evals)
    fig = Figure(figsize=(4.5 * len(panels), 3.8))
    for ax, (family, lines) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for style, (label, points) in zip(_STYLES * 4, lines.items()):
            ax.plot(*zip(*points), style, label=label, markersize=3)
        ax.set(xlabel="step", ylabel=family, title=family)
        ax.legend()
    fig.suptitle(f"run {run_dir.resolve().name}")
    fig.tight_layout()
    path = run_dir / CURVES_NAME
    fig.savefig(path, dpi=100)
    return path


def _panels(train: list[dict], evals: list[dict]) -> dict[str, dict[str, list]]:
    """{family: {line label: [(step, value), ...]}}, the loss family first."""
    panels: dict[str, dict[str, list]] = {"loss": {}}
    if train:
        panels["loss"]["train loss"] = [(e["step"], e["loss"]) for e in train]
    names = sorted({k for e in evals for k in e} - (_NOT_METRICS - {"loss"}))
    for name in names:
        points = [(e["step"], e[name]) for e in evals if _is_number(e.get(name))]
        if points:
            base = name.rsplit("/", 1)[-1]  # a multitask run's "vision/top1" is a top1
            family = "loss" if base == "loss" else METRIC_FAMILIES.get(base, name)
            label = "eval loss" if name == "loss" else f"eval {name}" if base == "loss" else name
            panels.setdefault(family, {})[label] = points
    return {family: lines for family, lines in panels.items() if lines}


_NOT_METRICS = {"type", "step", "epoch", "split", "loss"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
