"""The causal language-modelling task: a text corpus -> a character or sentencepiece vocabulary
-> blocks of a token stream (or one line per sample) -> next-token cross-entropy; evaluation by
loss, perplexity and bits per character; generation with sampling and stop strings."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import Batch, Task, iterate, register_task
from tasks.language_modeling import data as D
from tasks.language_modeling.options import DATASETS, MOVED, LMData
from tasks.language_modeling.sampling import (
    Continuations,
    SamplingOptions,
    continuation_decoder,
    sample,
)
from tasks.language_modeling.vocab import (
    TOKENIZERS,
    CharVocab,
    PieceVocab,
    Vocab,
    load_run_vocab,
    load_vocab,
    save_run_vocab,
)
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

logger = logging.getLogger(__name__)

# data.options of this task and their defaults.
OPTIONS: dict[str, Any] = {
    "mode": "stream",  # "stream": blocks of one token stream; "lines": one sample per line
    "tokenizer": "char",  # "char" or "sentencepiece" (vocab_size pieces at most)
    "block_size": 128,  # input tokens per block (at most the model's max_len)
    "model_type": "bpe",  # sentencepiece "bpe" or "unigram"
    "character_coverage": 1.0,
    "train_split": "train",  # a directory root: files {split}.{src_lang or "txt"}
    "val_split": "val",  # None: the last data.val_fraction of the training text
    "test_split": None,
    "eval_blocks": None,  # evaluate on at most this many blocks, evenly spaced (None: all)
    "num_sentences": 4000,  # synthetic: sentences of the grammar corpus
    "vocab_size": None,  # sentencepiece pieces at most (None: 8000)
    "src_lang": None,  # a directory root: files {split}.{src_lang}, else {split}.txt
}
_CHOICES = {"mode": D.MODES, "tokenizer": TOKENIZERS, "model_type": ("bpe", "unigram")}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``data.options`` merged over the defaults; an unknown key or bad value raises ValueError."""
    for key, value in options.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, list(OPTIONS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(OPTIONS)}"
            raise ValueError(f"unknown language_modeling option 'data.options.{key}'{hint}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"data.options.{key} must be one of {_CHOICES[key]}, got {value!r}")
    merged = {**OPTIONS, **options}
    for key in ("block_size", "eval_blocks", "num_sentences"):
        value = merged[key]
        if (value is not None or key != "eval_blocks") and (type(value) is not int or value < 1):
            raise ValueError(f"data.options.{key} must be a positive integer, got {value!r}")
    return merged


@register_task
class LanguageModelingTask(Task):
    """Causal language modelling (next-token prediction).

    ``recipe.data``: dataset "synthetic" (a built-in grammar corpus) or "text" (``root`` a
    UTF-8 file, whose last ``val_fraction`` is validation as in nanoGPT, or a directory of
    ``{split}.{src_lang}`` / ``{split}.txt`` files), vocab_size (sentencepiece), max_samples
    (training lines, or characters of a stream), options (``OPTIONS``).
    """

    name: ClassVar[str] = "language_modeling"
    dataset_names = DATASETS
    option_types = {"data.options": LMData}
    moved_keys = MOVED
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    unit: ClassVar[str] = "tokens"

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        super().__init__(recipe, run_dir)
        raw = self.data.options  # the checked dataclass of a recipe, or a plain mapping
        if dataclasses.is_dataclass(raw):
            self.options = dataclasses.asdict(raw)
        else:
            self.options = check_options(dict(raw or {}))
        self.mode, self.block_size = self.options["mode"], self.options["block_size"]
        self.label_smoothing = float(recipe.train.label_smoothing)
        self.vocab: Vocab | None = None
        self._text: dict[str, str] | None = None
        self._checked_context = False
        self.trained_block: int | None = None  # the block size of a loaded model's training

    # -- data ---------------------------------------------------------------------------------
    def _split(self, text: str) -> tuple[str, str]:
        split = D.split_stream if self.mode == "stream" else D.split_lines
        return split(text, self.data.val_fraction)

    def _read_text(self) -> dict[str, str]:
        data, opts = self.data, self.options
        if data.dataset == "synthetic":
            corpus = D.synthetic_corpus(self.seed, opts["num_sentences"])
            text = dict(zip(("train", "val"), self._split(corpus)))
        elif data.dataset == "text":
            text = self._read_files()
        else:
            raise ValueError(
                f"unknown language_modeling dataset '{data.dataset}'; expected 'synthetic' or "
                "'text' (data.root: a text file or a directory of {split}.txt files)"
            )
        if data.max_samples is not None:
            if self.mode == "lines":
                text["train"] = "\n".join(D.text_lines(text["train"])[: data.max_samples])
            else:
                text["train"] = text["train"][: data.max_samples]
        return text

    def _read_files(self) -> dict[str, str]:
        data, opts = self.data, self.options
        if not data.root:
            raise ValueError("dataset 'text' needs data.root (a text file or a directory)")
        root = Path(data.root)
        if root.is_file() or not root.exists():
            return dict(zip(("train", "val"), self._split(D.read_corpus(root))))
        suffix = opts["src_lang"] or "txt"
        read = lambda split: D.read_corpus(root / f"{split}.{suffix}")
        text = {"train": read(opts["train_split"])}
        if opts["val_split"]:
            text["val"] = read(opts["val_split"])
        else:
            text["train"], text["val"] = self._split(text["train"])
        if opts["test_split"]:
            text["test"] = read(opts["test_split"])
        return text

    def prepare(self) -> dict[str, Any]:
        """Read the text and build the vocabulary from the training split (a resumed run, or
        a saved model given to ``load_extra`` first, keeps its own)."""
        self._text = self._read_text()
        kept = load_run_vocab(self.run_dir) if self.run_dir is not None else None
        if self.vocab is None and kept is not None:
            self.vocab = kept
            logger.info("using the vocabulary in %s", self.run_dir)
        elif self.vocab is None:
            self.vocab = self._build_vocab(self._text["train"])
            if self.run_dir is not None:
                save_run_vocab(self.vocab, self.run_dir)
        return {"vocab_size": len(self.vocab), "pad_id": PAD_ID, "bos_id": BOS_ID,
                "eos_id": EOS_ID}  # fmt: skip

    def _build_vocab(self, text: str) -> Vocab:
        opts = self.options
        if opts["tokenizer"] == "char":
            body = text if self.mode == "stream" else "".join(D.text_lines(text))
            vocab: Vocab = CharVocab.build(body)
        else:
            vocab = PieceVocab.build(text, opts["vocab_size"] or 8000, opts["model_type"],
                                     opts["character_coverage"])  # fmt: skip
        logger.info("%s vocabulary of %d tokens", vocab.kind, len(vocab))
        return vocab

    def datasets(self) -> dict[str, Dataset]:
        """Tokenized splits: training blocks start anywhere; evaluation blocks tile the text."""
        if self._text is None or self.vocab is None:
            self.prepare()
        return {split: self._dataset(split, text) for split, text in self._text.items()}

    def _dataset(self, split: str, text: str) -> Dataset:
        vocab, block = self._require_vocab(), self.block_size
        if self.mode == "lines":
            lines = [vocab.encode(line, strict=False) for line in D.text_lines(text)]
            self._log_unknown(split, [i for ids in lines for i in ids])
            return D.LineDataset(lines, block, BOS_ID, EOS_ID)
        ids = vocab.encode_stream(text, strict=False)
        self._log_unknown(split, ids)
        if len(ids) <= block:
            raise ValueError(
                f"the {split} text has {len(ids)} tokens, too few for one block of "
                f"data.options.block_size {block} + 1; lower the block size or add text"
            )
        stream = torch.tensor(ids, dtype=torch.long)
        if split == "train":
            return D.BlockDataset(stream, block)
        return D.BlockDataset.contiguous(stream, block, self.options["eval_blocks"])

    @staticmethod
    def _log_unknown(split: str, ids: list[int]) -> None:
        unknown = ids.count(UNK_ID)
        if unknown:
            logger.info("%s: %d of %d tokens are outside the vocabulary (unk)", split, unknown,
                        len(ids))  # fmt: skip

    def collate(self, samples: list[Tensor]) -> Batch:
        return D.collate(samples, PAD_ID)

    def count(self, batch: Batch) -> int:
        """Target tokens (padding excluded)."""
        return int((batch["target"] != PAD_ID).sum())

    # -- model --------------------------------------------------------------------------------
    def _check_context(self, model: nn.Module) -> None:
        if self._checked_context:
            return
        inner = getattr(model, "module", model)  # DDP wraps the model
        if self.block_size > inner.cfg.max_len:
            raise ValueError(
                f"data.options.block_size {self.block_size} is longer than the "
                f"{inner.cfg.max_len} positions of the model (its max_len); lower the block "
                f"size or set model.overrides.max_len"
            )
        self._checked_context = True

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Mean next-token cross-entropy over the non-pad targets (label smoothing from
        ``train.label_smoothing``); logs loss and, when smoothing, the plain nll."""
        self._check_context(model)
        logits = model(batch["input"]).float().flatten(0, 1)  # (B*N, V), through DDP
        target = batch["target"].flatten()
        loss = F.cross_entropy(
            logits, target, ignore_index=PAD_ID, label_smoothing=self.label_smoothing
        )
        logs = {"loss": loss.item()}
        if self.label_smoothing:
            logs["nll"] = F.cross_entropy(logits, target, ignore_index=PAD_ID).item()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean next-token nll over every target of the loader (``loss``, in nats), its
        perplexity, and for character vocabularies bits per character (``bpc``)."""
        self._check_context(model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        nll = tokens = 0.0
        for batch in iterate(loader, device):
            logits = model(batch["input"]).float().flatten(0, 1)
            target = batch["target"].flatten()
            nll += F.cross_entropy(logits, target, ignore_index=PAD_ID, reduction="sum").item()
            tokens += int((target != PAD_ID).sum())
        model.train(was_training)
        loss = nll / max(tokens, 1)
        metrics = {"loss": loss, "ppl": math.exp(min(loss, 50))}
        if self._require_vocab().kind == "char":
            metrics["bpc"] = loss / math.log(2)
        return metrics

    # -- generation ---------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids a generation starts from: BOS and the line in line mode; in a stream the
        prompt's ids, or a newline when the prompt is empty.

        Raises:
            ValueError: a character outside a character vocabulary (named).
        """
        vocab = self._require_vocab()
        if self.mode == "lines":
            return [BOS_ID, *vocab.encode(prompt, strict=True)]
        ids = vocab.encode_stream(prompt, strict=True) if prompt else []
        if not ids:
            start = vocab.newline_id()
            if start is None:
                raise ValueError("the prompt is empty and the vocabulary has no newline to start "
                                 "from; give a prompt")  # fmt: skip
            ids = [start]
        return ids

    def generate(
        self,
        model: nn.Module,
        prompt: str,
        options: SamplingOptions | None = None,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """Continue ``prompt``; return ``options.num_samples`` continuations (without the
        prompt, each cut before its first stop string or EOS).

        Args:
            on_text: called as ``on_text(sample, text)`` with each piece of text as it is made.
        """
        options = options or SamplingOptions()
        vocab, inner = self._require_vocab(), getattr(model, "module", model)
        ids = self.prompt_ids(prompt)
        banned = [PAD_ID, BOS_ID, UNK_ID]
        if self.mode == "stream" and vocab.kind == "char":
            banned.append(EOS_ID)  # a character stream never holds EOS
        eos = EOS_ID if self.mode == "lines" else None
        texts = Continuations(options, continuation_decoder(vocab, ids), eos, on_text)
        was_training = inner.training
        inner.eval()
        context = self.trained_block or self.block_size  # the positions training reached
        for step in sample(inner, ids, options, banned, eos, context=context):
            for i, token in enumerate(step.tolist()):
                texts.add(i, token)
            if texts.all_done:
                break
        inner.train(was_training)
        return texts.finish()

    def predict(
        self, model: nn.Module, inputs: Sequence[str], sampling: SamplingOptions | None = None,
        on_text: Callable[[int, str], None] | None = None, **options: Any,
    ) -> list[str] | list[list[str]]:
        """The continuation of each prompt, or with ``num_samples`` > 1 a list of them each
        (``sampling``, else ``options`` as its fields; ``on_text`` as in `generate`)."""
        sampling = sampling or SamplingOptions(**options)
        found = [self.generate(model, prompt, sampling, on_text) for prompt in inputs]
        return [texts[0] for texts in found] if sampling.num_samples == 1 else found

    def check_input(self, model: nn.Module, item: str) -> str | None:
        """Why ``item`` cannot be a prompt (a character outside a character vocabulary, or an
        empty prompt without a newline to start from), else None."""
        try:
            self.prompt_ids(item)
        except ValueError as e:
            return str(e)
        return None

    @classmethod
    def example_input(cls, cfg: Any) -> tuple[tuple[Any, ...], str]:
        """A full context of ``cfg.max_len`` tokens; see `Task.example_input`."""
        ids = torch.full((1, cfg.max_len), 4)  # 4: the first id after the special tokens
        return (ids,), f"{cfg.max_len} tokens"

    # -- saved with the model -----------------------------------------------------------------
    def _require_vocab(self) -> Vocab:
        if self.vocab is None:
            raise ValueError("the language_modeling task has no vocabulary: call prepare() or "
                             "load_extra() with a saved model directory first")  # fmt: skip
        return self.vocab

    def save_extra(self, directory: Path) -> dict[str, Any]:
        """The vocabulary (characters in the metadata, or ``spm.model`` beside the model), the
        mode and the block size (generation sees at most the context it was trained on)."""
        vocab = self._require_vocab().save(Path(directory))
        return {"vocab": vocab, "mode": self.mode, "block_size": self.block_size}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        if not isinstance(meta, dict) or "vocab" not in meta:
            raise ValueError(f"the saved model in {directory} has no language-model vocabulary "
                             "in its config.json (task_meta.vocab)")  # fmt: skip
        self.vocab = load_vocab(meta["vocab"], directory)
        self.mode = meta.get("mode", self.mode)
        self.trained_block = meta.get("block_size")

