"""Masked language modelling: BERT's masking proportions, whole words, fixed evaluation masks,
the [MASK] piece, the tied head, the encoder moving into a translation model, a smoke run that
learns, fill-mask, and one sentence for each bad input. No ``zoo`` import."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tasks  # noqa: F401  (registers the tasks)
from encoders.core import core_size
from tasks.base import get_task
from tasks.masked_lm import BertConfig, translation_encoder_state
from tasks.masked_lm.data import Masker
from tasks.masked_lm.masking import IGNORE, choose_positions, mask_tokens
from tasks.masked_lm.task import MASK, MaskedLMOptions
from tasks.translation import Seq2SeqConfig
from tasks.translation.tokenizer import EOS_ID, PAD_ID
from tests.tasks import recipes

MASK_ID, LOW, VOCAB = 4, 5, 1000


def make_recipe(dataset: str = "synthetic", root: str | None = None, **options) -> SimpleNamespace:
    if dataset == "synthetic":
        options = {"num_samples": 1500, "num_eval": 100, **options}
    options = {"vocab_size": 300, **options}
    return recipes.make_recipe("masked_lm", {"dataset": dataset, "root": root, "options": options})


def make_task(tmp_path: Path | None = None, **kwargs):
    return get_task("masked_lm")(make_recipe(**kwargs), run_dir=tmp_path)


def _batch(rows: int = 400, length: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(LOW, VOCAB, (rows, length), generator=gen)
    lengths = torch.randint(5, length + 1, (rows,), generator=gen)
    maskable = torch.arange(length)[None, :] < lengths[:, None]
    return torch.where(maskable, ids, torch.full_like(ids, PAD_ID)), maskable


# -- masking ----------------------------------------------------------------------------------
def test_fifteen_percent_are_chosen_and_split_80_10_10() -> None:
    ids, maskable = _batch()
    gen = torch.Generator().manual_seed(1)
    chosen = masked = randomised = kept = 0
    for _ in range(10):
        inputs, labels = mask_tokens(ids, maskable, MASK_ID, (LOW, VOCAB), generator=gen)
        sel = labels != IGNORE
        assert not sel[~maskable].any() and torch.equal(inputs[~sel], ids[~sel])
        assert torch.equal(labels[sel], ids[sel])
        chosen += int(sel.sum())
        masked += int((inputs[sel] == MASK_ID).sum())
        randomised += int(((inputs[sel] != MASK_ID) & (inputs[sel] != ids[sel])).sum())
        kept += int((inputs[sel] == ids[sel]).sum())
    total = 10 * int(maskable.sum())
    assert chosen / total == pytest.approx(0.15, abs=0.003)
    assert masked / chosen == pytest.approx(0.8, abs=0.01)
    # a random draw equal to the original counts as kept: 1 in 995 of them
    assert randomised / chosen == pytest.approx(0.1 * (1 - 1 / (VOCAB - LOW)), abs=0.01)
    assert kept / chosen == pytest.approx(0.1, abs=0.01)


def test_short_rows_get_exactly_the_share_on_average() -> None:
    # 3 maskable tokens: rounding up to one per row would choose 33%, rounding down none
    maskable = torch.ones(20000, 3, dtype=torch.bool)
    chosen = choose_positions(maskable, 0.15, generator=torch.Generator().manual_seed(0))
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert chosen.sum(1).max() <= 1  # floor(0.45 + u) is 0 or 1


def test_whole_word_masking_chooses_every_piece_of_a_word() -> None:
    ids, maskable = _batch(rows=300, length=30)
    starts = torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) < 0.4
    starts[:, 0] = True
    chosen = choose_positions(maskable, 0.15, starts, torch.Generator().manual_seed(3))
    word = starts.long().cumsum(1)
    for row in range(len(ids)):
        for w in word[row][chosen[row]].unique():
            in_word = (word[row] == w) & maskable[row]
            assert chosen[row][in_word].all()  # no word is chosen in part
    words = (starts & maskable).sum()
    chosen_words = (chosen & starts).sum()
    assert chosen_words / words == pytest.approx(0.15, abs=0.02)


def test_evaluation_masks_are_fixed_and_training_masks_are_fresh() -> None:
    masker = Masker(MASK_ID, LOW, VOCAB, seed=0)
    rows = [list(range(LOW, LOW + 30)), list(range(LOW, LOW + 20))]
    val = [{"index": i, "ids": r, "train": False} for i, r in enumerate(rows)]
    train = [{**s, "train": True} for s in val]
    a, b = masker(val), masker(val)
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["labels"], b["labels"])
    draws = [masker(train)["labels"] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert a["input"][0, 30] == EOS_ID and a["input"][1, 21:].eq(PAD_ID).all()
    assert (a["labels"][1, 20:] == IGNORE).all()  # eos and padding are never chosen


# -- vocabulary, model, transfer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A prepared task on the built-in corpus (vocabulary trained once for the module)."""
    task = make_task(tmp_path_factory.mktemp("run"))
    return task, task.prepare()


def test_vocabulary_has_a_mask_piece_that_text_can_name(synthetic, tmp_path: Path) -> None:
    task, settings = synthetic
    assert settings["mask_id"] == MASK_ID == task.tokenizer.sp.piece_to_id(MASK)
    assert MASK_ID in task.tokenizer.encode(["We buy[MASK] cats"])[0]
    assert (task.run_dir / "spm.model").is_file()
    # a second task given the saved model reuses it (what a translation fine-tune also does)
    other = make_task(tokenizer=str(task.run_dir / "spm.model"))
    other.prepare()
    assert other.tokenizer.model_proto == task.tokenizer.model_proto


