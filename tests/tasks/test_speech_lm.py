"""The character n-gram LM (tasks.speech.lm) and its shallow fusion in CTC beam search."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from tasks.speech.decoding import ctc_log_likelihood, ctc_prefix_beam_search, decode_batch
from tasks.speech.lm import (
    END,
    CharNgramLM,
    LMFusion,
    WordLexicon,
    read_word_counts,
    wordfreq_counts,
)
from tasks.speech.vocab import CharVocab, read_sentences
from tests.tasks.test_speech import make_task

ALPHABET = "abcdefghijklmnopqrstuvwxyz '"
TEXTS = ["the cat sat on the mat", "a cat and a dog", "the dog sat", "don't"]


@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_kneser_ney_distributions_sum_to_one(order):
    lm = CharNgramLM(TEXTS, ALPHABET, order)
    for history in ["", "the c", "zzz q", "the dog sat", "don'"]:  # seen and unseen histories
        probs = [math.exp(lm.log_prob(history, c)) for c in [*ALPHABET, END]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9)
        assert min(probs) > 0  # every character keeps some mass


def test_longer_histories_sharpen_the_prediction():
    unigram, trigram = CharNgramLM(TEXTS, ALPHABET, 1), CharNgramLM(TEXTS, ALPHABET, 3)
    # "ca" is always followed by "t" in the texts
    assert trigram.log_prob("the ca", "t") > math.log(0.7) > unigram.log_prob("the ca", "t")
    assert trigram.log_prob("the ca", "q") < unigram.log_prob("the ca", "q")
    assert trigram.log_prob("the dog sat", END) > trigram.log_prob("the dog sat", "q")
    score = trigram.score("the")
    manual = sum(trigram.log_prob("the"[:i], c) for i, c in enumerate("the"))
    assert score == pytest.approx(manual + trigram.log_prob("the", END))


def test_lm_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary: 'Z'"):
        CharNgramLM(["aZ"], ALPHABET)
    with pytest.raises(ValueError, match="no text to learn from"):
        CharNgramLM([], ALPHABET)
    with pytest.raises(ValueError, match="order must be at least 1, got 0"):
        CharNgramLM(TEXTS, ALPHABET, 0)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"LM text file .*latin1.txt is not UTF-8"):
        read_sentences([latin1], ALPHABET, "LM text file")
    with pytest.raises(ValueError, match=r"cannot read LM text file .*missing.txt"):
        read_sentences([tmp_path / "missing.txt"], ALPHABET, "LM text file")


def test_lm_texts_are_normalised_and_foreign_lines_counted(tmp_path):
    path = tmp_path / "more.txt"
    path.write_text("The Cat, sat!\n\nZ\u00fcrich is far\n  A dog\u2019s day \n", encoding="utf-8")
    texts, dropped = read_sentences([path], ALPHABET, "LM text file")
    assert texts == ["the cat sat", "a dog's day"]
    assert dropped == 1  # "zürich is far": ü is not in the alphabet


def _ambiguous_posterior() -> torch.Tensor:
    """Three frames: 'a', then 'c' a little likelier than 'b', then blank (ids: a=2 b=3 c=4)."""
    probs = torch.full((3, 5), 1e-4)
    probs[0, 2] = 1.0
    probs[1, 3], probs[1, 4] = 0.45, 0.55
    probs[2, 0] = 1.0
    return (probs / probs.sum(-1, keepdim=True)).log()[None]


def test_fusion_lets_the_lm_pick_between_close_labels():
    vocab = CharVocab("abc")
    log_probs, lengths = _ambiguous_posterior(), torch.tensor([3])
    plain = ctc_prefix_beam_search(log_probs, lengths, beam_size=4)[0]
    assert plain[0][0] == [2, 4]  # "ac": the acoustics alone
    lm = LMFusion(CharNgramLM(["ab"] * 20 + ["c"], "abc", 3), vocab, weight=1.0, bonus=0.5)
    fused = ctc_prefix_beam_search(log_probs, lengths, beam_size=4, lm=lm)[0]
    assert fused[0][0] == [2, 3]  # "ab": the LM has seen it twenty times, "ac" never
    # Beam 2 and 'b' less likely than a blank: a search without the LM drops "ab" at the
    # second frame (keeping "ac" and "a"), so rescoring alone could not bring it back.
    probs = _ambiguous_posterior().exp()
    probs[0, 1, 0], probs[0, 1, 3], probs[0, 1, 4] = 0.3, 0.2, 0.5
    pruned = probs.log()
    assert ctc_prefix_beam_search(pruned, lengths, beam_size=2)[0][0][0] == [2, 4]
    strong = LMFusion(lm.lm, vocab, weight=2.0, bonus=1.0)
    assert ctc_prefix_beam_search(pruned, lengths, beam_size=2, lm=strong)[0][0][0] == [2, 3]
    ctc = ctc_log_likelihood(log_probs, lengths, [[2, 3]])[0].item()
    assert fused[0][1] == pytest.approx(ctc + lm.total([2, 3]), rel=1e-6)
    expected = lm.weight * lm.lm.score("ab") + 2 * lm.bonus
    assert lm.total([2, 3]) == pytest.approx(expected)
    silent = LMFusion(lm.lm, vocab, weight=0.0, bonus=0.0)  # no weight, no bonus: plain search
    assert ctc_prefix_beam_search(log_probs, lengths, beam_size=4, lm=silent)[0][0][0] == [2, 4]


def test_fusion_scores_prefixes_of_every_length_by_their_text():
    vocab = CharVocab("abc")
    fusion = LMFusion(CharNgramLM(["abcab", "cab", "bca"], "abc", 4), vocab, 0.7, 0.3)
    for prefix in [[], [2], [2, 3], [2, 3, 4], [2, 3, 4, 2, 3]]:  # shorter and longer than 3
        text = vocab.decode(prefix)
        assert fusion.step(prefix, 4) == pytest.approx(0.7 * fusion.lm.log_prob(text, "c") + 0.3)
        assert fusion.end(prefix) == pytest.approx(0.7 * fusion.lm.log_prob(text, END))


def test_task_builds_the_lm_from_transcripts_and_files(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("1 2 3\n12\n", encoding="utf-8")  # spaces are not digits: left out
    decode = {"lm_weight": 0.5, "lm_bonus": 0.2, "lm_order": 3, "lm_texts": [str(extra)]}
    task = make_task(sections={"decode": decode}, train_utterances=8, eval_utterances=4)
    model = zoo.create_model("test_asr_transformer", **task.prepare()).eval()
    fusion = task._lm()
    assert fusion is task._lm() and (fusion.weight, fusion.bonus) == (0.5, 0.2)
    assert fusion.lm.order == 3 and fusion.lm.alphabet == "0123456789"
    # "12" was learnt from the file on top of the transcripts
    only_transcripts = CharNgramLM(task.datasets()["train"].texts, "0123456789", 3)
    assert fusion.lm.log_prob("1", "2") > only_transcripts.log_prob("1", "2")
    loader = task.loader(task.datasets()["val"], 4)
    task.evaluate(model, loader)  # greedy (beam 1): the LM is not used
    batch = next(iter(loader))
    memory, mask = model.forward_features(batch["audio"], batch["audio_lengths"])
    lengths = model.output_lengths(batch["audio_lengths"])
    logits = model.forward_head(memory)
    greedy = [task.vocab.decode(h) for h in decode_batch(model, memory, mask, logits, lengths)]
    assert [hyp for _, _, hyp in task.last_transcripts] == greedy
    hyps = decode_batch(model, memory, mask, logits, lengths, beam_size=3, lm=fusion)
    assert len(hyps) == 4 and all(min(h, default=2) >= 2 for h in hyps)
    assert make_task(train_utterances=8, eval_utterances=4)._lm() is None  # off by default
    # a saved model being used (zoo transcribe): no prepare(), the recipe's data gives the LM
    decode = {"lm_weight": 0.5, "lm_order": 3, "lm_texts": [str(extra)]}
    saved = make_task(sections={"decode": decode}, train_utterances=8, eval_utterances=4)
    saved.load_extra(tmp_path, task.save_extra(tmp_path))
    assert saved._lm().lm.log_prob("1", "2") == fusion.lm.log_prob("1", "2")
    # a saved model with other characters than the recipe's data gets an LM over its own
    task.load_extra(tmp_path, {"vocab": CharVocab("0123456789ab").to_dict()})
    assert task._lm() is not fusion and task._lm().lm.alphabet == "0123456789ab"


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        ({"lm_weight": -1}, "'decode.lm_weight' .* must be >= 0, got -1.0"),
        ({"lm_weight": 1, "lm_order": 0}, "'decode.lm_order' .* must be >= 1, got 0"),
        ({"lm_texts": "corpus.txt"}, "'decode.lm_texts' .* expects a list of a string"),
        ({"lm_lexicon": ["words.txt"]}, "'decode.lm_lexicon' .* expects a string or null"),
        ({"lm_lexicon_size": 0}, "'decode.lm_lexicon_size' .* must be >= 1"),
        ({"lm_lexicon_mix": 1.0}, r"'decode.lm_lexicon_mix' .* must be < 1, got 1.0"),
    ],
)
def test_bad_lm_options_are_named(decode, message):
    with pytest.raises(ValueError, match=message):
        make_task(sections={"decode": decode})


def test_a_missing_lm_text_file_fails_before_training(tmp_path):
    decode = {"lm_weight": 0.5, "lm_texts": [str(tmp_path / "gone.txt")]}
    task = make_task(sections={"decode": decode}, train_utterances=4, eval_utterances=2)
    with pytest.raises(ValueError, match=r"cannot read LM text file .*gone.txt"):
        task.prepare()


WORDS = {"the": 50, "cat": 10, "cab": 5, "car": 4, "Don\u2019t": 3, "caf\u00e9": 7, "a-b": 2}


def test_lexicon_spells_words_by_their_frequency():
    lex = WordLexicon(WORDS, ALPHABET)
    # "café" is outside the alphabet and "a-b" has a space after normalisation: left out
    assert set(lex.words) == {"the", "cat", "cab", "car", "don't"}
    assert lex.words["cat"] == pytest.approx(10 / 72)
    assert lex.next_prob("ca", "t") == pytest.approx(10 / 19)
    assert lex.next_prob("", "c") == pytest.approx(19 / 72)
    for partial in ["", "c", "ca", "cat", "don'", "th"]:  # every word in progress: sums to one
        letters = sum(lex.next_prob(partial, c) for c in ALPHABET if c != " ")
        assert letters + lex.end_prob(partial) == pytest.approx(1.0)
    assert lex.end_prob("cat") == 1.0 and lex.end_prob("ca") == 0.0
    assert lex.next_prob("dog", "s") == 0.0 and lex.end_prob("dog") == 0.0  # off the lexicon
    top = WordLexicon(WORDS, ALPHABET, size=2)
    assert set(top.words) == {"the", "cat"} and top.words["the"] == pytest.approx(50 / 60)


def test_lexicon_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="no word made of the vocabulary's characters"):
        WordLexicon({"caf\u00e9": 1}, ALPHABET)
    with pytest.raises(ValueError, match="word 'cat' of the lexicon has count 0"):
        WordLexicon({"cat": 0}, ALPHABET)
    with pytest.raises(ValueError, match="lexicon size must be at least 1, got 0"):
        WordLexicon(WORDS, ALPHABET, size=0)
    with pytest.raises(ValueError, match="share of the LM must be in"):
        LMFusion(CharNgramLM(TEXTS, ALPHABET, 3), CharVocab(ALPHABET), 1.0, 0.0,
                 WordLexicon(WORDS, ALPHABET), mix=1.0)


def test_word_count_files_are_read_and_bad_ones_named(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("the 120\ncat\t4\n\ndog\ncat 1.5\n", encoding="utf-8")
    assert read_word_counts(path) == {"the": 120.0, "cat": 5.5, "dog": 1.0}
    path.write_text("the 120\ncat four\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: expected 'word \[count\]'.*'cat four'"):
        read_word_counts(path)
    path.write_text("the -1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected 'word \\[count\\]' with a positive"):
        read_word_counts(path)
    path.write_bytes("caf\xe9 2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"lexicon file .*words.txt is not UTF-8"):
        read_word_counts(path)
    with pytest.raises(ValueError, match=r"cannot read lexicon file .*gone.txt"):
        read_word_counts(tmp_path / "gone.txt")


def test_wordfreq_lists_and_their_errors(monkeypatch):
    pytest.importorskip("wordfreq")
    counts = wordfreq_counts("en")
    assert max(counts, key=counts.get) == "the" and len(counts) > 100_000
    with pytest.raises(ValueError, match="no large word list for language 'xx'"):
        wordfreq_counts("xx")
    monkeypatch.setitem(__import__("sys").modules, "wordfreq", None)
    with pytest.raises(ImportError, match=r"needs the wordfreq package: pip install"):
        wordfreq_counts("en")


def test_fusion_with_a_lexicon_is_a_distribution_and_keeps_other_words_possible():
    vocab = CharVocab(ALPHABET)
    ngram = CharNgramLM(TEXTS, ALPHABET, 4)
    lex = WordLexicon(WORDS, ALPHABET)
    fusion = LMFusion(ngram, vocab, 1.0, 0.0, lex, mix=0.7)
    plain = LMFusion(ngram, vocab, 1.0, 0.0, lex, mix=0.0)  # the lexicon gets no share
    for text in ["", "the ca", "the cat", "a ", "dog", "the dog sa", "don'"]:
        prefix = vocab.encode(text)
        probs = [math.exp(fusion.log_prob(prefix, c)) for c in [*ALPHABET, END]]
        assert sum(probs) == pytest.approx(1.0)
        assert min(probs) > 0  # words off the lexicon stay possible
        assert plain.log_prob(prefix, "t") == ngram.log_prob(text, "t")
    # a word that left the lexicon pays once, where it left: then the n-gram alone goes on
    leaving = fusion.log_prob(vocab.encode("the do"), "g")  # "do" begins "don't"; "dog" no word
    assert leaving == pytest.approx(math.log(0.3) + ngram.log_prob("the do", "g"))
    assert fusion.log_prob(vocab.encode("the dog"), " ") == ngram.log_prob("the dog", " ")
    # inside a lexicon word its letters gain, and the n-gram's texts never had "car"
    assert fusion.log_prob(vocab.encode("the ca"), "r") > ngram.log_prob("the ca", "r") + 1.0
    assert fusion.log_prob(vocab.encode("the ca"), "q") < ngram.log_prob("the ca", "q")
    # where a word ends, a space and the sentence's end share it as the n-gram does
    prefix = vocab.encode("the cat")
    ratio = fusion.log_prob(prefix, " ") - fusion.log_prob(prefix, END)
    assert ratio == pytest.approx(ngram.log_prob("the cat", " ") - ngram.log_prob("the cat", END))
    assert fusion.step(prefix, vocab.index["s"]) == pytest.approx(fusion.log_prob(prefix, "s"))


def test_the_lexicon_turns_a_close_call_into_a_word():
    """'c', then 'b' a little likelier than 'a', then 'b': the acoustics say "cbb", and so does
    a search with an n-gram that saw only "cbb"; with "cab" in the lexicon "cab" wins."""
    vocab = CharVocab("abc ")
    probs = torch.full((4, 6), 1e-4)
    probs[0, vocab.index["c"]] = 1.0
    probs[1, vocab.index["b"]], probs[1, vocab.index["a"]] = 0.55, 0.45
    probs[2, 0] = 1.0
    probs[3, vocab.index["b"]] = 1.0
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()[None]
    lengths = torch.tensor([4])
    ngram = CharNgramLM(["cbb", "a b c"], "abc ", 3)
    without = LMFusion(ngram, vocab, 1.0, 0.5)
    best = ctc_prefix_beam_search(log_probs, lengths, beam_size=4, lm=without)[0][0][0]
    assert vocab.decode(best) == "cbb"
    with_lexicon = LMFusion(ngram, vocab, 1.0, 0.5, WordLexicon({"cab": 3, "bab": 1}, "abc "), 0.9)
    best = ctc_prefix_beam_search(log_probs, lengths, beam_size=4, lm=with_lexicon)[0][0][0]
    assert vocab.decode(best) == "cab"


def test_task_mixes_a_lexicon_file_into_its_lm(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("12 5\n345 2\nab 9\n", encoding="utf-8")  # "ab" is not digits: left out
    decode = {"lm_weight": 0.5, "lm_order": 3, "lm_lexicon": str(words), "lm_lexicon_size": 5,
              "lm_lexicon_mix": 0.6}
    task = make_task(sections={"decode": decode}, train_utterances=8, eval_utterances=4)
    task.prepare()
    fusion = task._lm()
    assert fusion.mix == 0.6 and fusion.lexicon.words == pytest.approx({"12": 5 / 7, "345": 2 / 7})
    decode = {"lm_weight": 0.5, "lm_lexicon": str(tmp_path / "gone.txt")}
    missing = make_task(sections={"decode": decode}, train_utterances=4, eval_utterances=2)
    with pytest.raises(ValueError, match=r"cannot read lexicon file .*gone.txt"):
        missing.prepare()
