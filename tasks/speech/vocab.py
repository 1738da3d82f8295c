"""Output vocabularies for CTC: id 0 is the CTC blank (also the decoder's padding), id 1 the
end/start-of-sentence token of the attention decoder, then one id per character (``CharVocab``)
or per sentencepiece piece (``PieceVocab``, ``tokenizer.units``: bpe or unigram).

Transcripts are normalised before they are counted or encoded (``normalize_text``): Unicode NFKC,
lower case, hyphens and dashes become spaces, other punctuation except the apostrophe is dropped,
whitespace is collapsed. This is the usual ASR scoring convention (LibriSpeech-style text), so the
model is not asked to guess commas from audio. Digit strings ("419") are left as they are.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.files import check_file
from tasks.translation.tokenizer import MODEL_TYPES as PIECE_TYPES
from tasks.translation.tokenizer import UNK_ID, Tokenizer

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


class PieceVocab:
    """Sentencepiece pieces (BPE or unigram, Kudo and Richardson 2018) <-> ids, ESPnet's
    ``token_type: bpe``.

    Our id 0 is the CTC blank and id 1 the end of sentence, as in ``CharVocab``; sentencepiece's
    own ids 0-3 (pad, bos, eos, unk) are left out and its pieces follow, sentencepiece id ``i``
    being our id ``i - 2``. So the CTC head never scores unk: a transcript that would need it is
    an error in ``encode``, as a new character is for ``CharVocab``.

    Args:
        tokenizer: a sentencepiece model with ids 0-3 fixed to pad/bos/eos/unk.
        model_type: "bpe" or "unigram", the model's training algorithm.
    """

    blank_id = 0
    eos_id = 1
    OFFSET = 2  # sentencepiece id - our id: its 4 special ids give way to our 2

    def __init__(self, tokenizer: Tokenizer, model_type: str) -> None:
        if model_type not in PIECE_TYPES:
            raise ValueError(f"unknown sentencepiece model type {model_type!r}; expected one of "
                             f"{PIECE_TYPES}")
        self.tokenizer, self.model_type = tokenizer, model_type

    @classmethod
    def build(cls, texts: Sequence[str], vocab_size: int, model_type: str) -> PieceVocab:
        """Train on (already normalised) transcripts; ``vocab_size`` is the most ids, blank and
        EOS included (a small corpus yields fewer).

        Raises:
            ValueError: no text, or ``vocab_size`` too small for the texts' characters.
        """
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError("cannot train subword units: the training transcripts are empty")
        # every character is a piece of its own, and the space becomes sentencepiece's "▁"
        least = len(set("".join(texts)) - {" "}) + 1 + 2
        if vocab_size < least:
            raise ValueError(f"tokenizer.vocab_size {vocab_size} is too small: the training "
                             f"transcripts need at least {least} (one per character, blank, EOS)")
        # identity: the texts are normalised already (normalize_text), and the model stays small
        tokenizer = Tokenizer.train(texts, vocab_size + cls.OFFSET, model_type,
                                    normalization_rule_name="identity")
        return cls(tokenizer, model_type)

    def __len__(self) -> int:
        return len(self.tokenizer) - self.OFFSET

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PieceVocab) and other.model_type == self.model_type
                and other.tokenizer.model_proto == self.tokenizer.model_proto)

    def encode(self, text: str, utterance: str = "") -> list[int]:
        """Ids of a normalised transcript.

        Raises:
            ValueError: a character has no piece (it was not in the training transcripts);
                names it and ``utterance``.
        """
        ids = self.tokenizer.encode([text])[0]
        if UNK_ID in ids:  # every training character is a piece of its own: this one is new
            new = next((c for c in text if not c.isspace()
                        and self.tokenizer.sp.piece_to_id(c) == UNK_ID), text)
            where = f" of utterance {utterance}" if utterance else ""
            raise ValueError(f"character {new!r} in the transcript{where} ({text!r}) is not in "
                             f"the {self.model_type} vocabulary (nor in the training transcripts)")
        return [i - self.OFFSET for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids; the blank and end-of-sentence ids are skipped."""
        return self.tokenizer.decode([[i + self.OFFSET for i in ids if i >= 2]])[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in the saved model's config.json: the sentencepiece model
        itself, base64."""
        return {"type": "sentencepiece", "model_type": self.model_type,
                "model": base64.b64encode(self.tokenizer.model_proto).decode("ascii"),
                "normalization": NORMALIZATION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PieceVocab:
        """Inverse of ``to_dict``."""
        if d.get("type") != "sentencepiece" or not isinstance(d.get("model"), str):
            raise ValueError(f"not a sentencepiece vocabulary: {sorted(d)}")
        try:
            proto = base64.b64decode(d["model"], validate=True)
        except binascii.Error:
            raise ValueError("the sentencepiece vocabulary's model is not base64") from None
        return cls(Tokenizer(proto, "the stored sentencepiece vocabulary"), d.get("model_type"))


SpeechVocab = CharVocab | PieceVocab


def load_speech_vocab(d: dict[str, Any]) -> SpeechVocab:
    """A vocabulary from its ``to_dict`` form, of the type it names.

    Raises:
        ValueError: not a dict, or an unknown or malformed vocabulary.
    """
    loaders = {"char": CharVocab.from_dict, "sentencepiece": PieceVocab.from_dict}
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in loaders:
        raise ValueError(f"unknown speech vocabulary type {kind!r}; expected one of "
                         f"{sorted(loaders)}")
    return loaders[kind](d)
