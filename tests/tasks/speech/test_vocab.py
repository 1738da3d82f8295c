"""The character vocabulary (tasks.speech.vocab)."""

from __future__ import annotations

import json

from tasks.speech.vocab import CharVocab


def test_vocab_round_trip():
    vocab = CharVocab.build(["ab c", "cab'"])
    assert vocab.chars == [" ", "'", "a", "b", "c"] and len(vocab) == 7
    assert vocab.decode([0, 1] + vocab.encode("cab")) == "cab"
    assert CharVocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
