"""Vocabularies: characters (strict prompts, unk in data) and sentencepiece over streams (EOS
between lines), saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.language_modeling.vocab import (
    CharVocab,
    PieceVocab,
    load_run_vocab,
    load_vocab,
    save_run_vocab,
)

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 30


def test_char_vocab_puts_specials_first_and_round_trips() -> None:
    vocab = CharVocab.build("ba\nab")
    assert vocab.chars == ["\n", "a", "b"] and len(vocab) == 7
    assert vocab.encode("ab\n") == [5, 6, 4] and vocab.decode([5, 6, 4]) == "ab\n"
    assert vocab.decode([1, 5, 0, 3, 2]) == "a\n"  # eos reads as a newline; others vanish
    assert vocab.newline_id() == 4 and CharVocab.build("ab").newline_id() is None


def test_a_character_outside_the_vocabulary_is_named_in_a_prompt_and_unk_in_data() -> None:
    vocab = CharVocab.build("abc")
    with pytest.raises(ValueError, match="character 'é' in the prompt is not in the model's"):
        vocab.encode("abé")
    assert vocab.encode("abé", strict=False) == [4, 5, 3]


def test_sentencepiece_stream_puts_eos_between_lines_and_decodes_it_as_newline() -> None:
    vocab = PieceVocab.build(TEXT, vocab_size=40)
    ids = vocab.encode_stream("the cat sat.\nthe dog sat.\n")
    assert ids.count(vocab.eos_id) == 2 and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "the cat sat.\nthe dog sat.\n"
    assert vocab.newline_id() == vocab.eos_id


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_vocabularies_save_and_load(kind: str, tmp_path: Path) -> None:
    vocab = CharVocab.build(TEXT) if kind == "char" else PieceVocab.build(TEXT, 40)
    meta = vocab.save(tmp_path)
    assert load_vocab(meta, tmp_path) == vocab
    save_run_vocab(vocab, tmp_path)
    assert load_run_vocab(tmp_path) == vocab
    assert load_run_vocab(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="not a language-model vocabulary"):
        load_vocab({"type": "bytes"}, tmp_path)
