"""Subword output units of the speech recogniser (``tokenizer.units: bpe``): the piece
vocabulary, its settings, the character LM's refusal, and a tiny run that saves, reloads and
transcribes with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tasks.base import get_task
from tasks.speech.options import SpeechTokenizer
from tasks.speech.vocab import CharVocab, PieceVocab, load_speech_vocab
from tests.tasks.speech.helpers import make_task
from zoo.cli import main
from zoo.config import ConfigError, load_recipe, recipe_from_dict
from zoo.inference import load_for_prediction

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran home",
    "it's nine o'clock",
    "hello world",
    "she sells sea shells",
    "the quick brown fox",
    "we ate 419 apples",
    "good morning to you",
]
# the run's prompts: every character is in 3 or more, so the 2 held out for val add none
PROMPTS = [
    "the cat sat on the mat", "a rat ran home", "the cat had a hat", "no one sat there",
    "the tea is hot", "she ate the ham", "a cat and a rat", "most men eat no meat",
    "his dad is here", "this hat is mine",
]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_piece_vocab_round_trips_and_never_emits_blank_or_eos(model_type):
    vocab = PieceVocab.build(SENTENCES, 40, model_type)
    assert 2 < len(vocab) <= 40
    for text in SENTENCES:
        ids = vocab.encode(text)
        assert ids and min(ids) >= 2 and max(ids) < len(vocab)
        assert vocab.decode(ids) == text
        assert vocab.decode([0, *ids, 1, 0]) == text  # blank and EOS are skipped
    restored = load_speech_vocab(json.loads(json.dumps(vocab.to_dict())))
    assert isinstance(restored, PieceVocab) and restored == vocab and len(restored) == len(vocab)
    assert all(restored.encode(t) == vocab.encode(t) for t in SENTENCES)
    assert vocab != PieceVocab.build(SENTENCES[:4], 40, model_type)
    assert load_speech_vocab(CharVocab("ab").to_dict()) == CharVocab("ab")


def test_a_large_vocab_size_is_an_upper_bound_and_a_small_one_an_error():
    assert len(PieceVocab.build(SENTENCES, 5000, "bpe")) < 5000
    with pytest.raises(ValueError, match="tokenizer.vocab_size 10 is too small: .* at least"):
        PieceVocab.build(SENTENCES, 10, "bpe")
    vocab = PieceVocab.build(SENTENCES, 40, "bpe")
    with pytest.raises(ValueError, match="character 'z' in the transcript of utterance u7"):
        vocab.encode("zebra", "u7")
    with pytest.raises(ValueError, match="unknown speech vocabulary type 'wordpiece'"):
        load_speech_vocab({"type": "wordpiece"})


def test_tokenizer_settings_are_checked():
    assert SpeechTokenizer().units == "char" and SpeechTokenizer().vocab_size == 128
    with pytest.raises(ValueError, match="units must be one of char, bpe, unigram; got 'wpm'"):
        SpeechTokenizer(units="wpm")
    with pytest.raises(ValueError, match="characters applies to units=char only"):
        SpeechTokenizer(units="bpe", characters="abc")
    recipe = {"task": "speech_recognition", "model": {"name": "test_asr_transformer"},
              "train": {"max_steps": 1}}
    with pytest.raises(ConfigError, match="tokenizer.vocab_size' .*must be >= 8, got 4"):
        recipe_from_dict({**recipe, "tokenizer": {"units": "bpe", "vocab_size": 4}})
    with pytest.raises(ConfigError, match="units must be one of char, bpe, unigram; got 'wpm'"):
        recipe_from_dict({**recipe, "tokenizer": {"units": "wpm"}})


def test_a_subword_vocabulary_of_the_digit_data_and_the_lm_refusal():
    tok = {"units": "bpe", "vocab_size": 20}
    task = make_task(sections={"tokenizer": tok}, train_utterances=20, eval_utterances=4)
    task.prepare()
    assert isinstance(task.vocab, PieceVocab) and len(task.vocab) <= 20
    lm = {"lm_weight": 0.5, "beam_size": 4}
    task = make_task(sections={"tokenizer": tok, "decode": lm}, train_utterances=20,
                     eval_utterances=4)
    with pytest.raises(ValueError, match="decode.lm_weight > 0 needs tokenizer.units=char"):
        task.prepare()
    greedy = {"lm_weight": 0.5, "beam_size": 1}  # greedy decoding uses no LM: allowed
    task = make_task(sections={"tokenizer": tok, "decode": greedy}, train_utterances=20,
                     eval_utterances=4)
    task.prepare()
    assert task._lm() is None


def write_manifest(root: Path) -> None:
    """0.5 s tones at 16 kHz, one per prompt, each read twice."""
    rows = ["utt_id\tpath\ttext"]
    (root / "wavs").mkdir(parents=True)
    t = np.arange(8000) / 16000
    for i, text in enumerate(PROMPTS * 2):
        wave = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)
        sf.write(str(root / "wavs" / f"u{i:02d}.wav"), wave, 16000)
        rows.append(f"u{i:02d}\twavs/u{i:02d}.wav\t{text}")
    (root / "transcripts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_a_bpe_run_saves_reloads_and_transcribes(tmp_path, capsys):
    write_manifest(tmp_path / "data")
    recipe = {
        "task": "speech_recognition",
        "model": {"name": "test_asr_transformer"},
        "data": {"dataset": "manifest", "root": str(tmp_path / "data"), "val_fraction": 0.2},
        "tokenizer": {"units": "bpe", "vocab_size": 40},
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"max_steps": 2, "batch_size": 4, "precision": "fp32", "eval_every": 2},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(run)]) == 0
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    assert "on val:" in capsys.readouterr().out
    rows = (run / "transcripts_val.tsv").read_text("utf-8").splitlines()[1:]
    assert rows and all(len(r.split("\t")) == 3 for r in rows)

    task, model = load_for_prediction(run, "speech_recognition", device="cpu")
    trained = get_task("speech_recognition")(load_recipe(run / "config.yaml"))
    trained.prepare()  # the run's training transcripts train the same pieces again
    assert isinstance(task.vocab, PieceVocab) and task.vocab == trained.vocab
    assert model.cfg.vocab_size == len(task.vocab)
    texts = task.predict(model, [str(tmp_path / "data" / "wavs" / "u00.wav")], beam_size=2)
    assert len(texts) == 1 and isinstance(texts[0], str)
