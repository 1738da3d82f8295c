"""The recipe settings of the translation task: ``data.options``, ``tokenizer`` and ``decode``
(fairseq's task, bpe and generation groups)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tasks.options import setting

DATASETS = ("synthetic", "parallel")  # the built-in number corpus; {root}/{split}.{lang} files
PARALLEL = ("parallel",)
SYNTHETIC = ("synthetic",)


@dataclass
class TranslationData:
    """``data.options``: the languages, splits and batching of the parallel text."""

    src_lang: str | None = setting(None, datasets=PARALLEL)  # file suffixes: train.en, train.de
    tgt_lang: str | None = setting(None, datasets=PARALLEL)
    train_split: str = setting("train", datasets=PARALLEL)
    val_split: str | None = setting("val", datasets=PARALLEL)  # None: hold out val_fraction
    test_split: str | None = setting(None, datasets=PARALLEL)  # e.g. "test_2016_flickr"
    empty_lines: Literal["skip", "error"] = setting("skip", datasets=PARALLEL)
    num_samples: int = setting(4000, ge=1, datasets=SYNTHETIC)  # training pairs
    num_eval: int = setting(300, ge=1, datasets=SYNTHETIC)  # validation and test pairs each
    # "tokens": train.batch_size (and eval.batch_size) count the padded tokens of a batch
    batch_by: Literal["tokens", "sentences"] = "tokens"
    # tokens per side, EOS/BOS included: longer training pairs are dropped, longer evaluation
    # pairs truncated (the model's max_len bounds the positions, a separate setting)
    max_sentence_tokens: int | None = setting(100, ge=2)


@dataclass
class TranslationTokenizer:
    """``tokenizer``: the joint sentencepiece vocabulary, trained on the training pairs, or an
    existing one (``model``)."""

    vocab_size: int = setting(8000, ge=1)  # an upper bound: a small corpus yields fewer pieces
    # unigram segments the small, repetitive built-in corpus poorly (e.g. "I ch"), and BPE does
    # as well on Multi30k
    model_type: Literal["bpe", "unigram"] = "bpe"
    character_coverage: float = setting(1.0, gt=0, le=1)
    # an existing sentencepiece .model (ids 0-3 pad/bos/eos/unk), e.g. a masked LM's, used
    # instead of training one; the other settings are then unused
    model: str | None = None


@dataclass
class TranslationDecoding:
    """``decode``: greedy or beam search, at evaluation and in ``zoo translate``."""

    beam_size: int = setting(1, ge=1)  # 1: greedy search
    len_penalty: float = 1.0  # hypotheses ranked by log-prob / length ** len_penalty
    max_len_a: float = setting(1.2, ge=0)  # at most a * source length + b target tokens
    max_len_b: int = setting(10, ge=0)


MOVED = {
    "eval.beam_size": "decode.beam_size",
    "data.vocab_size": "tokenizer.vocab_size",
    "data.src_lang": "data.options.src_lang",
    "data.tgt_lang": "data.options.tgt_lang",
    "data.options.max_len": "data.options.max_sentence_tokens",
    "data.options.model_type": "tokenizer.model_type",
    "data.options.character_coverage": "tokenizer.character_coverage",
    **{f"data.options.{k}": f"decode.{k}" for k in ("len_penalty", "max_len_a", "max_len_b")},
}
