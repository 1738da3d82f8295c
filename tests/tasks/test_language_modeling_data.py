"""Text for language models: reading a corpus and its errors, nanoGPT's split, the grammar
corpus, block and line datasets, collation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tasks.language_modeling import data as D


def test_read_corpus_normalises_newlines_and_drops_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffa\r\nb\n".encode())
    assert D.read_corpus(path) == "a\nb\n"


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b" \n\n", "is empty"),
     (b"ok\nbad \xff\n", "not UTF-8: byte 0xff on line 2")],
)  # fmt: skip
def test_bad_corpora_get_one_sentence_naming_the_file(tmp_path, content, message) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        D.read_corpus(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        D.read_corpus(tmp_path / "missing.txt")


def test_stream_split_takes_the_last_fraction_as_nanogpt_does() -> None:
    text = "x" * 1_115_394  # tinyshakespeare's length
    train, val = D.split_stream(text, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    train, val = D.split_lines("a\nb\nc\nd\ne\nf\ng\nh\ni\nj", 0.2)
    assert (train, val) == ("a\nb\nc\nd\ne\nf\ng\nh", "i\nj")


def test_grammar_corpus_is_seeded_and_its_verbs_agree_with_their_subjects() -> None:
    assert D.synthetic_corpus(0, 50) == D.synthetic_corpus(0, 50) != D.synthetic_corpus(1, 50)
    lines = D.synthetic_corpus(0, 200).splitlines()
    assert len(lines) == 200 and all(s[0].isupper() and s.endswith(".") for s in lines)
    singular = {sg for sg, _ in D._NOUNS}
    for line in lines:
        words = line.rstrip(".").lower().split()
        verb = next(i for i, w in enumerate(words) if w in {v for pair in D._VERBS for v in pair})
        subject_is_singular = words[verb - 1] in singular
        assert (words[verb] in {sg for sg, _ in D._VERBS}) == subject_is_singular, line
    rng = random.Random(0)
    assert len({D.grammar_sentence(rng) for _ in range(300)}) > 250  # varied, not memorisable


def test_training_blocks_start_anywhere_and_evaluation_blocks_tile_the_stream() -> None:
    ids = torch.arange(20)
    train = D.BlockDataset(ids, 4)
    assert len(train) == 16 and train[3].tolist() == [3, 4, 5, 6, 7]
    val = D.BlockDataset.contiguous(ids, 4)
    assert [val[i][0].item() for i in range(len(val))] == [0, 4, 8, 12]
    assert all(len(val[i]) == 5 for i in range(len(val)))
    thinned = D.BlockDataset.contiguous(torch.arange(400), 4, limit=3)
    assert [thinned[i][0].item() for i in range(3)] == [0, 196, 392]


def test_line_samples_get_bos_and_eos_and_are_cut_to_the_block() -> None:
    lines = D.LineDataset([[5, 6], [7, 8, 9, 10, 11]], block_size=4, bos_id=1, eos_id=2)
    assert lines[0].tolist() == [1, 5, 6, 2] and lines[1].tolist() == [1, 7, 8, 9, 10]


def test_collate_shifts_targets_and_right_pads() -> None:
    batch = D.collate([torch.tensor([1, 5, 6, 2]), torch.tensor([1, 7, 2])], pad_id=0)
    assert batch["input"].tolist() == [[1, 5, 6], [1, 7, 2]]
    assert batch["target"].tolist() == [[5, 6, 2], [7, 2, 0]]
