"""Synthetic speech corpora read by eSpeak NG and Flite (``zoo.tools.tts``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.functional import detect_pitch_frequency

from tasks.speech.data import build_splits, read_manifest
from tasks.speech.vocab import read_sentences
from tests.zoo.tools.helpers import write_texts
from zoo.config import recipe_from_dict
from zoo.tools.tts import ENGLISH, FLITE_VOICES, VARIANTS, Flite, synthesize_corpus

pytest.importorskip("espeakng_loader")


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    return write_texts(tmp_path / "texts.txt")


def test_sentences_are_normalised_and_within_the_alphabet(texts: Path) -> None:
    sentences, dropped = read_sentences([texts], ENGLISH)
    assert sentences == [
        "a dog runs across the field",
        "two children play in the snow",
        "a dog runs across the field",
        "women's shoes red and blue",
        "a man rides a bicycle down the street",
    ]
    assert dropped == 1


def test_unreadable_text_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8"):
        read_sentences([bad], ENGLISH)
    with pytest.raises(ValueError, match=r"cannot read text file .*missing.txt"):
        read_sentences([tmp_path / "missing.txt"], ENGLISH)
    digits = tmp_path / "digits.txt"
    digits.write_text("1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no line of .*digits.txt uses only"):
        synthesize_corpus([digits], tmp_path / "out")


def test_corpus_is_a_manifest_of_speech_and_repeats_with_its_seed(
    texts: Path, tmp_path: Path
) -> None:
    stats = synthesize_corpus([texts], tmp_path / "a", count=3, seed=1)
    assert stats["utterances"] == 3 and stats["left_out"] == 1
    rows = read_manifest(tmp_path / "a" / "transcripts.tsv")
    assert len(rows) == 3
    durations = []
    for row in rows:
        wave, sr = sf.read(tmp_path / "a" / row["path"], dtype="float32")
        assert sr == 22050 and wave.ndim == 1
        assert np.sqrt(np.mean(wave**2)) > 0.01  # speech, not silence
        durations.append((row["text"], len(wave) / sr))
    assert abs(sum(d for _, d in durations) / 3600 - stats["hours"]) < 1e-6
    # a longer sentence takes longer to say at any rate and voice drawn (140-200 words/min)
    for text, seconds in durations:
        words = len(text.split())
        assert words * 60 / 200 * 0.7 < seconds < words * 60 / 140 * 2.0, (text, seconds)

    synthesize_corpus([texts], tmp_path / "b", count=3, seed=1)
    assert (tmp_path / "a" / "transcripts.tsv").read_text() == (
        tmp_path / "b" / "transcripts.tsv").read_text()
    for row in rows:
        assert (tmp_path / "a" / row["path"]).read_bytes() == (
            tmp_path / "b" / row["path"]).read_bytes()
    synthesize_corpus([texts], tmp_path / "c", count=3, seed=2)
    assert [r["speaker"] for r in read_manifest(tmp_path / "c" / "transcripts.tsv")] != [
        r["speaker"] for r in rows]


def test_the_manifest_dataset_reads_the_corpus(texts: Path, tmp_path: Path) -> None:
    synthesize_corpus([texts], tmp_path / "corpus")
    data = recipe_from_dict({
        "task": "speech_recognition", "model": {"name": "test_asr_transformer"},
        "data": {"dataset": "manifest", "root": str(tmp_path / "corpus"), "val_fraction": 0.25},
        "train": {"max_steps": 1},
    }).data
    splits = build_splits(data, 16000)
    assert len(splits["train"]) == 4 and len(splits["val"]) == 1
    item = splits["train"][0]
    assert item["audio"].ndim == 1 and len(item["audio"]) > 16000 * 0.5  # resampled to 16 kHz


def test_unknown_voice_is_named(texts: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no voice variant 'nobody'"):
        synthesize_corpus([texts], tmp_path / "out", variants=["f1", "nobody"])
    with pytest.raises(ValueError, match=r"no voice 'xx-nowhere\+f1'"):
        synthesize_corpus([texts], tmp_path / "out", language="xx-nowhere", variants=["f1"])


flite_missing = pytest.mark.skipif(
    shutil.which("flite") is None, reason="no flite program (apt-get install flite)")


@flite_missing
def test_flite_voices_read_at_the_rate_and_pitch_asked() -> None:
    tts = Flite()
    assert set(FLITE_VOICES) <= set(tts.voices)
    text = "a woman in a red coat walks her dog along the beach"
    slow, fast = tts.say(text, "slt", rate=110), tts.say(text, "slt", rate=220)
    assert slow.dtype == np.int16 and np.sqrt(np.mean(slow.astype(np.float64) ** 2)) > 300
    assert 1.6 < len(slow) / len(fast) < 2.4  # twice the words per minute, about half the time

    def median_f0(wave: np.ndarray) -> float:
        audio = torch.from_numpy(wave.astype(np.float32) / 32768)
        return float(detect_pitch_frequency(audio, Flite.sample_rate).median())

    low, high = median_f0(tts.say(text, "slt", pitch=0)), median_f0(tts.say(text, "slt", pitch=100))
    assert 1.6 < high / low < 2.5, (low, high)  # pitch 0 and 100: 2**-0.5 and 2**0.5 x own
    with pytest.raises(ValueError, match=r"Flite has no voice 'kal8' here"):
        tts.say(text, "kal8")


@flite_missing
def test_corpus_mixes_flite_and_espeak_voices(texts: Path, tmp_path: Path) -> None:
    stats = synthesize_corpus([texts], tmp_path / "mixed", seed=3, flite_voices=FLITE_VOICES,
                              flite_share=0.5)
    rows = read_manifest(tmp_path / "mixed" / "transcripts.tsv")
    seconds = 0.0
    for row in rows:
        wave, sr = sf.read(tmp_path / "mixed" / row["path"], dtype="float32")
        assert sr == (16000 if row["speaker"].startswith("flite-") else 22050), row
        assert np.sqrt(np.mean(wave**2)) > 0.01
        seconds += len(wave) / sr
    assert abs(seconds / 3600 - stats["hours"]) < 1e-6
    speakers = {row["speaker"] for row in rows}
    assert any(s.startswith("flite-") for s in speakers)
    assert any(s in VARIANTS for s in speakers)
    only = synthesize_corpus([texts], tmp_path / "flite", count=2, flite_voices=["slt"],
                             flite_share=1.0)
    assert only["utterances"] == 2
    assert {r["speaker"] for r in read_manifest(tmp_path / "flite" / "transcripts.tsv")} == {
        "flite-slt"}
    with pytest.raises(ValueError, match=r"Flite has no voice 'nobody' here"):
        synthesize_corpus([texts], tmp_path / "out", flite_voices=["slt", "nobody"])


def test_flite_errors_are_named(
    texts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"flite_share must be within \[0, 1\], got 1.5"):
        synthesize_corpus([texts], tmp_path / "out", flite_voices=["slt"], flite_share=1.5)
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite program to be found
    with pytest.raises(OSError, match=r"needs its program 'flite' on the PATH .*apt-get"):
        synthesize_corpus([texts], tmp_path / "out", flite_voices=["slt"])
