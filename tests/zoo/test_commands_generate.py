"""``zoo generate`` on a tiny trained language model: the same seed prints the same text,
greedy, several samples, stop strings; bad input gets one sentence and exit 2. Also the LM
recipes load and fit their models, and ``zoo eval`` reports bits per character."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from tasks.base import get_task
from zoo.cli import main
from zoo.commands_generate import SEPARATOR
from zoo.config import load_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.overrides.depth=1",
    "data.options.num_sentences=300",
    "data.options.block_size=32",
    "train.max_steps=3",
    "train.batch_size=8",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "schedule.warmup_steps=0",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "run"
    assert main(["train", str(ROOT / "configs/demo/lm.yaml"), "--out", str(out), *TINY]) == 0
    return out


def _generate(run: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["generate", str(run), *args]) == 0
    return capsys.readouterr().out


def test_the_same_seed_prints_the_same_text(run: Path, capsys) -> None:
    args = ["The ", "--max-new-tokens", "40", "--temperature", "0.8", "--top-k", "50"]
    first = _generate(run, capsys, *args, "--seed", "1")
    assert first.startswith("The ") and len(first) == len("The ") + 40 + 1  # + newline
    assert _generate(run, capsys, *args, "--seed", "1") == first
    assert _generate(run, capsys, *args, "--seed", "2") != first
    only = _generate(run, capsys, *args, "--seed", "1", "--continuation-only")
    assert only == first[len("The ") :]


def test_greedy_samples_and_stop_strings(run: Path, capsys) -> None:
    greedy = _generate(run, capsys, "A", "--greedy", "--max-new-tokens", "30")
    assert _generate(run, capsys, "A", "--temperature", "0", "--max-new-tokens", "30") == greedy
    stop = greedy[5:7]
    cut = _generate(run, capsys, "A", "--greedy", "--max-new-tokens", "30", "--stop", stop)
    assert cut == greedy[: greedy.index(stop, 1)] + "\n"
    out = _generate(run, capsys, "A", "--num-samples", "3", "--top-p", "0.9", "--seed", "0",
                    "--max-new-tokens", "10")  # fmt: skip
    samples = out.split(SEPARATOR + "\n")
    assert len(samples) == 3 and all(s.startswith("A") and s.endswith("\n") for s in samples)


@pytest.mark.parametrize(
    "args, words",
    [(["Thé"], ["character 'é' in the prompt", "vocabulary"]),
     (["The", "--top-p", "1.5"], ["top_p must be in (0, 1], got 1.5"]),
     (["The", "--top-k", "0"], ["top_k must be at least 1"])],
)  # fmt: skip
def test_bad_input_gets_one_sentence(run: Path, capsys, args: list[str], words) -> None:
    assert main(["generate", str(run), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed before the error
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert all(w in err[0] for w in words), err[0]


def test_a_model_of_another_task_is_refused(tmp_path: Path, capsys) -> None:
    saved = zoo.save_pretrained(
        zoo.create_model("test_vit"), tmp_path / "vit", extra={"task": "classification"}
    )
    assert main(["generate", str(saved), "x"]) == 2
    assert "classification model, not a language_modeling model" in capsys.readouterr().err


def test_eval_reports_loss_perplexity_and_bits_per_character(run: Path, capsys) -> None:
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert all(f"  {key}: " in out for key in ("loss", "ppl", "bpc"))


LM_RECIPES = [ROOT / "configs/demo/lm.yaml", *sorted((ROOT / "configs/lm").glob("*.yaml"))]


@pytest.mark.parametrize("path", LM_RECIPES, ids=lambda p: p.name)
def test_lm_recipes_load_and_their_blocks_fit_their_models(path: Path) -> None:
    recipe = load_recipe(path)
    task = get_task(recipe.task)(recipe)  # data options are checked here
    cfg = zoo.get_config(recipe.model.name, **recipe.model.overrides)
    assert task.block_size <= cfg.max_len
