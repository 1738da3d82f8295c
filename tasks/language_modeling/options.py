"""The recipe settings of the language-modelling task: ``data.options``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tasks.options import setting

DATASETS = ("synthetic", "text")


@dataclass
class LMData:
    """``data.options``: how the text is read, cut and tokenised."""

    mode: Literal["stream", "lines"] = "stream"  # blocks of one token stream, or one per line
    tokenizer: Literal["char", "sentencepiece"] = "char"
    block_size: int = setting(128, ge=1)  # input tokens per block (at most the model's max_len)
    vocab_size: int | None = setting(None, ge=1)  # sentencepiece pieces at most (None: 8000)
    model_type: Literal["bpe", "unigram"] = "bpe"  # sentencepiece
    character_coverage: float = setting(1.0, gt=0, le=1)  # sentencepiece
    src_lang: str | None = None  # a directory root: files {split}.{src_lang}, else {split}.txt
    train_split: str = "train"
    val_split: str | None = "val"  # None: the last data.val_fraction of the training text
    test_split: str | None = None
    eval_blocks: int | None = setting(None, ge=1)  # evaluate at most this many blocks (evenly)
    num_sentences: int = setting(4000, ge=1, datasets=("synthetic",))  # the grammar corpus


MOVED = {"data.vocab_size": "data.options.vocab_size", "data.src_lang": "data.options.src_lang"}
