"""curves.png: a loss panel and one labelled panel per metric family."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.records import _panels, plot_curves


def _write(run: Path, events: list[dict]) -> None:
    run.mkdir()
    lines = "".join(json.dumps(e) + "\n" for e in events)
    (run / "metrics.jsonl").write_text(lines, encoding="utf-8")


EVENTS = [
    {"type": "train", "step": 10, "loss": 3.0},
    {"type": "train", "step": 20, "loss": 2.0},
    {"type": "eval", "step": 20, "split": "val", "loss": 2.5, "ppl": 9.0, "bleu": 10.0,
     "bleu_lc": 10.0, "top1": 50.0},
]  # fmt: skip


def test_metrics_of_one_family_share_a_panel_and_others_get_their_own() -> None:
    panels = _panels(EVENTS[:2], EVENTS[2:])
    assert list(panels) == ["loss", "BLEU / chrF", "perplexity", "accuracy (%)"]
    assert set(panels["loss"]) == {"train loss", "eval loss"}
    assert set(panels["BLEU / chrF"]) == {"bleu", "bleu_lc"}
    assert panels["perplexity"] == {"ppl": [(20, 9.0)]}


def test_plot_names_the_run_and_labels_every_panel(tmp_path: Path) -> None:
    _write(tmp_path / "myrun", EVENTS)
    path = plot_curves(tmp_path / "myrun")
    assert path == tmp_path / "myrun" / "curves.png" and path.stat().st_size > 0


def test_nothing_to_plot_writes_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "empty", [{"type": "config", "step": 0}])
    assert plot_curves(tmp_path / "empty") is None


def test_a_multitask_runs_metrics_join_their_familys_panel() -> None:
    evals = [{"type": "eval", "step": 5, "vision/top1": 50.0, "speech/accuracy": 50.0,
              "vision/loss": 1.0, "speech/cer": 20.0, "score": 0.8}]
    panels = _panels(EVENTS[:2], evals)
    assert list(panels) == ["loss", "score", "accuracy (%)", "error rate (%)"]
    assert set(panels["loss"]) == {"train loss", "eval vision/loss"}
    assert set(panels["accuracy (%)"]) == {"vision/top1", "speech/accuracy"}
