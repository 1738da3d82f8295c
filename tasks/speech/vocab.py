"""Character vocabulary for CTC: id 0 is the CTC blank (also the decoder's padding), id 1 the
end/start-of-sentence token of the attention decoder, then one id per character.

Transcripts are normalised before they are counted or encoded (``normalize_text``): Unicode NFKC,
lower case, hyphens and dashes become spaces, other punctuation except the apostrophe is dropped,
whitespace is collapsed. This is the usual ASR scoring convention (LibriSpeech-style text), so the
model is not asked to guess commas from audio. Digit strings ("419") are left as they are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.files import check_file

BLANK, EOS = "<blank>", "<eos>"
NORMALIZATION = "nfkc-lower-nopunct"  # stored with the vocabulary; names the rule above

_DASHES = re.compile(r"[-\u2010-\u2015_/]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Apply the transcript normalisation described in the module docstring."""
    text = _DASHES.sub(" ", unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'"))
    kept = "".join(
        c for c in text if c == "'" or c.isspace() or not unicodedata.category(c).startswith("P")
    )
    return _SPACES.sub(" ", kept).strip()


def read_text_file(path: str | Path, what: str = "text file") -> str:
    """The whole of a UTF-8 text file.

    Args:
        what: how error messages name the file ("LM text file", "lexicon file").
    Raises:
        ValueError: the file cannot be read or is not UTF-8 (named).
    """
    try:
        return check_file(path, what).read_text(encoding="utf-8")  # not a directory, a device
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 (byte {e.start})") from None
    except FileNotFoundError:
        raise ValueError(f"cannot read {what} {path}: it does not exist") from None
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_sentences(
    paths: Sequence[str | Path], alphabet: str, what: str = "text file"
) -> tuple[list[str], int]:
    """Normalised non-empty lines of UTF-8 text files, one sentence per line, in order.

    Lines with characters outside ``alphabet`` after normalisation are left out and counted.

    Args:
        what: how error messages name a file ("LM text file" for the LM's texts).
    Returns:
        (sentences, lines left out).
    Raises:
        ValueError: a file cannot be read or is not UTF-8 (named).
    """
    kept, dropped = [], 0
    allowed = set(alphabet)
    for path in paths:
        for line in read_text_file(path, what).splitlines():
            text = normalize_text(line)
            if not text:
                continue
            if set(text) <= allowed:
                kept.append(text)
            else:
                dropped += 1
    return kept, dropped


class CharVocab:
    """Characters <-> ids.

    Args:
        chars: the characters, in id order after the two special tokens; no duplicates.
    """

    blank_id = 0
    eos_id = 1

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        bad = [c for c in self.chars if len(c) != 1]
        if bad or len(set(self.chars)) != len(self.chars):
            raise ValueError(f"a vocabulary needs distinct single characters, got {self.chars!r}")
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharVocab:
        """The sorted set of characters of (already normalised) ``texts``."""
        return cls(sorted(set().union(*map(set, texts))))

    def __len__(self) -> int:
        return len(self.chars) + 2

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    def encode(self, text: str, utterance: str = "") -> list[int]:
        """Ids of a normalised transcript.

        Raises:
            ValueError: a character is not in the vocabulary; names it and ``utterance``.
        """
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            where = f" of utterance {utterance}" if utterance else ""
            raise ValueError(
                f"character {e.args[0]!r} in the transcript{where} ({text!r}) is not in the "
                f"vocabulary {''.join(self.chars)!r} (tokenizer.characters can set them)"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids; the blank and end-of-sentence ids are skipped."""
        return "".join(self.chars[i - 2] for i in ids if i >= 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in the saved model's config.json."""
        return {"type": "char", "chars": "".join(self.chars), "normalization": NORMALIZATION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharVocab:
        """Inverse of ``to_dict``."""
        if d.get("type") != "char" or not isinstance(d.get("chars"), str):
            raise ValueError(f"not a character vocabulary: {d!r}")
        return cls(d["chars"])
