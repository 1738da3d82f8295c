"""Smoke test of benchmarks/gpu.py (the GPU figures script): its CPU run on the tiny test models
must finish and write every row, so that the script does not rot between GPU runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
SMOKE_MODELS = {"test_vit", "test_mt_transformer", "test_asr_transformer"}
TIMED_ROWS = ("train_fp32", "train_bf16", "infer_bf16")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, object]:
    """The script's in-process smoke run: its returned results, its JSON file, the module."""
    module = load_script(SCRIPT, "benchmarks_gpu")
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    results = module.main(["--smoke", "--out", str(out)])
    return results, json.loads(out.read_text()), module


def _failures(node: object, path: str = "") -> list[str]:
    """Every "error" or "skipped" entry anywhere in the results."""
    if not isinstance(node, dict):
        return []
    found = [f"{path}.{k}: {node[k]}" for k in ("error", "skipped") if k in node]
    return found + [f for k, v in node.items() for f in _failures(v, f"{path}.{k}")]


def test_smoke_writes_every_model_without_errors(smoke) -> None:
    results, written, _ = smoke
    assert written == json.loads(json.dumps(results))
    assert written["meta"]["smoke"] is True
    assert set(written["models"]) == SMOKE_MODELS
    assert _failures(written) == []


@pytest.mark.parametrize("name", sorted(SMOKE_MODELS))
def test_smoke_rows_are_positive(smoke, name: str) -> None:
    record = smoke[1]["models"][name]
    unit = next(iter(record["units"]))
    assert record["params"] > 0
    for row in TIMED_ROWS:
        assert record[row]["median_s"] > 0 and record[row][f"{unit}_per_s"] > 0
        assert record[row]["tflops"] > 0
        assert "mfu" not in record[row]  # no peak on the CPU
    assert record["flops"]["train"] > record["flops"]["forward"] > 0
    assert isinstance(record["flops"]["sdpa_kernels"], dict)
    assert record["flash_check"]["ok"] in (True, False)


def test_smoke_extra_rows(smoke) -> None:
    models = smoke[1]["models"]
    assert models["test_vit"]["sdpa_backends"]["math_over_flash"] > 0
    share = models["test_asr_transformer"]["fbank_input"]["frontend_share_train_bf16"]
    assert 0 <= share <= 1


def test_smoke_table_has_a_row_per_model(smoke) -> None:
    results, _, module = smoke
    table = module.table(results)
    for name in SMOKE_MODELS:
        assert f"| {name} | 2 |" in table
