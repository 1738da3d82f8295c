"""Text for language models: reading a corpus, the built-in grammar corpus, splits, and the two
dataset shapes (fixed-length blocks of one token stream, or one line per sample).

A stream is cut into blocks of ``block_size + 1`` tokens (inputs and their next tokens). For
training every position of the stream may start a block, and the task shuffles the starts each
epoch (nanoGPT draws random starts per step; a shuffled permutation sees each start once per
epoch and is a pure function of the epoch seed, so a resumed run replays it exactly).
Evaluation reads contiguous non-overlapping blocks: every token is predicted once.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

MODES = ("stream", "lines")


# -- reading ------------------------------------------------------------------------------------
def read_corpus(path: str | Path) -> str:
    """The whole of a UTF-8 text file (newlines normalised to ``\\n``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not UTF-8 (line and byte named) or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text corpus {path} not found (relative to {Path.cwd()})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(
            f"text corpus {path} is not UTF-8: byte {raw[e.start]:#04x} on line {line}"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        raise ValueError(f"text corpus {path} is empty")
    return text


def split_stream(text: str, val_fraction: float) -> tuple[str, str]:
    """The first ``1 - val_fraction`` of the characters and the rest (nanoGPT's split of
    tinyshakespeare: 1,003,854 and 111,540 characters)."""
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def split_lines(text: str, val_fraction: float) -> tuple[str, str]:
    """The same split made at the line boundary nearest the cut (line mode keeps lines whole)."""
    lines = text.split("\n")
    cut = round(len(lines) * (1 - val_fraction))
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def text_lines(text: str) -> list[str]:
    """The non-empty lines of a text, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


# -- the built-in corpus ------------------------------------------------------------------------
_NOUNS = [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fox", "foxes"),
          ("child", "children"), ("teacher", "teachers"), ("horse", "horses")]  # fmt: skip
_VERBS = [("sees", "see"), ("likes", "like"), ("follows", "follow"), ("finds", "find"),
          ("watches", "watch"), ("chases", "chase")]  # fmt: skip
_DETERMINERS = (["the", "a", "one", "this"], ["the", "two", "some", "these"])
_ADJECTIVES = ["small", "big", "red", "old", "happy", "quiet"]
_PLACES = ["in the garden", "near the river", "under the tree", "at the market"]


def _noun_phrase(rng: random.Random, plural: bool) -> str:
    words = [rng.choice(_DETERMINERS[plural])]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJECTIVES))
    words.append(rng.choice(_NOUNS)[plural])
    return " ".join(words)


def grammar_sentence(rng: random.Random) -> str:
    """One sentence of a small English grammar: subject, verb agreeing with it in number,
    object, an optional place. "The small cats chase a red bird near the river." """
    plural = rng.random() < 0.5
    subject, verb = _noun_phrase(rng, plural), rng.choice(_VERBS)[plural]
    words = [subject, verb, _noun_phrase(rng, rng.random() < 0.5)]
    if rng.random() < 0.3:
        words.append(rng.choice(_PLACES))
    sentence = " ".join(words) + "."
    return sentence[0].upper() + sentence[1:]


def synthetic_corpus(seed: int, num_sentences: int) -> str:
    """``num_sentences`` grammar sentences, one per line: learnable structure (spelling,
    agreement, word order), not noise."""
    rng = random.Random(seed)
    return "".join(grammar_sentence(rng) + "\n" for _ in range(num_sentences))


# -- datasets -----------------------------------------------------------------------------------
class BlockDataset(Dataset):
    """Blocks of ``block_size + 1`` consecutive tokens of one stream, one per start position.

    Args:
        ids: (T,) the token stream.
        block_size: input tokens per block (the targets are the next tokens).
        starts: (S,) the start positions; None: every position whose block fits (training).
    """

    def __init__(self, ids: Tensor, block_size: int, starts: Tensor | None = None) -> None:
        self.ids, self.block_size = ids, block_size
        if starts is None:
            starts = torch.arange(max(len(ids) - block_size, 0))
        self.starts = starts

    @classmethod
    def contiguous(cls, ids: Tensor, block_size: int, limit: int | None = None) -> BlockDataset:
        """Non-overlapping blocks from the start (evaluation), evenly thinned to ``limit``."""
        starts = torch.arange(0, max(len(ids) - block_size, 0), block_size)
        if limit is not None and len(starts) > limit:
            starts = starts[torch.linspace(0, len(starts) - 1, limit).round().long()]
        return cls(ids, block_size, starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> Tensor:
        start = int(self.starts[i])
        return self.ids[start : start + self.block_size + 1]


class LineDataset(Dataset):
    """One sample per line: BOS, the line's ids, EOS (cut to ``block_size + 1`` tokens).

    Args:
        lines: the token ids of each line, without specials.
        block_size: most input tokens per sample.
        bos_id, eos_id: the special ids around each line.
    """

    def __init__(self, lines: list[list[int]], block_size: int, bos_id: int, eos_id: int) -> None:
        samples = [[bos_id, *ids, eos_id] for ids in lines]
        cut = sum(len(s) > block_size + 1 for s in samples)
        if cut:
            logger.info("cut %d of %d lines to the %d-token block", cut, len(samples), block_size)
        self.samples = [torch.tensor(s[: block_size + 1]) for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tensor:
        return self.samples[i]


def collate(samples: list[Tensor], pad_id: int) -> dict[str, Tensor]:
    """Token sequences -> ``input`` (B, N) and ``target`` (B, N), the input shifted by one,
    right-padded with ``pad_id`` (padded targets are ignored by the loss)."""
    longest = max(len(s) for s in samples)
    ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    for row, sample in enumerate(samples):
        ids[row, : len(sample)] = sample
    return {"input": ids[:, :-1], "target": ids[:, 1:]}
