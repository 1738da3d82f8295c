"""Translation task: tokenizer, data, token batches, loss, decoding, sacreBLEU, a smoke run."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import get_task
from tasks.translation import data as D
from tasks.translation.data import ParallelDataset, collate, read_parallel, token_batches
from tasks.translation.decoding import beam_search, greedy_search, max_lengths
from tasks.translation.metrics import corpus_scores, signatures
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from tests.tasks.recipes import make_recipe as task_recipe
from tests.tasks.recipes import tiny_model


def make_recipe(vocab_size: int = 300, **data):
    synthetic = data.get("dataset", "synthetic") == "synthetic"
    sizes = {"num_samples": 2000, "num_eval": 100} if synthetic else {}
    section = {"dataset": "synthetic", **data, "options": {**sizes, **data.get("options", {})}}
    return task_recipe(
        "translation",
        section,
        tokenizer={"vocab_size": vocab_size},
        train={"max_steps": 200, "batch_size": 1024, "label_smoothing": 0.1},
        decode={"beam_size": 1},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The task and a test model trained for 200 steps on the built-in corpus (module-scoped:
    the tests share one training run)."""
    torch.manual_seed(0)
    task = get_task("translation")(make_recipe(), run_dir=tmp_path_factory.mktemp("run"))
    model = tiny_model("translation", **task.prepare())
    splits = task.datasets()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    step, epoch = 0, 0
    model.train()
    while step < 200:
        for batch in task.batches(splits["train"], 1024, shuffle=True, epoch_seed=epoch):
            loss, _ = task.loss(model, task.collate([splits["train"][i] for i in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == 200:
                break
        epoch += 1
    return task, model.eval(), splits


# -- tokenizer ----------------------------------------------------------------------------------
def test_tokenizer_round_trip(tmp_path):
    src, tgt = D.synthetic_corpus(0, 500, 20)["train"]
    tok = Tokenizer.train(src + tgt, vocab_size=200)
    assert len(tok) <= 200
    assert (tok.sp.pad_id(), tok.sp.bos_id(), tok.sp.eos_id(), tok.sp.unk_id()) == (
        PAD_ID,
        BOS_ID,
        EOS_ID,
        UNK_ID,
    )
    texts = [src[0], tgt[0], "Wir kaufen zwölf Äpfel am Bahnhof."]
    ids = tok.encode(texts)
    assert all(i > UNK_ID for seq in ids for i in seq)
    assert tok.decode(ids) == texts
    assert tok.decode([[BOS_ID, *ids[0], EOS_ID, PAD_ID]]) == texts[:1]  # specials dropped
    again = Tokenizer.load(tok.save(tmp_path / "spm.model"))
    assert again.encode(texts) == ids
    assert Tokenizer.train(src + tgt, vocab_size=200).model_proto == tok.model_proto  # seedless


# -- data ---------------------------------------------------------------------------------------
def test_synthetic_corpus():
    assert D.number_en(321) == "three hundred twenty-one"
    assert D.number_de(321) == "dreihunderteinundzwanzig"  # units before tens
    assert [D.number_de(n) for n in (101, 110, 17, 30, 999)] == [
        "einhunderteins",
        "einhundertzehn",
        "siebzehn",
        "dreißig",
        "neunhundertneunundneunzig",
    ]
    a, b = D.synthetic_corpus(3, 200, 50), D.synthetic_corpus(3, 200, 50)
    assert a == b and a != D.synthetic_corpus(4, 200, 50)
    assert {k: len(v[0]) for k, v in a.items()} == {"train": 200, "val": 50, "test": 50}
    assert not set(a["train"][0]) & (set(a["val"][0]) | set(a["test"][0]))


@pytest.mark.parametrize("shuffle", [True, False])
def test_token_batches_respect_budget_and_cover_once(shuffle):
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 60, (500,), generator=gen).tolist()
    batches = token_batches(sizes, 256, shuffle=shuffle, seed=7)
    assert all(len(b) * max(sizes[i] for i in b) <= 256 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert batches == token_batches(sizes, 256, shuffle=shuffle, seed=7)  # pure function
    if shuffle:
        assert batches != token_batches(sizes, 256, shuffle=True, seed=8)
    else:
        flat = [sizes[i] for b in batches for i in b]
        assert flat == sorted(flat)
    with pytest.raises(ValueError, match="does not fit a batch of 50 tokens"):
        token_batches(sizes, 50, shuffle=shuffle, seed=0)


def test_task_batches_and_collate():
    task = get_task("translation")(make_recipe())
    ds = ParallelDataset([[5, 6], [7], [8, 9, 10]], [[11], [12, 13, 14], [15]], ["a", "b", "c"])
    assert ds.sizes == [3, 4, 4]
    batches = task.batches(ds, 8, shuffle=False, epoch_seed=0)
    assert batches == [[0, 1], [2]]
    batch = task.collate([ds[i] for i in batches[0]])
    assert batch["src"].tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert batch["src_lengths"].tolist() == [3, 2]
    assert batch["tgt_in"].tolist() == [[BOS_ID, 11, PAD_ID, PAD_ID], [BOS_ID, 12, 13, 14]]
    assert batch["tgt_out"].tolist() == [[11, EOS_ID, PAD_ID, PAD_ID], [12, 13, 14, EOS_ID]]
    assert batch["ref"] == ["a", "b"] and task.count(batch) == 6
    sentences = get_task("translation")(make_recipe(options={"batch_by": "sentences"}))
    assert sentences.batches(ds, 2, shuffle=False, epoch_seed=0) == [[0, 1], [2]]


def test_loss_is_label_smoothed_cross_entropy():
    task = get_task("translation")(make_recipe())
    model = tiny_model("translation", vocab_size=30)
    ds = ParallelDataset([[5, 6, 7], [8]], [[9, 10], [11, 12, 13, 14]], ["", ""])
    batch = collate([ds[0], ds[1]])
    loss, logs = task.loss(model.eval(), batch)
    logits = model(batch["src"], batch["tgt_in"])
    flat, target = logits.flatten(0, 1), batch["tgt_out"].flatten()
    expected = F.cross_entropy(flat, target, ignore_index=PAD_ID, label_smoothing=0.1)
    nll = F.cross_entropy(flat, target, ignore_index=PAD_ID)
    torch.testing.assert_close(loss, expected)
    assert logs["nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert logs["ppl"] == pytest.approx(math.exp(nll.item()), rel=1e-5)
    assert task.count(batch) == 8


def test_parallel_splits_and_length_filter(tmp_path, caplog):
    for lang, lines in {
        "en": ["a b", "c d e f g h i j k l m n", "x"],
        "de": ["A B", "C", "Y"],
    }.items():
        for split in ("train", "val"):
            (tmp_path / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = make_recipe(
        dataset="parallel",
        root=str(tmp_path),
        vocab_size=40,
        options={"src_lang": "en", "tgt_lang": "de", "max_sentence_tokens": 6},
    )
    task = get_task("translation")(recipe)
    with caplog.at_level(logging.INFO):
        assert task.prepare()["vocab_size"] <= 40
        splits = task.datasets()
    assert set(splits) == {"train", "val"}
    assert len(splits["train"]) == 2 and "dropped 1 of 3 pairs" in caplog.text  # too long
    assert len(splits["val"]) == 3 and max(splits["val"].sizes) <= 6  # truncated, kept
    assert splits["val"].refs == ["A B", "C", "Y"]


# -- bad text -----------------------------------------------------------------------------------
def test_non_utf8_line_names_file_and_line(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_bytes(b"one\ntwo\nth\xffree\n")
    tgt.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.en, line 3: not valid UTF-8"):
        read_parallel(src, tgt)


def test_line_count_mismatch_names_both_files(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_text("one\ntwo\nthree\n", encoding="utf-8")
    tgt.write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_parallel(src, tgt)
    assert f"{src} has 3 lines, {tgt} has 2" in str(err.value)


def test_empty_lines_skip_or_error(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_text("one\n\nthree\nfour\n", encoding="utf-8")
    tgt.write_text("eins\nzwei\ndrei\n  \n", encoding="utf-8")
    assert read_parallel(src, tgt, "skip") == (["one", "three"], ["eins", "drei"])
    with pytest.raises(ValueError, match=r"train\.en, line 2: empty line"):
        read_parallel(src, tgt, "error")


def test_bad_options_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="dataset 'parallel' needs data.root"):
        get_task("translation")(make_recipe(dataset="parallel", root=str(tmp_path))).prepare()
    languages = {"src_lang": "en", "tgt_lang": "de"}
    recipe = make_recipe(dataset="parallel", root=str(tmp_path), options=languages)
    with pytest.raises(FileNotFoundError, match=r"train\.en"):
        get_task("translation")(recipe).prepare()


# -- metrics ------------------------------------------------------------------------------------
def test_sacrebleu_on_hand_checked_fixture():
    ref = "the cat sat on the mat"
    assert corpus_scores([ref], [ref]) == {
        "bleu": pytest.approx(100), "bleu_lc": pytest.approx(100), "chrf": pytest.approx(100)
    }  # fmt: skip
    assert corpus_scores([ref.upper()], [ref])["bleu_lc"] == pytest.approx(100)
    # 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_scores(["the cat sat on a mat"], [ref])["bleu"] == pytest.approx(expected)
    assert "tok:13a" in signatures()["bleu"] and "case:lc" in signatures()["bleu_lc"]


# -- decoding -----------------------------------------------------------------------------------
def _sources(task, splits, n=24):
    batch = collate([splits["val"][i] for i in range(n)])
    return batch["src"], batch["src_lengths"]


def test_smoke_training_learns(trained, tmp_path):
    task, model, splits = trained
    metrics = task.evaluate(model, task.loader(splits["val"], 2048))
    assert metrics["bleu"] > 30, metrics  # an untrained model scores ~0
    assert set(metrics) >= {"bleu", "bleu_lc", "chrf", "loss", "ppl"}
    report = task.write_report(tmp_path, "val")
    written = (tmp_path / "translations_val.txt").read_text(encoding="utf-8").splitlines()
    assert written == task.last_hypotheses and len(written) == len(splits["val"])
    assert any(line.startswith("bleu signature: nrefs:1|case:mixed") for line in report)
    # The saved vocabulary lets a fresh task predict the same translations.
    meta = task.save_extra(tmp_path)
    fresh = get_task("translation")(make_recipe())
    fresh.load_extra(tmp_path, meta)
    sentences = task._text["val"][0][:4]
    beam = task.predict(model, sentences, beam_size=3)
    assert fresh.predict(model, sentences, beam_size=3) == beam
    nbest = task.predict(model, sentences, beam_size=3, nbest=3)
    assert [len(n) for n in nbest] == [3, 3, 3, 3]


def test_beam_one_equals_greedy(trained):
    task, model, splits = trained
    src, lengths = _sources(task, splits)
    greedy = greedy_search(model, src, lengths)
    beam = beam_search(model, src, lengths, beam_size=1)
    assert [b[0].tokens for b in beam] == [g.tokens for g in greedy]
    assert [b[0].score for b in beam] == pytest.approx([g.score for g in greedy], abs=1e-5)


def test_cached_equals_uncached(trained):
    task, model, splits = trained
    model = copy.deepcopy(model).double()  # exact arithmetic: no near-tie can flip
    src, lengths = _sources(task, splits)
    cached, uncached = (
        greedy_search(model, src, lengths),
        greedy_search(model, src, lengths, use_cache=False),
    )
    assert [h.tokens for h in cached] == [h.tokens for h in uncached]
    kwargs = dict(beam_size=4, nbest=4, len_penalty=0.6)
    cached = beam_search(model, src, lengths, **kwargs)
    uncached = beam_search(model, src, lengths, use_cache=False, **kwargs)
    assert [[h.tokens for h in n] for n in cached] == [[h.tokens for h in n] for n in uncached]
    assert [h.score for n in cached for h in n] == pytest.approx(
        [h.score for n in uncached for h in n], abs=1e-9
    )
    assert all(n[i].score >= n[i + 1].score for n in cached for i in range(3))  # best first


def test_max_length_forces_eos():
    torch.manual_seed(0)
    model = tiny_model("translation", vocab_size=40).eval()
    with torch.no_grad():  # EOS logit = -10 * sum(final norm output) = -10 * dim: never chosen
        model.decoder.norm.bias.fill_(1.0)
        model.head.weight[EOS_ID] = -10.0
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]])
    limits = max_lengths(torch.tensor([4, 2]), 1.0, 2, 100).tolist()
    assert limits == [6, 4]
    for use_cache in (True, False):
        greedy = greedy_search(model, src, max_len_a=1.0, max_len_b=2, use_cache=use_cache)
        beam = beam_search(
            model, src, beam_size=3, nbest=3, max_len_a=1.0, max_len_b=2, use_cache=use_cache
        )
        # EOS is forced as the last of `limit` tokens, and is not part of the output.
        assert [len(h.tokens) for h in greedy] == [5, 3]
        assert [[len(h.tokens) for h in n] for n in beam] == [[5] * 3, [3] * 3]


def test_a_given_vocabulary_is_used_and_kept_in_the_run(tmp_path):
    given = Tokenizer.train(["a man rides a bike", "ein mann faehrt rad"] * 50, 40, "bpe", 1.0)
    given.save(tmp_path / "given.model")
    recipe = make_recipe()
    recipe.tokenizer.model = str(tmp_path / "given.model")
    task = get_task("translation")(recipe, run_dir=tmp_path / "run")
    assert task.prepare()["vocab_size"] == len(given)
    assert task.tokenizer.model_proto == given.model_proto
    assert (tmp_path / "run" / "spm.model").read_bytes() == given.model_proto  # resume reads it
    recipe.tokenizer.model = str(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        get_task("translation")(recipe, run_dir=tmp_path / "run2").prepare()
