"""The 74-minute Kathleen recipe loads and builds its model, and a run on a corpus of several
manifests evaluates its extra held-out splits (``zoo eval RUN --split test_b``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

import zoo
from tasks.base import get_task
from zoo.cli import main
from zoo.config import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "speech" / "asr_conformer_ctc_kathleen_74min.yaml"
FILES = ["transcripts.tsv", "transcripts_b.tsv", "transcripts_takes.tsv"]


def test_the_74_minute_recipe_loads_and_builds_its_model():
    recipe = load_recipe(RECIPE)
    assert list(recipe.data.options.manifest) == FILES and recipe.data.options.test_fraction == 0.1
    get_task(recipe.task)(recipe)  # data options are checked here
    # from scratch, as the measured run: freq_warp builds under the registry's meta-device check
    model = zoo.create_model(recipe.model.name, **recipe.model.overrides)
    assert model.adapter.warp.centres.device.type == "cpu"


def write_corpus(root: Path) -> None:
    """12 a-prompts, 10 b-prompts and two earlier takes of every second one."""
    header = "utt_id\tpath\ttext"
    a = [(f"arctic_a{i:04d}", f"alpha {i} " + "ab" * (i % 4 + 1)) for i in range(12)]
    b = [(f"arctic_b{i:04d}", f"beta {i} " + "ba" * (i % 3 + 1)) for i in range(10)]
    takes = [(f"{u}_take{k}", t) for u, t in a[::2] + b[::2] for k in (2, 3)]
    rng = np.random.default_rng(0)
    (root / "wavs").mkdir(parents=True)
    for name, rows in zip(FILES, (a, b, takes)):
        for utt, _ in rows:
            sf.write(str(root / "wavs" / f"{utt}.wav"),
                     (0.1 * rng.standard_normal(3200)).astype(np.float32), 16000)
        lines = [header] + [f"{u}\twavs/{u}.wav\t{t}" for u, t in rows]
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_run_evaluates_each_files_held_out_split(tmp_path, capsys):
    write_corpus(tmp_path / "data")
    recipe = {
        "task": "speech_recognition",
        "model": {"name": "test_asr_transformer"},
        "data": {"dataset": "kathleen_arctic", "root": str(tmp_path / "data"),
                 "val_fraction": 0.2,
                 "options": {"test_fraction": 0.25, "manifest": FILES}},
        "tokenizer": {"characters": "abeghlpt 0123456789"},  # held-out digits too
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "eval_every": 2},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(run)]) == 0
    capsys.readouterr()
    for split in ("test", "test_b", "test_takes"):
        assert main(["eval", str(run), "--split", split, "--device", "cpu"]) == 0
        assert f"on {split}:" in capsys.readouterr().out
        rows = (run / f"transcripts_{split}.tsv").read_text("utf-8").splitlines()[1:]
        ids = [r.split("\t")[0] for r in rows]
        assert ids and all(("_take" in i) == (split == "test_takes") for i in ids)
        assert all(i.startswith("arctic_b") for i in ids) or split != "test_b"
    assert main(["eval", str(run), "--split", "test_c", "--device", "cpu"]) == 2
    assert "split 'test_c' does not exist" in capsys.readouterr().err
