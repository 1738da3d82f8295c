"""Text for masked language modelling: reading corpora, the built-in corpus, the dataset and the
collation that pads a batch and corrupts it (``masking.mask_tokens``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.masked_lm.masking import mask_tokens
from tasks.translation.data import read_lines, synthetic_corpus
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)


def read_corpus(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file (one sentence, or one line of prose, each).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not UTF-8 (the file and line are named), or the file holds no text.
    """
    lines = [line for line in read_lines(path) if line]
    if not lines:
        raise ValueError(f"text file {path} holds no text (it is empty or all its lines are blank)")
    return lines


def synthetic_text(seed: int, num_train: int, num_eval: int) -> dict[str, list[str]]:
    """The English side of the built-in number corpus ("We buy twenty-one cats in the
    garden."): its fixed grammar makes most masked words predictable from the others."""
    return {split: src for split, (src, _) in synthetic_corpus(seed, num_train, num_eval).items()}


class TextDataset(Dataset):
    """Token ids of sentences (without eos). A sample is ``{"index", "ids", "train"}``;
    ``train`` tells the collation to draw fresh masks (evaluation masks are fixed)."""

    def __init__(self, ids: list[list[int]], train: bool) -> None:
        self.ids, self.train = ids, train

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "ids": self.ids[i], "train": self.train}


@dataclass
class Masker:
    """Pads samples into a batch and corrupts it the BERT way.

    Attributes:
        mask_id: the id of [MASK].
        random_low: the first ordinary piece id (random replacements are drawn from
            [random_low, vocab_size)).
        vocab_size: number of ids.
        mask_prob, mask_token_prob, random_token_prob: as in ``mask_tokens``.
        word_starts: (vocab_size,) True at word-initial pieces for whole-word masking, or None.
        seed: evaluation masks are drawn from ``seed`` + the first sample index of the batch,
            so every evaluation of a split sees the same masks.
    """

    mask_id: int
    random_low: int
    vocab_size: int
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    word_starts: Tensor | None = None
    seed: int = 0

    def __call__(self, samples: Sequence[dict]) -> dict:
        """Samples -> ``input`` (B, N) corrupted ids with eos, ``labels`` (B, N) (the original
        id where a prediction is due, else ``IGNORE``), ``lengths`` (B,) and ``index`` (B,)."""
        rows = [s["ids"] + [EOS_ID] for s in samples]
        ids = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        special = (ids == PAD_ID) | (ids == BOS_ID) | (ids == EOS_ID) | (ids == self.mask_id)
        generator = None  # training: fresh masks from the global RNG (saved in checkpoints)
        if not samples[0]["train"]:
            generator = torch.Generator().manual_seed(self.seed + samples[0]["index"])
        starts = self.word_starts[ids] if self.word_starts is not None else None
        inputs, labels = mask_tokens(
            ids, ~special, self.mask_id, (self.random_low, self.vocab_size), self.mask_prob,
            self.mask_token_prob, self.random_token_prob, starts, generator,
        )
        return {
            "input": inputs, "labels": labels,
            "lengths": torch.tensor([len(r) for r in rows]),
            "index": torch.tensor([s["index"] for s in samples]),
        }  # fmt: skip
