"""The translation task: parallel text -> joint sentencepiece vocabulary -> token-budget
batches -> label-smoothed cross-entropy; evaluation by beam search and sacreBLEU."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import Batch, Task, iterate, register_task
from tasks.translation import data as D
from tasks.translation.decoding import Hypothesis, search, unwrap
from tasks.translation.metrics import corpus_scores, signatures
from tasks.translation.options import (
    DATASETS,
    MOVED,
    TranslationData,
    TranslationDecoding,
    TranslationTokenizer,
)
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "spm.model"
EXAMPLE_TOKENS = 32  # the example input of `zoo info`: a sentence of Multi30k's length


@register_task
class TranslationTask(Task):
    """Machine translation with a shared source/target sentencepiece vocabulary.

    ``recipe.data``: dataset "synthetic" (built-in numbers corpus) or "parallel" (files
    ``{root}/{split}.{src_lang}`` and ``.{tgt_lang}``), max_samples (first N training pairs),
    options (`TranslationData`); ``recipe.tokenizer`` (`TranslationTokenizer`),
    ``recipe.decode`` (`TranslationDecoding`), ``recipe.train.label_smoothing``.
    """

    name: ClassVar[str] = "translation"
    metric: ClassVar[str] = "bleu"
    metric_mode: ClassVar[str] = "max"
    metrics: ClassVar[tuple[str, ...]] = ("bleu", "bleu_lc", "chrf", "loss", "ppl")
    unit: ClassVar[str] = "tokens"
    dataset_names = DATASETS
    option_types = {
        "data.options": TranslationData,
        "tokenizer": TranslationTokenizer,
        "decode": TranslationDecoding,
    }
    moved_keys = MOVED

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        super().__init__(recipe, run_dir)
        self.opts: TranslationData = self.section("data.options")
        self.tokenizer_options: TranslationTokenizer = self.section("tokenizer")
        self.decode: TranslationDecoding = self.section("decode")
        self.label_smoothing = float(recipe.train.label_smoothing)
        self.tokenizer: Tokenizer | None = None
        self._text: dict[str, D.Pairs] | None = None
        self._logged_signature = False
        self.last_hypotheses: list[str] | None = None  # of the last evaluate, for reports

    # -- data ---------------------------------------------------------------------------------
    def _read_text(self) -> dict[str, D.Pairs]:
        opts = self.opts
        if self.data.dataset == "synthetic":
            text = D.synthetic_corpus(self.seed, opts.num_samples, opts.num_eval)
        elif self.data.dataset == "parallel":
            text = self._read_files()
        else:
            raise ValueError(
                f"unknown translation dataset '{self.data.dataset}'; expected 'synthetic' or "
                f"'parallel' ({{root}}/{{split}}.{{lang}} text files)"
            )
        if self.data.max_samples is not None:
            text["train"] = tuple(side[: self.data.max_samples] for side in text["train"])
        return text

    def _read_files(self) -> dict[str, D.Pairs]:
        data, opts = self.data, self.opts
        if not data.root or not opts.src_lang or not opts.tgt_lang:
            raise ValueError("dataset 'parallel' needs data.root, data.options.src_lang and "
                             "data.options.tgt_lang")
        root = Path(data.root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data root {root} is not a directory (relative to {Path.cwd()})"
            )

        def read(split: str) -> D.Pairs:
            src, tgt = (root / f"{split}.{opts.src_lang}", root / f"{split}.{opts.tgt_lang}")
            return D.read_parallel(src, tgt, opts.empty_lines)

        text = {"train": read(opts.train_split)}
        if opts.val_split:
            text["val"] = read(opts.val_split)
        else:  # hold out a seeded random part of the training pairs
            order = list(range(len(text["train"][0])))
            random.Random(self.seed).shuffle(order)
            cut = max(1, int(len(order) * data.val_fraction))
            pick = lambda idx: tuple([side[i] for i in sorted(idx)] for side in text["train"])
            text["val"], text["train"] = pick(order[:cut]), pick(order[cut:])
        if opts.test_split:
            text["test"] = read(opts.test_split)
        return text

    def prepare(self) -> dict[str, Any]:
        """Read the text and train the joint vocabulary (or read ``tokenizer.model``, or reload
        the run directory's)."""
        self._text = self._read_text()
        path = self.run_dir / TOKENIZER_FILE if self.run_dir is not None else None
        if path is not None and path.is_file():  # a resumed run keeps its vocabulary
            self.tokenizer = Tokenizer.load(path)
            logger.info("using the vocabulary in %s", path)
        elif self.tokenizer_options.model is not None:  # a given vocabulary, e.g. an MLM's
            self.tokenizer = Tokenizer.load(self.tokenizer_options.model)
            logger.info("using the vocabulary %s", self.tokenizer_options.model)
            if path is not None:
                self.tokenizer.save(path)
        else:
            src, tgt = self._text["train"]
            options = self.tokenizer_options
            self.tokenizer = Tokenizer.train(
                [*src, *tgt], options.vocab_size, options.model_type, options.character_coverage
            )
            if path is not None:
                self.tokenizer.save(path)
        return {"vocab_size": len(self.tokenizer), "pad_id": PAD_ID, "bos_id": BOS_ID,
                "eos_id": EOS_ID}

    def datasets(self) -> dict[str, Dataset]:
        """Tokenized splits. Training pairs longer than ``max_sentence_tokens`` are dropped;
        evaluation pairs are kept whole in text (the BLEU reference) and truncated in ids."""
        if self._text is None or self.tokenizer is None:
            self.prepare()
        return {split: self._tokenize(split, *pairs) for split, pairs in self._text.items()}

    def _tokenize(self, split: str, src: list[str], tgt: list[str]) -> D.ParallelDataset:
        src_ids, tgt_ids = self.tokenizer.encode(src), self.tokenizer.encode(tgt)
        limit = self.opts.max_sentence_tokens
        if limit is not None:
            too_long = [max(len(s), len(t)) + 1 > limit for s, t in zip(src_ids, tgt_ids)]
            if any(too_long) and split == "train":
                keep = [i for i, bad in enumerate(too_long) if not bad]
                src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
                tgt = [tgt[i] for i in keep]
                logger.info("train: dropped %d of %d pairs longer than %d tokens",
                            sum(too_long), len(too_long), limit)
            elif any(too_long):
                src_ids = [s[: limit - 1] for s in src_ids]
                tgt_ids = [t[: limit - 1] for t in tgt_ids]
                logger.info("%s: truncated %d pairs to %d tokens (BLEU uses the full reference)",
                            split, sum(too_long), limit)
        return D.ParallelDataset(src_ids, tgt_ids, tgt)

    def collate(self, samples: list[dict]) -> Batch:
        return D.collate(samples)

    def batches(
        self, dataset: Dataset, batch_size: int, shuffle: bool, epoch_seed: int
    ) -> list[list[int]]:
        """With ``batch_by: tokens`` (default) ``batch_size`` is the most padded tokens per
        batch (rows x longest side); batches hold sentences of similar length."""
        if self.opts.batch_by == "sentences":
            return super().batches(dataset, batch_size, shuffle, epoch_seed)
        return D.token_batches(dataset.sizes, batch_size, shuffle, epoch_seed)

    def count(self, batch: Batch) -> int:
        """Target tokens (EOS included) in a batch."""
        return int((batch["tgt_out"] != PAD_ID).sum())

    # -- model --------------------------------------------------------------------------------
    def _token_losses(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Label-smoothed and plain NLL, each summed over the non-pad targets, and their count.

        logits (B, T, V), target (B, T). Smoothing spreads eps uniformly over the vocabulary,
        as ``F.cross_entropy(label_smoothing=eps)`` does.
        """
        lprobs = logits.float().log_softmax(dim=-1)  # float32 even under bf16 autocast
        mask = target != PAD_ID
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
        smooth = -lprobs.mean(dim=-1)  # (B, T)
        eps = self.label_smoothing
        loss = ((1 - eps) * nll + eps * smooth)[mask].sum()
        return loss, nll[mask].sum(), mask.sum()

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Label-smoothed cross-entropy per target token; logs loss, nll and ppl (the engine
        counts the tokens with ``count``)."""
        logits = model(batch["src"], batch["tgt_in"])  # through the wrapper, for DDP
        loss, nll, tokens = self._token_losses(logits, batch["tgt_out"])
        loss, nll_value = loss / tokens, (nll / tokens).item()
        return loss, {"loss": loss.item(), "nll": nll_value, "ppl": math.exp(min(nll_value, 50))}

    def _search_options(self) -> dict[str, float]:
        d = self.decode
        return {"len_penalty": d.len_penalty, "max_len_a": d.max_len_a, "max_len_b": d.max_len_b}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Teacher-forced loss/ppl, then BLEU and chrF of the decoded loader (beam
        ``recipe.decode.beam_size``) against the raw references."""
        tokenizer = self._require_tokenizer()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        hyps, refs = {}, {}
        loss_sum = nll_sum = tokens = 0.0
        for batch in iterate(loader, device):
            logits = model(batch["src"], batch["tgt_in"])
            loss, nll, n = self._token_losses(logits, batch["tgt_out"])
            loss_sum, nll_sum = loss_sum + loss.item(), nll_sum + nll.item()
            tokens += n.item()
            found = search(model, batch["src"], batch["src_lengths"], self.decode.beam_size,
                           **self._search_options())
            texts = tokenizer.decode([h[0].tokens if h else [] for h in found])
            for i, text, ref in zip(batch["index"].tolist(), texts, batch["ref"]):
                hyps[i], refs[i] = text, ref
        model.train(was_training)
        order = sorted(hyps)
        self.last_hypotheses = [hyps[i] for i in order]
        metrics = corpus_scores(self.last_hypotheses, [refs[i] for i in order])
        if not self._logged_signature:
            logger.info("sacreBLEU signature: %s", self.bleu_signature())
            self._logged_signature = True
        nll_mean = nll_sum / max(tokens, 1)
        return {**metrics, "loss": loss_sum / max(tokens, 1), "ppl": math.exp(min(nll_mean, 50))}

    def write_report(self, directory: Path, split: str) -> list[str]:
        """``translations_{split}.txt`` (the last evaluation's output, one line per kept pair)
        and the sacreBLEU signatures of the scores."""
        if self.last_hypotheses is None:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"translations_{split}.txt"
        path.write_text("".join(line + "\n" for line in self.last_hypotheses), encoding="utf-8")
        lines = [f"{name} signature: {sig}" for name, sig in signatures().items()]
        return [*lines, f"translations: {path}"]

    def bleu_signature(self) -> str:
        """The sacreBLEU signature of the reported BLEU (tokenizer, casing, smoothing, version)."""
        return signatures()["bleu"]

    def translate(
        self, model: nn.Module, sentences: Sequence[str], beam_size: int | None = None,
        nbest: int = 1, batch_size: int = 64,
    ) -> list[list[Hypothesis]]:
        """N-best hypotheses (tokens and scores) for raw source sentences, in input order.

        Args:
            beam_size: None uses ``recipe.decode.beam_size``; 1 is greedy search.
            nbest: hypotheses per sentence (at most the beam size).
            batch_size: sentences decoded together (sorted by length).
        Returns:
            the hypotheses of each sentence; none for an empty or blank sentence (a model
            asked to translate nothing makes a sentence up).
        Raises:
            ValueError: a beam, nbest or batch_size below 1, or nbest above the beam.
        """
        tokenizer = self._require_tokenizer()
        beam = self.decode.beam_size if beam_size is None else beam_size
        for name, value in (("beam_size", beam), ("nbest", nbest), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if nbest > beam:
            raise ValueError(f"nbest {nbest} needs a beam of at least {nbest}, got {beam}")
        inner = unwrap(model)
        was_training = inner.training
        inner.eval()
        device = next(inner.parameters()).device
        limit = inner.cfg.max_len - 1  # room for the source EOS within the positions
        ids = tokenizer.encode(sentences)
        if any(len(s) > limit for s in ids):
            logger.warning("truncated sentences longer than %d tokens", limit)
        blank = [not s.strip() for s in sentences]
        order = sorted((i for i in range(len(ids)) if not blank[i]), key=lambda i: len(ids[i]))
        results: list[list[Hypothesis]] = [[] for _ in ids]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = D.collate([{"index": i, "src": ids[i][:limit], "tgt": [], "ref": ""}
                               for i in chunk])
            found = search(inner, batch["src"].to(device), batch["src_lengths"].to(device), beam,
                           nbest, **self._search_options())
            for i, hyps in zip(chunk, found):
                results[i] = hyps
        inner.train(was_training)
        return results

    def predict(
        self, model: nn.Module, inputs: Sequence[str], beam_size: int | None = None,
        nbest: int = 1, scores: bool = False, **options: Any,
    ) -> list[str] | list[list[str]] | list[list[tuple[str, float]]]:
        """Detokenized translations of ``inputs`` (sentences): one string each, or with
        ``nbest`` > 1 a best-first list of strings each; with ``scores``, a best-first list of
        ``(text, log score)`` pairs each (empty for a blank sentence). ``options`` go to
        ``translate``."""
        found = self.translate(model, inputs, beam_size, nbest, **options)
        tokenizer = self._require_tokenizer()
        texts = [tokenizer.decode([h.tokens for h in hyps]) for hyps in found]
        if scores:
            return [[(t, h.score) for t, h in zip(ts, hyps)] for ts, hyps in zip(texts, found)]
        return [t[0] if t else "" for t in texts] if nbest == 1 else texts

    # -- saved with the model -----------------------------------------------------------------
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("the translation task has no vocabulary: call prepare() or "
                             "load_extra() with a saved model directory first")
        return self.tokenizer

    def save_extra(self, directory: Path) -> dict[str, Any]:
        """Copy the sentencepiece model beside the saved model."""
        self._require_tokenizer().save(Path(directory) / TOKENIZER_FILE)
        return {"tokenizer": TOKENIZER_FILE, "vocab_size": len(self.tokenizer),
                "src_lang": self.opts.src_lang, "tgt_lang": self.opts.tgt_lang}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        """Load the sentencepiece model that ``save_extra`` wrote."""
        name = (meta or {}).get("tokenizer", TOKENIZER_FILE)
        self.tokenizer = Tokenizer.load(Path(directory) / name)

    @classmethod
    def example_input(cls, cfg: Any) -> tuple[tuple[Any, ...], str]:
        """32 source and 32 target tokens (a sentence of Multi30k's length); see
        `Task.example_input`."""
        ids = torch.full((1, EXAMPLE_TOKENS), 4)  # 4: the first id after the special tokens
        return (ids, ids), f"{EXAMPLE_TOKENS} source and {EXAMPLE_TOKENS} target tokens"
