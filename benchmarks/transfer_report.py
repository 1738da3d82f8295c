"""The transfer matrix's outputs: LR selection on validation, and the Markdown table, JSON and
heatmap that benchmarks/transfer.py writes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

SATURATE = 10.0  # points of gain (or loss) over the random core at which the colour saturates


def select(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (target, source, regime): the LR with the best mean validation metric over
    seeds, and the test metric of that LR (mean and std over seeds, ddof 0)."""
    groups: dict[tuple, dict[float, list[dict[str, Any]]]] = {}
    for run in cells:
        key = (run["target"], run["source"], run["regime"])
        groups.setdefault(key, {}).setdefault(run["lr"], []).append(run)
    table = []
    for (target, source, regime), by_lr in groups.items():
        val = {lr: statistics.fmean(_finite(r["val"]) for r in runs) for lr, runs in by_lr.items()}
        lr = max(val, key=val.get)
        tests = [_finite(r["test"]) for r in by_lr[lr]]
        table.append({
            "target": target, "source": source, "regime": regime, "lr": lr, "val": val[lr],
            "val_by_lr": val, "test": statistics.fmean(tests), "test_std": statistics.pstdev(tests),
            "test_by_seed": {r["seed"]: r["test"] for r in by_lr[lr]},
        })  # fmt: skip
    return table


def _finite(value: Any) -> float:
    """A metric that a diverged run reports as None or NaN counts as the worst."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("-inf")
    return value if value == value else float("-inf")


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['test']:.1f} ± {entry['test_std']:.1f} (lr {entry['lr']:g})"


def markdown(protocol: dict[str, Any], targets: dict, runs: dict[str, str],
             sources: list[dict[str, Any]], table: list[dict[str, Any]],
             timing: dict[str, dict[str, Any]], seconds: float) -> str:
    """The report: the matrix, the sources, the step times and the command."""
    names = protocol["sources"]
    lines = [
        "# Cross-modal transfer matrix", "",
        f"Command: `{protocol['command']}`  ",
        f"Device {protocol['device']}; source steps {protocol['source_steps']}, target steps "
        f"{protocol['target_steps']}, LRs {protocol['lrs']}, seeds {protocol['seeds']}"
        + (f", data capped at {protocol['max_samples']} samples" if protocol["max_samples"]
           else "") + f"; wall time {seconds / 60:.1f} min.", "",
        "Test metric of the LR chosen on validation (mean ± std over seeds); rows: target and "
        "regime (fpt: the core frozen but its LayerNorms; full: everything trains); columns: "
        "where the core came from (random: the target's own fresh init).", "",
        "| target | regime | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]  # fmt: skip
    index = {(e["target"], e["source"], e["regime"]): e for e in table}
    for tname in protocol["targets"]:
        for regime in protocol["regimes"]:
            row = [_cell(index.get((tname, s, regime))) for s in names]
            lines.append(f"| {targets[tname].label} | {regime} | " + " | ".join(row) + " |")
    lines += ["", "Sources (val metric at the end of their training):", "",
              "| source | run | val | train time |", "|---|---|---|---|"]
    trained = {r["name"]: r for r in sources}
    for name, run in runs.items():
        r = trained.get(name)
        val = "reused" if r is None else f"{r['val']:.4g}"
        lines.append(f"| {name} | {run} | {val} | {'-' if r is None else r['seconds']} s |")
    if timing:
        regimes = protocol["regimes"]
        lines += ["", "Median training step (forward, backward, update), random core, "
                  "in one process one run at a time:", "",
                  "| target | " + " | ".join(f"{r} ms" for r in regimes)
                  + " | " + " | ".join(f"{r} trainable" for r in regimes) + " |",
                  "|---|" + "---|" * (2 * len(regimes))]
        for tname, by_regime in timing.items():
            ms = [_ms(by_regime.get(r, {}).get("step_ms")) for r in regimes]
            params = [f"{by_regime.get(r, {}).get('trainable_params') or 0:,}" for r in regimes]
            lines.append(f"| {tname} | " + " | ".join(ms + params) + " |")
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def heatmap(path: Path, protocol: dict[str, Any], targets: dict,
            table: list[dict[str, Any]]) -> None:
    """One panel per regime: targets x sources, annotated with the test metric and coloured by
    its gain over the random core in points (%, BLEU), saturating at +-SATURATE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {(e["target"], e["source"], e["regime"]): e["test"] for e in table}
    names, rows, regimes = protocol["sources"], protocol["targets"], protocol["regimes"]
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 1 + 0.9 * len(rows)),
                             squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        grid = []
        for t in rows:
            base = index.get((t, "random", regime))
            values = [index.get((t, s, regime)) for s in names]
            grid.append([float("nan") if v is None or base is None
                         else (v - base) / SATURATE for v in values])
        ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for i, t in enumerate(rows):
            for j, s in enumerate(names):
                value, shade = index.get((t, s, regime)), grid[i][j]
                text = "-" if value is None else f"{value:.1f}"
                dark = shade == shade and abs(shade) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(rows)), [targets[t].label for t in rows], fontsize=8)
        ax.set_title(f"{regime}: test metric\n(colour: gain over random, ±{SATURATE:g})",
                     fontsize=9)
        ax.set_xlabel("source core")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, protocol: dict[str, Any], targets: dict, runs: dict[str, str],
                 sources: list[dict[str, Any]], cells: list[dict[str, Any]],
                 timing: dict[str, dict[str, Any]], seconds: float) -> None:
    """Write transfer.md, transfer.json and transfer.png into ``out``."""
    table = select(cells)
    text = markdown(protocol, targets, runs, sources, table, timing, seconds)
    (out / "transfer.md").write_text(text, encoding="utf-8")
    record = {"protocol": protocol, "wall_s": round(seconds, 1), "sources": runs,
              "source_runs": sources, "matrix": table, "cells": cells, "timing": timing}
    (out / "transfer.json").write_text(json.dumps(record, indent=1, default=str) + "\n",
                                       encoding="utf-8")
    heatmap(out / "transfer.png", protocol, targets, table)
