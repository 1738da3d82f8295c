"""``zoo synthesize``: a speech manifest read aloud from text files, one sentence for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.speech.data import read_manifest
from tests.zoo.tools.helpers import write_texts
from zoo.cli import main
from zoo.cli.tools import FLITE_VOICES


def test_the_parser_knows_the_synthesiser_voices() -> None:
    """The CLI names Flite's voices without loading the synthesiser: the two lists agree."""
    from zoo.tools.tts import FLITE_VOICES as voices

    assert FLITE_VOICES == voices


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    return write_texts(tmp_path / "texts.txt")


def test_synthesize_command(
    texts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "corpus"
    assert main(["synthesize", str(texts), "--out", str(out), "--count", "2"]) == 0
    assert "2 utterances" in capsys.readouterr().out
    assert len(read_manifest(out / "transcripts.tsv")) == 2
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\n")
    assert main(["synthesize", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: text file {bad} is not UTF-8 (byte 0)"


def test_flite_without_its_program_is_one_sentence(
    texts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite program to be found
    assert main(["synthesize", str(texts), "--out", str(tmp_path / "out"), "--flite"]) == 2
    assert "needs its program 'flite' on the PATH" in capsys.readouterr().err
