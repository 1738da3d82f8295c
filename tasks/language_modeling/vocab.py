"""Vocabularies of the language models: characters, or sentencepiece pieces.

Both put pad, bos, eos, unk at ids 0-3 (the translation tokenizer's ids), so a ``GPTConfig``
fits either. A text stream is one sequence of ids: the character vocabulary spells newlines as
the character ``"\\n"``; the sentencepiece one (whose normaliser would turn a newline into a
space) encodes each line and writes EOS between lines, and decodes EOS back to a newline.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

logger = logging.getLogger(__name__)

NUM_SPECIAL = 4  # pad, bos, eos, unk
TOKENIZERS = ("char", "sentencepiece")


class CharVocab:
    """Characters <-> ids: ids 0-3 are pad, bos, eos, unk, then one id per character.

    Args:
        chars: the characters in id order; distinct single characters.
    """

    kind = "char"
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError(f"a vocabulary needs distinct single characters, got {self.chars!r}")
        self.index = {c: i + NUM_SPECIAL for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, text: str) -> CharVocab:
        """The sorted characters of ``text`` (the training text)."""
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars) + NUM_SPECIAL

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    def encode(self, text: str, strict: bool = True, what: str = "the prompt") -> list[int]:
        """Ids of ``text``, newlines included.

        Args:
            strict: a character outside the vocabulary raises; otherwise it becomes unk.
            what: how the error names the text.
        Raises:
            ValueError: with ``strict``, the first unknown character (named, with ``what``).
        """
        if not strict:
            return [self.index.get(c, UNK_ID) for c in text]
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} in {what} is not in the model's character vocabulary "
                f"of {len(self.chars)} characters ({''.join(self.chars)!r})"
            ) from None

    def encode_stream(self, text: str, strict: bool = True, what: str = "the prompt") -> list[int]:
        """Ids of a text stream; for characters the same as ``encode``."""
        return self.encode(text, strict, what)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids: EOS is a newline, the other special ids are dropped."""
        return "".join(
            self.chars[i - NUM_SPECIAL] if i >= NUM_SPECIAL else "\n" if i == EOS_ID else ""
            for i in ids
        )

    def newline_id(self) -> int | None:
        """The id that starts a line in a stream, or None when the text has no newline."""
        return self.index.get("\n")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in the saved model's config.json."""
        return {"type": "char", "chars": "".join(self.chars)}

    def save(self, directory: Path) -> dict[str, Any]:
        """Nothing to write: the characters live in the returned metadata."""
        return self.to_dict()


class PieceVocab:
    """A sentencepiece vocabulary (``tasks.translation.tokenizer.Tokenizer``) over text streams.

    Args:
        tokenizer: the trained sentencepiece model.
    """

    kind = "sentencepiece"
    file_name = "spm.model"
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def build(
        cls, text: str, vocab_size: int, model_type: str = "bpe", coverage: float = 1.0
    ) -> PieceVocab:
        """Train on the non-empty lines of ``text``."""
        lines = [line for line in text.split("\n") if line.strip()]
        return cls(Tokenizer.train(lines, vocab_size, model_type, coverage))

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PieceVocab) and other.tokenizer.model_proto == (
            self.tokenizer.model_proto
        )

    def encode(self, text: str, strict: bool = True, what: str = "the prompt") -> list[int]:
        """Ids of one line (unknown characters become unk: sentencepiece has no strict mode)."""
        ids = self.tokenizer.encode([text])[0]
        if strict and UNK_ID in ids:
            logger.warning("%s has characters outside the vocabulary; they read as unk", what)
        return ids

    def encode_stream(self, text: str, strict: bool = True, what: str = "the prompt") -> list[int]:
        """Ids of a multi-line text: its lines' ids with EOS between them."""
        ids: list[int] = []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(EOS_ID)
            ids += self.encode(line, strict, what)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids: EOS is a newline; pad, bos and unk are dropped."""
        lines, line = [], []
        for i in ids:
            if i == EOS_ID:
                lines.append(line)
                line = []
            elif i >= NUM_SPECIAL:
                line.append(i)
        lines.append(line)
        return "\n".join(self.tokenizer.decode(lines))

    def newline_id(self) -> int | None:
        return EOS_ID

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``spm.model`` into ``directory``; return the metadata that finds it."""
        self.tokenizer.save(Path(directory) / self.file_name)
        return {"type": "sentencepiece", "file": self.file_name}


Vocab = CharVocab | PieceVocab


def load_vocab(meta: dict[str, Any], directory: str | os.PathLike) -> Vocab:
    """The vocabulary that ``save`` described with ``meta``, its files in ``directory``.

    Raises:
        ValueError: ``meta`` describes no vocabulary this module writes.
    """
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind == "char" and isinstance(meta.get("chars"), str):
        return CharVocab(meta["chars"])
    if kind == "sentencepiece":
        return PieceVocab(Tokenizer.load(Path(directory) / meta.get("file", PieceVocab.file_name)))
    raise ValueError(f"not a language-model vocabulary: {meta!r}")


VOCAB_FILE = "vocab.json"  # in the run directory: what a resumed run reloads


def save_run_vocab(vocab: Vocab, run_dir: Path) -> None:
    """Keep the vocabulary in the run directory (``vocab.json``, plus ``spm.model``)."""
    meta = vocab.save(run_dir)
    tmp = run_dir / f".{VOCAB_FILE}.tmp"
    tmp.write_text(json.dumps(meta) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / VOCAB_FILE)


def load_run_vocab(run_dir: Path) -> Vocab | None:
    """The vocabulary ``save_run_vocab`` kept, or None when there is none."""
    path = run_dir / VOCAB_FILE
    if not path.is_file():
        return None
    return load_vocab(json.loads(path.read_text(encoding="utf-8")), run_dir)