def test_the_head_is_tied_to_the_embeddings() -> None:
    model = BertConfig(vocab_size=50, core=core_size("test")).build()
    assert model.head.decoder.weight is model.adapter.embed.weight
    logits = model(torch.randint(5, 50, (2, 6)))
    assert logits.shape == (2, 6, 50)
    select = torch.zeros(2, 6, dtype=torch.bool)
    select[0, 2] = select[1, 4] = True
    torch.testing.assert_close(model.eval()(torch.ones(2, 6).long() * 7, select),
                               model(torch.ones(2, 6).long() * 7)[select])


def test_the_encoder_moves_into_mt_transformer_mini() -> None:
    # bert_mini and mt_transformer_mini as registered (zoo/models): the same "mini" core
    torch.manual_seed(0)
    mlm = BertConfig(vocab_size=300, core=core_size("mini", dropout=0.1)).build().eval()
    mt = Seq2SeqConfig(vocab_size=300, core=core_size("mini", dropout=0.1),
                       decoder_depth=3).build().eval()
    state = translation_encoder_state(mlm.state_dict())
    assert {k.removeprefix("src_") for k in state} == {
        k for k in mlm.state_dict() if not k.startswith("head.")
    }
    missing, unexpected = mt.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.startswith(("decoder.", "tgt_", "head.")) for k in missing)
    # the tied target embedding and output projection start from the same weights
    assert torch.equal(mt.head.weight, mlm.adapter.embed.weight)
    ids = torch.randint(5, 300, (2, 9))
    ids[1, 6:] = PAD_ID
    with torch.no_grad():
        torch.testing.assert_close(mt.encode(ids)[0], mlm.forward_features(ids)[0])


# -- a smoke run, fill-mask ---------------------------------------------------------------------
def test_training_lowers_the_loss_and_fills_masks(synthetic, tmp_path: Path) -> None:
    task, settings = synthetic
    torch.manual_seed(0)
    model = BertConfig(core=core_size("test"), **settings).build()
    splits = task.datasets()
    val = task.loader(splits["val"], 100)
    before = task.evaluate(model, val)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for batch in task.batches(splits["train"], 32, True, 0)[:80]:
        loss, _ = task.loss(model, task.collate([splits["train"][i] for i in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model, val)
    assert after["loss"] < before["loss"] - 1.5 and after["acc"] > before["acc"] + 20
    assert task.evaluate(model, val) == after  # fixed masks
    found = task.fill_mask(model, ["We buy twenty-one cats in the [MASK].", "[MASK] see [MASK]"],
                           top_k=3)
    assert [len(masks) for masks in found] == [1, 2]
    probs = [p for _, p in found[0][0]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    lines = task.predict(model, ["We buy twenty-one cats in the [MASK]."], top_k=2)
    assert lines[0].endswith("[MASK].") and lines[1].startswith("  [MASK] 1:")
    assert "[MASK]" not in lines[2]
    # what the CLI's saved model carries: the vocabulary
    meta = task.save_extra(tmp_path)
    fresh = make_task()
    fresh.load_extra(tmp_path, meta)
    assert fresh.fill_mask(model, ["We buy twenty-one cats in the [MASK]."], 3)[0] == found[0]


# -- bad input --------------------------------------------------------------------------------
def test_text_without_mask_is_refused(synthetic) -> None:
    task, settings = synthetic
    model = BertConfig(core=core_size("test"), **settings).build()
    with pytest.raises(ValueError, match=r"'a man rides a bike' has no \[MASK\]"):
        task.fill_mask(model, ["a man rides a bike"])


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"])
def test_empty_corpus_is_named(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "train.en").write_bytes(content)
    task = make_task(dataset="text", root=str(tmp_path), train_files=["train.en"])
    with pytest.raises(ValueError, match=r"train\.en holds no text"):
        task.prepare()


def test_non_utf8_corpus_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.en").write_bytes(b"a dog runs\nna\xefve\n")
    task = make_task(dataset="text", root=str(tmp_path), train_files=["train.en"])
    with pytest.raises(ValueError, match=r"train\.en, line 2: not valid UTF-8"):
        task.prepare()


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_mask_prob_outside_0_1_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="mask_prob must lie strictly between 0 and 1"):
        make_task(mask_prob=value)


def test_unknown_option_suggests_the_nearest() -> None:
    with pytest.raises(ValueError, match="did you mean 'whole_word'"):
        MaskedLMOptions.from_dict({"whole_words": True})
    assert MaskedLMOptions.from_dict({"train_files": "a.txt"}).train_files == ("a.txt",)


def test_text_files_train_with_whole_word_masking(tmp_path: Path) -> None:
    lines = [f"a dog number {i} runs across the wide green field" for i in range(200)]
    (tmp_path / "train.en").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "train.de").write_text("ein Hund läuft über das Feld\n" * 50, encoding="utf-8")
    task = make_task(dataset="text", root=str(tmp_path), train_files=["train.en"],
                     vocab_files=["train.en", "train.de"], whole_word=True)
    settings = task.prepare()
    assert "▁Hund" in [task.tokenizer.sp.id_to_piece(i) for i in range(settings["vocab_size"])]
    splits = task.datasets()
    assert len(splits["val"]) == 20 and len(splits["train"]) == 180
    batch = task.collate([splits["train"][i] for i in range(64)])
    assert batch["input"].shape == batch["labels"].shape and task.count(batch) > 0
