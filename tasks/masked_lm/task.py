"""The masked language modelling task: sentences -> sentencepiece ids (with a [MASK] piece) ->
BERT corruption -> cross-entropy on the chosen tokens; ``predict`` fills in [MASK]s.

Recipe ``data``: dataset "synthetic" (the English side of the built-in number corpus) or "text"
(UTF-8 files, one sentence per line, named in ``options.train_files`` relative to ``root``),
``vocab_size`` (default 8000), ``max_samples`` (first N training lines), ``val_fraction`` and
``options`` (``MaskedLMOptions``).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import Batch, Task, iterate, register_task
from tasks.masked_lm.data import Masker, TextDataset, read_corpus, synthetic_text
from tasks.masked_lm.masking import IGNORE, check_probabilities
from tasks.options import setting
from tasks.translation.tokenizer import EOS_ID, PAD_ID, UNK_ID, Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "spm.model"
MASK = "[MASK]"


@dataclass
class MaskedLMOptions:
    """``data.options`` of the masked LM task."""

    # dataset "text": files under data.root (or absolute paths)
    train_files: tuple[str, ...] | None = None
    val_files: tuple[str, ...] | None = None  # None: data.val_fraction of the training lines
    # The files the sentencepiece vocabulary is trained on (default: train_files). A translation
    # fine-tune reuses this vocabulary, so train it on both of its languages (train.en, train.de).
    vocab_files: tuple[str, ...] | None = None
    tokenizer: str | None = None  # an existing .model with a [MASK] piece, instead of training
    vocab_size: int | None = setting(None, ge=1)  # sentencepiece pieces at most (None: 8000)
    model_type: Literal["bpe", "unigram"] = "bpe"  # sentencepiece
    character_coverage: float = setting(1.0, gt=0, le=1)
    max_len: int = setting(128, ge=2)  # tokens per line, eos included; longer lines are cut
    mask_prob: float = setting(0.15, gt=0, lt=1)  # share of the tokens (or words) predicted
    mask_token_prob: float = setting(0.8, ge=0, le=1)  # of those, replaced by [MASK]
    random_token_prob: float = setting(0.1, ge=0, le=1)  # a random piece; the rest are kept
    whole_word: bool = False  # choose whole words (every piece of a word together)
    num_samples: int = setting(4000, ge=1, datasets=("synthetic",))  # training sentences
    num_eval: int = setting(300, ge=1, datasets=("synthetic",))  # val and test sentences each

    def __post_init__(self) -> None:
        check_probabilities(self.mask_prob, self.mask_token_prob, self.random_token_prob)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> MaskedLMOptions:
        """Check ``data.options`` given as a mapping (the recipe checker builds the dataclass
        itself): an unknown key or a bad value raises ValueError naming it."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(valid)}"
                raise ValueError(f"unknown masked_lm option 'data.options.{key}'{hint}")
        files = ("train_files", "val_files", "vocab_files")
        options = {k: (v,) if k in files and isinstance(v, str) else v for k, v in options.items()}
        opts = cls(**options)
        if opts.max_len < 2:
            raise ValueError(f"data.options.max_len must be at least 2 tokens, got {opts.max_len}")
        return opts


