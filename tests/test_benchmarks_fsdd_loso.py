"""benchmarks/fsdd_loso.py: the overrides of each run, reading a run's test transcripts, the
table of partial results, the --budget skip, and (slow) an end-to-end run on generated WAVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fsdd_loso.py"


@pytest.fixture(scope="module")
def loso():
    return load_script(SCRIPT, "benchmarks_fsdd_loso")


@pytest.fixture(scope="module")
def fsdd(tmp_path_factory) -> Path:
    """Two speakers x 10 digits x 3 clips of 8 kHz tones, a pitch per digit and a level per
    speaker, named as FSDD names its files."""
    root = tmp_path_factory.mktemp("fsdd")
    (root / "recordings").mkdir()
    t = np.arange(1600) / 8000
    for spk, level in (("ann", 0.3), ("bob", 0.05)):
        for d in range(10):
            for i in range(3):
                wave = level * np.sin(2 * np.pi * (300 + 150 * d) * t * (1 + 0.01 * i))
                sf.write(str(root / "recordings" / f"{d}_{spk}_{i}.wav"),
                         wave.astype(np.float32), 8000)  # fmt: skip
    (root / "recordings" / "README.txt").write_text("not a recording")
    return root


def test_speakers_come_from_the_file_names(loso, fsdd: Path, tmp_path: Path) -> None:
    assert loso.fsdd_speakers(fsdd) == ["ann", "bob"]
    assert loso.fsdd_speakers(fsdd / "recordings") == ["ann", "bob"]
    with pytest.raises(ValueError, match="no FSDD recordings"):
        loso.fsdd_speakers(tmp_path)


def test_a_runs_overrides_hold_the_speaker_the_budget_and_the_variant(loso, fsdd) -> None:
    args = loso.parse_args(["--steps", "400", "--data", str(fsdd), "--init-from", "runs/k",
                            "--variants", "norm+aug+init", "--set", "train.batch_size=8"])
    keys = loso.train_overrides(args, "norm+aug+init", "bob")
    assert "data.options.test_speakers=[bob]" in keys and "train.max_steps=400" in keys
    assert "schedule.warmup_steps=15" in keys  # the recipe's 150 of 4,000 steps, scaled
    assert "train.eval_every=100" in keys and "model.overrides.freq_warp=0.1" in keys
    assert "model.init_from.path=runs/k" in keys and keys[-1] == "train.batch_size=8"
    assert loso.train_overrides(args, "baseline", "ann")[-1] == "train.batch_size=8"


@pytest.mark.parametrize("argv, message", [
    (["--variants", "baseline,louder"], "unknown variant"),
    (["--variants", "init"], "need --init-from"),
    (["--steps", "0"], "at least 1"),
])  # fmt: skip
def test_bad_arguments_exit_with_status_2(loso, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        loso.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_speakers_may_be_comma_separated_and_must_exist(loso, fsdd, capsys) -> None:
    """A comma-separated list once went into test_speakers=[...] as one held-out "speaker", so
    the run held out all of them; now it is several speakers, and a name not in the data stops."""
    for given in (["bob,ann"], ["bob", "ann"]):
        args = loso.parse_args(["--data", str(fsdd), "--speakers", *given])
        assert args.speakers == ["bob", "ann"]
    with pytest.raises(SystemExit) as stop:
        loso.parse_args(["--data", str(fsdd), "--speakers", "bob,carol"])
    assert stop.value.code == 2 and "no recordings of speaker 'carol'" in capsys.readouterr().err


def test_transcripts_give_accuracy_and_confusions(loso, tmp_path: Path) -> None:
    tsv = tmp_path / "transcripts_test.tsv"
    rows = ["id\treference\thypothesis", "a\t5\t5", "b\t5\t6", "c\t9\t5", "d\t5\t6", "e\t8\t"]
    tsv.write_text("\n".join(rows) + "\n")
    found = loso.read_transcripts(tsv)
    assert found["clips"] == 5 and found["accuracy"] == pytest.approx(20.0)  # percent
    assert found["confusions"] == {"5->6": 2, "9->5": 1, "8->": 1}
    assert list(found["confusions"])[0] == "5->6"  # most frequent first


def test_table_of_partial_results(loso, tmp_path: Path) -> None:
    meta = {"steps": 10, "device": "cpu", "precision": "fp32", "seed": 0,
            "speakers": ["ann", "bob"], "variants": ["baseline", "norm", "aug"],
            "overrides": {"baseline": [], "norm": ["model.overrides.wave_norm=true"],
                          "aug": ["model.overrides.freq_warp=0.1"]}}
    stopped = "partial: training stopped at the --budget deadline, best/ tested"
    rows = [
        {"variant": "baseline", "speaker": "ann", "status": "done", "accuracy": 50.0,
         "confusions": {"5->6": 3, "9->5": 1}},
        {"variant": "baseline", "speaker": "bob", "status": "done", "accuracy": 100.0,
         "confusions": {}},
        {"variant": "norm", "speaker": "ann", "status": "done", "accuracy": 90.0,
         "confusions": {"9->5": 2}},
        {"variant": "norm", "speaker": "bob", "status": stopped, "accuracy": 70.0,
         "confusions": {"8->6": 1}},
        {"variant": "aug", "speaker": "ann", "status": "skipped: not started within --budget"},
    ]  # fmt: skip
    loso.save(tmp_path, meta, rows)
    table = (tmp_path / "loso.md").read_text()
    assert "| baseline | 50.0 | 100.0 | 75.0 | 5->6 (3), 9->5 (1) |" in table
    assert "| norm | 90.0 | 70.0* | 80.0 | 9->5 (2), 8->6 (1) |" in table
    assert "| aug | - | - | - |  |" in table
    assert f"- norm / bob: {stopped}" in table and "- aug / ann: skipped" in table
    assert "- norm: model.overrides.wave_norm=true" in table
    assert json.loads((tmp_path / "loso.json").read_text())["runs"] == rows


def test_runs_not_started_within_the_budget_are_skipped(loso, fsdd, tmp_path) -> None:
    out = tmp_path / "out"
    rows = loso.main(["--budget", "0", "--data", str(fsdd), "--out", str(out),
                      "--variants", "baseline,aug"])
    assert [(r["variant"], r["speaker"]) for r in rows] == [
        ("baseline", "ann"), ("baseline", "bob"), ("aug", "ann"), ("aug", "bob")]
    assert all(r["status"].startswith("skipped") for r in rows)
    assert not (out / "runs").exists()  # nothing was started
    assert "- aug / bob: skipped" in (out / "loso.md").read_text()


@pytest.mark.slow  # two short trainings and evaluations in child processes: ~10 s
def test_end_to_end_on_generated_wavs(loso, fsdd, tmp_path) -> None:
    out = tmp_path / "out"
    rows = loso.main(["--steps", "2", "--data", str(fsdd), "--out", str(out), "--device",
                      "cpu", "--precision", "fp32", "--variants", "norm+aug", "--parallel",
                      "2", "--set", "model.name=test_asr_transformer"])
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r["clips"] == 30 and 0 <= r["accuracy"] <= 100 for r in rows)
    for spk in ("ann", "bob"):
        assert (out / "runs" / f"norm+aug_{spk}" / "transcripts_test.tsv").is_file()
    assert "| norm+aug |" in (out / "loso.md").read_text()
