"""A joint sentencepiece vocabulary for both languages (Kudo and Richardson 2018).

Ids 0-3 are fixed to pad, bos, eos, unk, the ids ``Seq2SeqConfig`` expects.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from tasks.files import check_file

logger = logging.getLogger(__name__)

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MODEL_TYPES = ("bpe", "unigram")


class Tokenizer:
    """Text <-> token ids with a trained sentencepiece model.

    Args:
        model_proto: the serialized sentencepiece model (the bytes of a ``.model`` file).
        source: what the bytes are, for the message when they do not parse.

    Raises:
        ValueError: the bytes are not a sentencepiece model, or its special ids differ.
    """

    def __init__(self, model_proto: bytes, source: str = "the sentencepiece model") -> None:
        self.model_proto = model_proto
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError:  # sentencepiece's reason is a C++ source location
            raise ValueError(
                f"{source} is corrupt: it does not parse as a sentencepiece model"
            ) from None
        ids = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
            raise ValueError(
                f"sentencepiece model has pad/bos/eos/unk ids {ids}, expected "
                f"{(PAD_ID, BOS_ID, EOS_ID, UNK_ID)}"
            )

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        vocab_size: int = 8000,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
        user_defined_symbols: Sequence[str] = (),
        normalization_rule_name: str = "nmt_nfkc",
    ) -> Tokenizer:
        """Train a vocabulary on ``sentences`` (both languages for a joint vocabulary).

        ``vocab_size`` is an upper bound: a small corpus (the built-in one) gets fewer pieces.
        One thread, so that every process of a data-parallel run trains the same model.
        ``user_defined_symbols`` (e.g. ``["[MASK]"]``) get the ids right after unk, in order,
        and are always read as one piece, also inside text. ``normalization_rule_name``
        "identity" keeps text that is already normalised as it is, and leaves the ~240 kB
        NFKC table out of the model.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"unknown sentencepiece model_type '{model_type}'; expected {MODEL_TYPES}"
            )
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            hard_vocab_limit=False,  # vocab_size is a maximum, not an error on small corpora
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            user_defined_symbols=list(user_defined_symbols),
            normalization_rule_name=normalization_rule_name,
            num_threads=1,
            minloglevel=2,  # sentencepiece logs every EM step to stderr otherwise
        )
        tokenizer = cls(proto.getvalue())
        logger.info("trained a %s vocabulary of %d pieces", model_type, len(tokenizer))
        return tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a ``.model`` file."""
        path = check_file(path, "sentencepiece model")
        return cls(path.read_bytes(), source=f"sentencepiece model {path}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.model`` file atomically (temp file beside it, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(self.model_proto)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Sentences -> token ids, without bos/eos.

        Raises:
            ValueError: a text is not a str, or holds lone surrogates (bytes that were not
                UTF-8, decoded with ``surrogateescape``); sentencepiece's own message for
                both is "List elements must be str or bytes".
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"text {i} to encode is a {type(text).__name__}, not a str")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"text {i} to encode is not valid UTF-8 (it holds lone "
                                 "surrogates from undecodable bytes)") from None
        return self.sp.encode(texts)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Token ids -> detokenized sentences; pad, bos and eos are dropped."""
        special = (PAD_ID, BOS_ID, EOS_ID)
        return [self.sp.decode([i for i in seq if i not in special]) for seq in ids]