@register_task
class MaskedLMTask(Task):
    """BERT-style masked language modelling on the text core (``MaskedLanguageModel``)."""

    name: ClassVar[str] = "masked_lm"
    dataset_names = ("synthetic", "text")
    option_types = {"data.options": MaskedLMOptions}
    moved_keys = {"data.vocab_size": "data.options.vocab_size"}
    metric: ClassVar[str] = "loss"
    metric_mode: ClassVar[str] = "min"
    unit: ClassVar[str] = "masked_tokens"  # the loss is a mean over the predicted tokens

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        super().__init__(recipe, run_dir)
        raw = self.data.options  # the checked dataclass of a recipe, or a plain mapping
        self.options = raw if isinstance(raw, MaskedLMOptions) else (
            MaskedLMOptions.from_dict(dict(raw or {})))
        self.tokenizer: Tokenizer | None = None
        self._text: dict[str, list[str]] | None = None
        self.masker: Masker | None = None

    # -- data ---------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        if not self.data.root:
            raise ValueError(f"data.options names the file '{name}' but data.root is not set")
        return Path(self.data.root).expanduser() / path

    def _read(self, names: Sequence[str] | None, key: str) -> list[str]:
        if not names:
            raise ValueError(f"dataset 'text' needs data.options.{key} (a list of text files)")
        return [line for name in names for line in read_corpus(self._path(name))]

    def _read_text(self) -> dict[str, list[str]]:
        opts = self.options
        if self.data.dataset == "synthetic":
            text = synthetic_text(self.seed, opts.num_samples, opts.num_eval)
        elif self.data.dataset == "text":
            text = {"train": self._read(opts.train_files, "train_files")}
            if opts.val_files:
                text["val"] = self._read(opts.val_files, "val_files")
            else:  # hold out a seeded random part of the training lines
                lines = text["train"]
                order = list(range(len(lines)))
                random.Random(self.seed).shuffle(order)
                cut = max(1, int(len(order) * self.data.val_fraction))
                text["val"] = [lines[i] for i in sorted(order[:cut])]
                text["train"] = [lines[i] for i in sorted(order[cut:])]
        else:
            raise ValueError(
                f"unknown masked_lm dataset '{self.data.dataset}'; expected 'synthetic' or "
                f"'text' (UTF-8 files named in data.options.train_files)"
            )
        if self.data.max_samples is not None:
            text["train"] = text["train"][: self.data.max_samples]
        return text

    def _vocabulary(self) -> Tokenizer:
        """The given tokenizer, the run's own (resume), or one trained on the vocab files."""
        opts = self.options
        saved = self.run_dir / TOKENIZER_FILE if self.run_dir is not None else None
        if opts.tokenizer is not None:
            return check_mask_piece(Tokenizer.load(self._path(opts.tokenizer)), opts.tokenizer)
        if saved is not None and saved.is_file():  # a resumed run keeps its vocabulary
            logger.info("using the vocabulary in %s", saved)
            return check_mask_piece(Tokenizer.load(saved), saved)
        if opts.vocab_files:
            lines = self._read(opts.vocab_files, "vocab_files")
        else:
            lines = self._text["train"]
        tokenizer = Tokenizer.train(lines, opts.vocab_size or 8000, opts.model_type,
                                    opts.character_coverage, user_defined_symbols=[MASK])
        if saved is not None:
            tokenizer.save(saved)
        return tokenizer

    def prepare(self) -> dict[str, Any]:
        """Read the text and get the vocabulary; return ``vocab_size``, ``pad_id``, ``mask_id``."""
        self._text = self._read_text()
        self.tokenizer = self._vocabulary()
        self._build_masker()
        return {"vocab_size": len(self.tokenizer), "pad_id": PAD_ID,
                "mask_id": self.tokenizer.sp.piece_to_id(MASK)}

    def _build_masker(self) -> None:
        sp, opts = self.tokenizer.sp, self.options
        mask_id = sp.piece_to_id(MASK)
        starts = None
        if opts.whole_word:  # sentencepiece marks a word's first piece with "▁"
            pieces = [sp.id_to_piece(i) for i in range(len(self.tokenizer))]
            starts = torch.tensor([p.startswith("\u2581") for p in pieces])
        self.masker = Masker(
            mask_id, mask_id + 1, len(self.tokenizer), opts.mask_prob, opts.mask_token_prob,
            opts.random_token_prob, starts, self.seed,
        )

    def datasets(self) -> dict[str, Dataset]:
        """Tokenized splits; lines longer than ``max_len`` tokens (eos included) are cut."""
        if self._text is None or self.tokenizer is None:
            self.prepare()
        limit = self.options.max_len - 1
        out = {}
        for split, lines in self._text.items():
            ids = self.tokenizer.encode(lines)
            cut = sum(len(s) > limit for s in ids)
            if cut:
                logger.info("%s: cut %d of %d lines to %d tokens", split, cut, len(ids), limit)
            out[split] = TextDataset([s[:limit] for s in ids], train=split == "train")
        return out

    def collate(self, samples: list[dict]) -> Batch:
        return self._require_masker()(samples)

    def count(self, batch: Batch) -> int:
        """The predicted tokens of a batch (the loss is their mean)."""
        return int((batch["labels"] != IGNORE).sum())

    # -- model --------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the original tokens at the chosen positions; logs loss and acc (%)."""
        select = batch["labels"] != IGNORE
        logits = model(batch["input"], select).float()  # through the wrapper, for DDP
        target = batch["labels"][select]
        loss = F.cross_entropy(logits, target) if len(target) else logits.sum() * 0.0
        acc = (logits.argmax(-1) == target).float().mean().item() * 100 if len(target) else 0.0
        return loss, {"loss": loss.item(), "acc": acc}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``loss`` (mean cross-entropy of the predicted tokens), ``ppl`` and ``acc`` (% of them
        predicted right), on the fixed evaluation masks."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loss_sum, correct, n = 0.0, 0, 0
        for batch in iterate(loader, device):
            select = batch["labels"] != IGNORE
            logits = model(batch["input"], select).float()
            target = batch["labels"][select]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(-1) == target).sum())
            n += len(target)
        model.train(was_training)
        if n == 0:
            raise ValueError("cannot evaluate: the loader chose no token to predict")
        loss = loss_sum / n
        return {"loss": loss, "ppl": math.exp(min(loss, 50)), "acc": 100 * correct / n}

    @torch.no_grad()
    def fill_mask(
        self, model: nn.Module, texts: Sequence[str], top_k: int = 5
    ) -> list[list[list[tuple[str, float]]]]:
        """The ``top_k`` pieces and probabilities for every [MASK] of every text.

        Raises:
            ValueError: a text without [MASK], or ``top_k`` below 1.
        """
        tokenizer = self._require_tokenizer()
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        for text in texts:
            if MASK not in text:
                raise ValueError(f"the text {text!r} has no {MASK}: put {MASK} where a word "
                                 "is to be predicted")
        inner = getattr(model, "module", model)
        was_training = inner.training
        inner.eval()
        device = next(inner.parameters()).device
        mask_id = tokenizer.sp.piece_to_id(MASK)
        results = []
        for text in texts:
            # "is [MASK]" would encode as "▁is", "▁", "[MASK]"; training masked "▁riding" whole
            ids = tokenizer.encode([re.sub(r"\s+\[MASK\]", MASK, text)])[0]
            ids = ids[: inner.cfg.max_len - 1] + [EOS_ID]  # as in training
            x = torch.tensor([ids], device=device)
            logits = inner(x, x == mask_id).float()  # (masks, V)
            probs, top = logits.softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)
            results.append([[(show_piece(tokenizer, int(i)), float(p)) for p, i in zip(pr, tr)]
                            for pr, tr in zip(probs, top)])
        inner.train(was_training)
        return results

    def predict(self, model: nn.Module, inputs: Sequence[str], top_k: int = 5,
                **options: Any) -> list[str]:
        """Per text: the text, then one line per [MASK] with its top-k pieces and
        probabilities, then the text with each [MASK] filled by its best piece."""
        lines = []
        for text, masks in zip(inputs, self.fill_mask(model, inputs, top_k)):
            lines.append(text)
            for k, found in enumerate(masks, start=1):
                lines.append(f"  {MASK} {k}: " + ", ".join(f"{w} ({p:.3f})" for w, p in found))
            filled = text
            for found in masks:
                best = found[0][0]
                glue = "" if best.startswith("##") else " "
                filled = re.sub(r"\s*\[MASK\]", glue + best.removeprefix("##"), filled, count=1)
            lines.append(f"  best: {filled.strip()}")
        return lines

    # -- saved with the model -----------------------------------------------------------------
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("the masked_lm task has no vocabulary: call prepare() or "
                             "load_extra() with a saved model directory first")
        return self.tokenizer

    def _require_masker(self) -> Masker:
        if self.masker is None:
            self._require_tokenizer()
            self._build_masker()
        return self.masker

    def save_extra(self, directory: Path) -> dict[str, Any]:
        """Copy the sentencepiece model beside the saved model."""
        self._require_tokenizer().save(Path(directory) / TOKENIZER_FILE)
        return {"tokenizer": TOKENIZER_FILE, "vocab_size": len(self.tokenizer)}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        """Load the sentencepiece model that ``save_extra`` wrote."""
        name = (meta or {}).get("tokenizer", TOKENIZER_FILE)
        self.tokenizer = check_mask_piece(Tokenizer.load(Path(directory) / name), directory)


def check_mask_piece(tokenizer: Tokenizer, where: str | Path) -> Tokenizer:
    """``tokenizer`` if it has a [MASK] piece, else ValueError naming ``where`` it came from."""
    if tokenizer.sp.piece_to_id(MASK) == UNK_ID:
        raise ValueError(f"the sentencepiece model {where} has no {MASK} piece; train the "
                         "vocabulary with the masked_lm task (it adds one)")
    return tokenizer


def show_piece(tokenizer: Tokenizer, i: int) -> str:
    """A piece as a word ("▁riding" -> "riding"), or "##ing" for one that continues a word."""
    piece = tokenizer.sp.id_to_piece(i)
    return piece[1:] if piece.startswith("\u2581") else "##" + piece
