"""zoo list and zoo info."""


from __future__ import annotations

import json

import pytest

import zoo
from tests.zoo.test_registry import FAMILIES
from zoo.cli import main


def test_cli_list_prints_every_family(capsys: pytest.CaptureFixture) -> None:
    # the test_* variants, one per family: listing builds each model to count its parameters
    assert main(["list", "test_*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "task", "modality", "params"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == set(zoo.list_models("test_*")) and len(rows) == len(FAMILIES)
    assert {(task, modality) for task, modality, _ in rows.values()} == {
        (task, modality) for task, (modality, _) in FAMILIES.items()
    }
    shown = rows["test_vit"][2]  # e.g. "0.11M" or "52.3K"
    count = float(shown[:-1]) * {"K": 1e3, "M": 1e6}[shown[-1]]
    assert count == pytest.approx(zoo.model_info("test_vit")["num_params"], rel=0.05)


def test_cli_list_filters(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "*_tiny*", "--task", "translation"]) == 0
    out = capsys.readouterr().out
    assert "mt_transformer_tiny" in out and "vit_" not in out and "asr_" not in out
    assert main(["list", "*_tiny*", "--modality", "speech"]) == 0
    out = capsys.readouterr().out
    assert "asr_conformer_ctc_tiny" in out and "mt_" not in out and "vit_" not in out
    assert main(["list", "nothing*"]) == 1
    assert "no model matches 'nothing*'" in capsys.readouterr().out


def test_cli_info_prints_config_and_parameter_count(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "test_vit"]) == 0
    out = capsys.readouterr().out
    info = zoo.model_info("test_vit")
    assert f"{info['num_params']:,} parameters" in out
    assert "test_vit: classification / vision" in out
    config = json.loads(out[out.index("{") :])
    assert config == json.loads(json.dumps(info["config"]))


def test_cli_info_of_an_unknown_model_is_one_line_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "test_vitt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'test_vitt'") and "test_vit" in err
    assert "Traceback" not in err
