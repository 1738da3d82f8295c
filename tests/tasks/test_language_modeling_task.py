"""The language-modelling task without ``zoo``: a tiny GPT learns the built-in corpus in a few
seconds; splits and file layouts; metrics; generation through the task (streaming, stop strings,
prompts); the vocabulary saved with the model and kept by a resumed run; the errors."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from encoders.core import core_size
from tasks.base import get_task
from tasks.language_modeling import GPT, GPTConfig
from tasks.language_modeling.sampling import SamplingOptions


def _task(run_dir: Path | None = None, **data) -> object:
    options = {"num_sentences": 600, "block_size": 32, **data.pop("options", {})}
    fields = dict(dataset="synthetic", root=None, val_fraction=0.1, max_samples=None,
                  src_lang=None, vocab_size=None, options=options)  # fmt: skip
    recipe = SimpleNamespace(
        data=SimpleNamespace(**{**fields, **data}),
        train=SimpleNamespace(seed=0, label_smoothing=0.0),
        eval=SimpleNamespace(beam_size=1),
    )
    return get_task("language_modeling")(recipe, run_dir=run_dir)


def _model(task, max_len: int = 64) -> GPT:
    torch.manual_seed(0)
    overrides = task.prepare()
    return GPTConfig(core=core_size("test"), max_len=max_len, **overrides).build()


def _val_loss(task, model, splits) -> float:
    return task.evaluate(model, task.loader(splits["val"], 64))["loss"]


def test_a_tiny_gpt_learns_the_grammar_corpus_in_a_few_seconds() -> None:
    task = _task()
    model = _model(task)
    splits = task.datasets()
    before = _val_loss(task, model, splits)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = task.batches(splits["train"], 16, shuffle=True, epoch_seed=0)
    model.train()
    for indices in batches[:120]:
        loss, logs = task.loss(model, task.collate([splits["train"][i] for i in indices]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _val_loss(task, model, splits)
    assert before > 3.0 and after < 0.6 * before, (before, after)
    assert model.training  # evaluate puts the mode back


def test_metrics_are_loss_perplexity_and_bits_per_character() -> None:
    task = _task()
    model = _model(task).eval()
    splits = task.datasets()
    metrics = task.evaluate(model, task.loader(splits["val"], 64))
    assert metrics["ppl"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / math.log(2))
    batch = task.collate([splits["val"][i] for i in range(3)])
    assert task.count(batch) == 3 * 32 and batch["input"].shape == (3, 32)


def test_sentencepiece_lines_from_a_directory_of_language_files(tmp_path: Path) -> None:
    sentences = "A dog runs on the grass.\nTwo men play football in a park.\n" * 40
    (tmp_path / "train.en").write_text(sentences)
    (tmp_path / "val.en").write_text("A man runs in a park.\n")
    task = _task(dataset="text", root=str(tmp_path), options={
        "mode": "lines", "tokenizer": "sentencepiece", "src_lang": "en", "vocab_size": 60})
    model = _model(task).eval()
    splits = task.datasets()
    assert (len(splits["train"]), len(splits["val"])) == (80, 1)
    first = splits["val"][0].tolist()
    assert first[0] == 1 and first[-1] == 2  # bos ... eos
    assert "bpc" not in task.evaluate(model, task.loader(splits["val"], 8))


def test_a_single_file_is_split_by_its_last_fraction(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 100)
    task = _task(dataset="text", root=str(path), options={"block_size": 8})
    task.prepare()
    splits = task.datasets()
    assert len(splits["train"]) == 900 - 8 and len(splits["val"]) == 100 // 8 - 1 + 1


def test_generation_streams_what_it_returns_and_stops_before_a_stop_string() -> None:
    task = _task()
    model = _model(task)
    pieces: list[str] = []
    greedy = SamplingOptions(max_new_tokens=30, greedy=True)
    text = task.generate(model, "The ", greedy, on_text=lambda i, t: pieces.append(t))[0]
    assert "".join(pieces) == text and len(text) == 30 and model.training
    stop = text[10:12]
    cut = task.generate(model, "The ", SamplingOptions(max_new_tokens=30, greedy=True,
                                                        stop=(stop,)))[0]  # fmt: skip
    assert cut == text[: text.index(stop)]
    seeded = SamplingOptions(max_new_tokens=20, seed=4, num_samples=2)
    assert task.generate(model, "The ", seeded) == task.generate(model, "The ", seeded)
    assert task.predict(model, ["The "], max_new_tokens=30, greedy=True) == [text]


def test_prompts_outside_the_vocabulary_are_named_and_an_empty_one_starts_a_line() -> None:
    task = _task()
    _model(task)
    with pytest.raises(ValueError, match="character '€' in the prompt"):
        task.prompt_ids("The €")
    assert task.prompt_ids("") == [task.vocab.newline_id()]
    lines = _task(options={"mode": "lines"})
    lines.prepare()
    assert lines.prompt_ids("") == [1] and lines.prompt_ids("The")[0] == 1  # bos first


def test_the_vocabulary_is_saved_with_the_model_and_kept_by_a_resumed_run(tmp_path) -> None:
    task = _task(run_dir=tmp_path)
    model = _model(task)
    saved = tmp_path / "saved"
    saved.mkdir()
    meta = task.save_extra(saved)
    loaded = _task()
    loaded.load_extra(saved, meta)
    assert loaded.vocab == task.vocab and loaded.mode == "stream" and loaded.trained_block == 32
    options = SamplingOptions(max_new_tokens=10, greedy=True)
    assert loaded.generate(model, "A ", options) == task.generate(model, "A ", options)
    resumed = _task(run_dir=tmp_path, options={"num_sentences": 5})  # other text: same vocab
    resumed.prepare()
    assert resumed.vocab == task.vocab
    with pytest.raises(ValueError, match="no language-model vocabulary"):
        _task().load_extra(saved, {})


def test_a_block_longer_than_the_model_positions_is_named() -> None:
    task = _task(options={"block_size": 48})
    model = _model(task, max_len=32)
    splits = task.datasets()
    batch = task.collate([splits["train"][0]])
    with pytest.raises(ValueError, match="block_size 48 is longer than the 32 positions"):
        task.loss(model, batch)


@pytest.mark.parametrize(
    "options, message",
    [({"blok_size": 8}, "unknown language_modeling option 'data.options.blok_size'; did you "
                        "mean 'block_size'"),
     ({"mode": "words"}, "data.options.mode must be one of"),
     ({"block_size": 0}, "data.options.block_size must be a positive integer"),
     ({"eval_blocks": 2.5}, "data.options.eval_blocks must be a positive integer")],
)  # fmt: skip
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _task(options=options)


def test_bad_text_gets_one_sentence(tmp_path: Path) -> None:
    empty, tiny = tmp_path / "empty.txt", tmp_path / "tiny.txt"
    empty.write_text("")
    tiny.write_text("abcdefghij" * 30)
    with pytest.raises(ValueError, match="empty.txt is empty"):
        _task(dataset="text", root=str(empty)).prepare()
    task = _task(dataset="text", root=str(tiny))
    task.prepare()
    with pytest.raises(ValueError, match="the val text has 30 tokens, too few for one block"):
        task.datasets()
    with pytest.raises(ValueError, match="unknown language_modeling dataset 'wiki'"):
        _task(dataset="wiki").prepare()
