"""The speech recognition task: audio datasets, duration-bucketed batches, CTC (+ attention)
loss, CTC decoding and WER/CER (jiwer)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tasks.base import Batch, Task, iterate, register_task, unwrap
from tasks.speech.audio import (
    add_noise,
    probe_audio,
    read_audio,
    resampled_length,
    speed_perturb,
)
from tasks.speech.data import build_splits, dataset_alphabet
from tasks.speech.decoding import decode_batch
from tasks.speech.lm import LMFusion, build_fusion
from tasks.speech.model import ASRConfig, CTCEnsemble, SpeechOutput, max_samples
from tasks.speech.options import (
    DATASETS,
    MOVED,
    SpeechAugment,
    SpeechData,
    SpeechDecoding,
    SpeechLoss,
    SpeechTokenizer,
)
from tasks.speech.speakers import SpeakerNormalized, log_mel_frontend, split_speaker_stats
from tasks.speech.vocab import CharVocab, PieceVocab, SpeechVocab, load_speech_vocab

log = logging.getLogger(__name__)

BUCKET_BATCHES = 50  # a shuffled window of this many batches is sorted by duration, then cut
EXAMPLE_SECONDS = 10  # the example input of `zoo info`: 10 s of audio


@register_task
class SpeechRecognitionTask(Task):
    """Character-level speech recognition with CTC and an optional attention decoder.

    Data settings (``recipe.data``): ``dataset`` is one of "synthetic", "fsdd",
    "fsdd_connected", "manifest", "kathleen_arctic"; ``data.options``, ``augment``, ``loss``,
    ``decode`` and ``tokenizer`` are the dataclasses of ``tasks.speech.options``. Audio is
    resampled to the model's sample rate (16 kHz unless ``model.overrides.sample_rate`` says
    otherwise).

    The loss is ESPnet's: CTC summed over each utterance and averaged over the batch (so it
    grows with transcript length); with a decoder, ``w * ctc + (1 - w) * att`` with the
    label-smoothed attention cross-entropy normalised the same way, ``w = loss.ctc_weight``.
    """

    name = "speech_recognition"
    metric = "cer"
    metric_mode = "min"
    metrics = ("cer", "wer", "accuracy", "loss")
    unit = "samples"  # utterances
    dataset_names = DATASETS
    option_types = {
        "data.options": SpeechData,
        "augment": SpeechAugment,
        "loss": SpeechLoss,
        "decode": SpeechDecoding,
        "tokenizer": SpeechTokenizer,
    }
    moved_keys = MOVED

    def __init__(self, recipe: Any, run_dir: str | Path | None = None) -> None:
        super().__init__(recipe, run_dir)
        self.opts: SpeechData = self.section("data.options")
        self.augment: SpeechAugment = self.section("augment")
        self.decode: SpeechDecoding = self.section("decode")
        self.tokenizer: SpeechTokenizer = self.section("tokenizer")
        self.characters = self.tokenizer.characters
        self.ctc_weight = self.section("loss").ctc_weight
        self._fusion: LMFusion | None = None
        model_sr = recipe.model.overrides.get("sample_rate") if hasattr(recipe, "model") else None
        self.sample_rate = int(model_sr or ASRConfig.sample_rate)
        # feature_norm=speaker: per-speaker log-mel statistics travel with the items
        over = recipe.model.overrides if hasattr(recipe, "model") else {}
        self.speaker_norm = over.get("feature_norm") == "speaker"
        self._mel_settings = (int(over.get("n_mels") or ASRConfig.n_mels),
                              bool(over.get("wave_norm")), over.get("features") or "waveform")
        self.vocab: SpeechVocab | None = None
        self.splits: dict[str, Dataset] | None = None
        self._checked = False
        # (id, reference, hypothesis) of the last evaluate() call, for write_report
        self.last_transcripts: list[tuple[str, str, str]] | None = None

    # -- data ---------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Build the splits, the vocabulary (``tokenizer.units``: characters, from
        ``tokenizer.characters``, else the digits for the digit datasets, else the training
        transcripts' characters; or bpe/unigram pieces trained on the training transcripts, for
        the digit datasets too), check every transcript against it, and build the character LM
        when ``decode.lm_weight`` > 0.

        Returns:
            ``{"vocab_size": ...}``.
        """
        self.splits = self._build_splits()
        fixed = dataset_alphabet(self.data.dataset) if self.characters is None else self.characters
        if self.vocab is not None:
            pass  # a saved model's vocabulary (load_extra) is kept
        elif self.tokenizer.units != "char":
            self.vocab = PieceVocab.build(self.splits["train"].texts, self.tokenizer.vocab_size,
                                          self.tokenizer.units)
        elif fixed is not None:
            self.vocab = CharVocab(dict.fromkeys(str(fixed)))  # exactly the characters given
        else:
            self.vocab = CharVocab.build(self.splits["train"].texts)
        for ds in self.splits.values():
            for text, utt in zip(ds.texts, ds.ids):
                self.vocab.encode(text, utt)  # raises naming the character and utterance
        # with an LM, a bad text file fails here, before any training
        if self._lm() is None and self.decode.lm_weight > 0:
            log.warning("decode.lm_weight is unused: greedy decoding (decode.beam_size=1) uses "
                        "no LM, and the character LM cannot score %s pieces", self.tokenizer.units)
        return {"vocab_size": len(self.vocab)}

    def _build_splits(self) -> dict[str, Dataset]:
        """``build_splits``; with ``feature_norm=speaker`` each split's items also carry
        their speaker's log-mel statistics (tasks/speech/speakers.py)."""
        splits = build_splits(self.data, self.sample_rate)
        if not self.speaker_norm:
            return splits
        frontend = log_mel_frontend(self.sample_rate, *self._mel_settings)
        limit, seed = self.opts.speaker_stats_utterances, self.opts.data_seed
        return {k: SpeakerNormalized(ds, frontend, limit, seed) for k, ds in splits.items()}

    def datasets(self) -> dict[str, Dataset]:
        if self.splits is None:
            self.prepare()
        return dict(self.splits)

    def collate(self, samples: list[dict[str, Any]]) -> Batch:
        """Pad waveforms to (B, S) and transcripts to (B, U) (pad id 0 = blank)."""
        lengths = torch.tensor([len(s["audio"]) for s in samples], dtype=torch.long)
        audio = torch.zeros(len(samples), int(lengths.max()))
        for i, s in enumerate(samples):
            audio[i, : len(s["audio"])] = s["audio"]
        ids = [self._vocab().encode(s["text"], s["id"]) for s in samples]
        token_lengths = torch.tensor([len(t) for t in ids], dtype=torch.long)
        tokens = torch.zeros(len(samples), max(1, int(token_lengths.max())), dtype=torch.long)
        for i, t in enumerate(ids):
            tokens[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        batch = {"audio": audio, "audio_lengths": lengths, "tokens": tokens,
                 "token_lengths": token_lengths, "text": [s["text"] for s in samples],
                 "id": [s["id"] for s in samples]}
        if "feat_stats" in samples[0]:  # feature_norm=speaker: (B, 2, F)
            batch["feat_stats"] = torch.stack([s["feat_stats"] for s in samples])
        return batch

    def batches(
        self, dataset: Dataset, batch_size: int, shuffle: bool, epoch_seed: int
    ) -> list[list[int]]:
        """Duration-bucketed batches, a pure function of the arguments.

        Without shuffling: all utterances sorted by duration, then cut (least padding). With
        shuffling: a seeded permutation, cut into windows of ``BUCKET_BATCHES`` batches, each
        window sorted by duration (jittered by up to 10%) and cut, then the batch order
        shuffled.
        """
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            return super().batches(dataset, batch_size, shuffle, epoch_seed)
        n = len(lengths)
        if not shuffle:
            order = sorted(range(n), key=lambda i: (lengths[i], i))
            return [order[i : i + batch_size] for i in range(0, n, batch_size)]
        rng = random.Random(epoch_seed)
        order = list(range(n))
        rng.shuffle(order)
        # +-10% jitter on the sort key: batches change from epoch to epoch even when one
        # window holds the whole dataset, while their lengths stay close
        key = [length * rng.uniform(0.9, 1.1) for length in lengths]
        window = batch_size * BUCKET_BATCHES
        out = []
        for start in range(0, n, window):
            chunk = sorted(order[start : start + window], key=lambda i: key[i])
            out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(out)
        return out

    def count(self, batch: Batch) -> int:
        return len(batch["audio_lengths"])

    # -- model --------------------------------------------------------------------------------
    def _vocab(self) -> SpeechVocab:
        if self.vocab is None:
            raise RuntimeError("the vocabulary is not built yet: call prepare() or load_extra()")
        return self.vocab

    def _lm(self) -> LMFusion | None:
        """The character LM for shallow fusion (``decode.lm_*``), built on first use from
        the training transcripts and the ``lm_texts`` files, with the ``lm_lexicon`` word list
        mixed in when there is one; None when ``lm_weight`` is 0.

        Raises:
            ValueError: subword units with an LM that a beam search would use.
        """
        opts = self.decode
        if opts.lm_weight == 0:
            return None
        if not isinstance(self._vocab(), CharVocab):
            if opts.beam_size == 1:
                return None  # greedy decoding uses no LM (prepare() warned)
            raise ValueError(f"decode.lm_weight > 0 needs tokenizer.units=char: the n-gram LM "
                             f"scores characters, not {self._vocab().model_type} pieces (set "
                             "decode.lm_weight=0 or decode.beam_size=1)")
        if self._fusion is None:
            if self.splits is None:  # a saved model being used: the recipe's data gives them
                self.splits = self._build_splits()
            self._fusion = build_fusion(opts, self._vocab(), self.splits["train"].texts)
        return self._fusion

    def _check_model(self, model: nn.Module) -> None:
        cfg = model.cfg
        if cfg.sample_rate != self.sample_rate or cfg.vocab_size != len(self._vocab()):
            raise ValueError(
                f"the model expects {cfg.sample_rate} Hz audio and {cfg.vocab_size} tokens, but "
                f"the data is {self.sample_rate} Hz with {len(self._vocab())} tokens"
            )
        self._check_speaker_norm(cfg)
        used = (cfg.n_mels, cfg.wave_norm, cfg.features)
        if self.speaker_norm and used != self._mel_settings:
            raise ValueError(
                f"the speaker statistics were computed with (n_mels, wave_norm, features) = "
                f"{self._mel_settings}, read from the recipe's model.overrides, but the model "
                f"has {used}; set them in model.overrides"
            )

    def _check_speaker_norm(self, cfg: Any) -> None:
        """Refuse a model whose ``feature_norm`` is "speaker" when the recipe's is not (no
        statistics are prepared), or the other way round."""
        if (cfg.feature_norm == "speaker") != self.speaker_norm:
            said = "sets" if self.speaker_norm else "does not set"
            raise ValueError(
                f"the model's feature_norm is '{cfg.feature_norm}' but the recipe {said} "
                "model.overrides.feature_norm=speaker, which prepares the speaker statistics"
            )

    def _forward(self, model: nn.Module, batch: Batch) -> SpeechOutput:
        """``model(...)`` itself, not its parts, so DDP sees the forward pass."""
        tgt_in = None
        if getattr(unwrap(model), "decoder", None) is not None:
            tgt_in = self._decoder_input(batch["tokens"])
        return model(batch["audio"], batch["audio_lengths"], tgt_in, batch.get("feat_stats"))

    def _decoder_input(self, tokens: Tensor) -> Tensor:
        eos = torch.full_like(tokens[:, :1], self._vocab().eos_id)
        return torch.cat([eos, tokens], dim=1)  # (B, U+1): EOS first, pad 0 after

    def _losses(
        self, out: SpeechOutput, batch: Batch, inter_weight: float = 0.0
    ) -> tuple[Tensor, dict[str, float]]:
        tokens, token_lengths = batch["tokens"], batch["token_lengths"]
        bsz = tokens.shape[0]

        def ctc_of(logits: Tensor) -> Tensor:
            log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V) for ctc_loss
            return F.ctc_loss(log_probs, tokens, out.lengths, token_lengths, blank=0,
                              reduction="sum", zero_infinity=True) / bsz

        ctc = ctc_of(out.logits)
        logs = {"ctc": ctc.item()}
        if out.inter_logits is not None:
            inter = ctc_of(out.inter_logits)
            ctc = (1 - inter_weight) * ctc + inter_weight * inter
            logs["inter_ctc"] = inter.item()
        if out.decoder_logits is None:
            return ctc, {"loss": ctc.item(), **logs}
        tgt_out = torch.cat([tokens, torch.zeros_like(tokens[:, :1])], dim=1)  # (B, U+1)
        tgt_out[torch.arange(bsz, device=tokens.device), token_lengths] = self._vocab().eos_id
        att = F.cross_entropy(
            out.decoder_logits.float().transpose(1, 2), tgt_out, ignore_index=0,
            label_smoothing=self.recipe.train.label_smoothing, reduction="sum",
        ) / bsz
        loss = self.ctc_weight * ctc + (1 - self.ctc_weight) * att
        return loss, {"loss": loss.item(), **logs, "att": att.item()}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Batch: ``audio`` (B, S), ``audio_lengths`` (B,), ``tokens`` (B, U), ``token_lengths``."""
        if not self._checked:
            self._check_model(unwrap(model))
            self._checked = True
        batch = self._augment(model, batch)
        inter_weight = unwrap(model).cfg.inter_ctc_weight  # used when inter_ctc_layer > 0
        return self._losses(self._forward(model, batch), batch, inter_weight)

    def _augment(self, model: nn.Module, batch: Batch) -> Batch:
        """``batch`` with the ``augment`` section's waveform augmentation (speed perturbation,
        then noise) when ``model`` is training; as it is otherwise."""
        aug = self.augment
        if aug.speed_perturb and model.training:
            audio, lengths = speed_perturb(batch["audio"], batch["audio_lengths"],
                                           aug.speed_perturb)
            batch = {**batch, "audio": audio, "audio_lengths": lengths}
        if aug.noise_snr is not None and model.training:
            noisy = add_noise(batch["audio"], batch["audio_lengths"], aug.noise_snr,
                              aug.noise_prob)
            batch = {**batch, "audio": noisy}
        return batch

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """CER, WER (jiwer) and exact-match accuracy in percent, and the loss, over a loader.

        The beam is ``decode.beam_size`` (1: greedy); a beam search adds the character
        LM's score when ``decode.lm_weight`` > 0. For digit strings (no spaces) CER is
        the digit error rate and WER the string error rate.
        """
        model = unwrap(model)
        self._check_model(model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        refs, hyps, ids_seen, loss_sum, count = [], [], [], 0.0, 0
        try:
            for batch in iterate(loader, device):
                # the parts of forward(), to keep the encoder output for rescoring
                memory, mask = model.forward_features(batch["audio"], batch["audio_lengths"],
                                                      batch.get("feat_stats"))
                lengths = model.output_lengths(batch["audio_lengths"])
                dec = None
                if model.decoder is not None:
                    dec = model.decode(self._decoder_input(batch["tokens"]), memory, mask)
                out = SpeechOutput(model.forward_head(memory), lengths, dec)
                loss, _ = self._losses(out, batch)
                n = len(batch["text"])
                loss_sum, count = loss_sum + loss.item() * n, count + n
                ids = decode_batch(model, memory, mask, out.logits, out.lengths,
                                   self.decode.beam_size, self._rescore_weight(), self._lm())
                hyps += [self._vocab().decode(h) for h in ids]
                refs += batch["text"]
                ids_seen += batch["id"]
        finally:
            model.train(was_training)
        self.last_transcripts = list(zip(ids_seen, refs, hyps))
        return {
            # percent, like every task's rates (top-1, BLEU): one scale per metric across tasks
            "cer": 100 * float(jiwer.cer(refs, hyps)),
            "wer": 100 * float(jiwer.wer(refs, hyps)),
            "accuracy": 100 * sum(r == h for r, h in zip(refs, hyps)) / max(len(refs), 1),
            "loss": loss_sum / max(count, 1),
        }

    def write_report(self, directory: Path, split: str) -> list[str]:
        """``transcripts_{split}.tsv``: a header row, then the id, reference and hypothesis of
        every utterance of the last evaluation, in loader order. Returns one line: how many
        hypotheses differ from their reference, and the file's path."""
        if self.last_transcripts is None:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"transcripts_{split}.tsv"
        rows = ["id\treference\thypothesis", *("\t".join(r) for r in self.last_transcripts)]
        path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        wrong = sum(ref != hyp for _, ref, hyp in self.last_transcripts)
        return [f"transcripts ({wrong} of {len(self.last_transcripts)} wrong): {path}"]

    def _rescore_weight(self) -> float:
        """CTC's weight against the attention decoder's when rescoring the n-best."""
        weight = self.decode.ctc_weight
        return self.ctc_weight if weight is None else weight

    @torch.no_grad()
    def predict(
        self, model: nn.Module, inputs: Sequence[str], beam_size: int | None = None,
        batch_size: int = 8, **options: Any,
    ) -> list[str]:
        """Transcribe audio files of any sample rate and channel count, in input order.

        Raises:
            ValueError: an unreadable or empty file, or one too short or too long for the
                model (named; see ``check_input``).
        """
        model = unwrap(model).eval()
        device = next(model.parameters()).device
        sr = model.cfg.sample_rate
        waves = [read_audio(p, sr) for p in inputs]
        for path, w in zip(inputs, waves):
            if int(model.adapter.output_lengths(torch.tensor([len(w)]))[0]) < 1:
                raise ValueError(f"audio file {path} is too short to transcribe ({len(w)} samples)")
            if (too_long := self._too_long(model, path, len(w))) is not None:
                raise ValueError(too_long)
        beam_size = self.decode.beam_size if beam_size is None else beam_size
        stats = None
        if model.cfg.feature_norm == "speaker":  # the files of one call are one speaker
            frontend = log_mel_frontend(sr, model.cfg.n_mels, model.cfg.wave_norm,
                                        model.cfg.features)
            stats = split_speaker_stats([""] * len(waves), waves.__getitem__, frontend)[""]
        out_texts: list[str] = [""] * len(waves)
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.collate([{"audio": waves[i], "text": "", "id": str(i)} for i in idx])
            audio, lengths = batch["audio"].to(device), batch["audio_lengths"].to(device)
            feat_stats = None if stats is None else stats.expand(len(idx), *stats.shape).to(device)
            memory, mask = model.forward_features(audio, lengths, feat_stats)
            out_lengths = model.output_lengths(lengths)
            ids = decode_batch(model, memory, mask, model.forward_head(memory), out_lengths,
                               beam_size, self._rescore_weight(), self._lm())
            for i, h in zip(idx, ids):
                out_texts[i] = self._vocab().decode(h)
        return out_texts

    def check_input(self, model: nn.Module, path: str | Path) -> str | None:
        """The sentence that says an audio file is longer than ``model`` can read (its
        positions), in seconds, from the file's header alone; None when it fits.

        Raises:
            AudioError: the file is missing or unreadable.
        """
        model = unwrap(model)
        frames, rate = probe_audio(path)
        return self._too_long(model, path, resampled_length(frames, rate, model.cfg.sample_rate))

    def _too_long(self, model: nn.Module, path: str | Path, samples: int) -> str | None:
        most = max_samples(model)
        if most is None or samples <= most:
            return None
        sr = model.cfg.sample_rate
        return (f"audio file {path} lasts {samples / sr:.1f} s, longer than the {most / sr:.1f} s "
                f"this model can read at once (its positions); cut it into shorter parts")

    def ensemble(
        self, model: nn.Module, others: list[tuple[Path, nn.Module, dict[str, Any]]]
    ) -> CTCEnsemble:
        """``model`` and ``others`` (directory, model, saved ``task_meta``) as a
        :class:`CTCEnsemble`: frame log-probabilities averaged, decoded once.

        Raises:
            ValueError: a member spells with other units than ``model`` (named), or
                differs in sample rate or frame rate.
        """
        for directory, _, meta in others:
            vocab = meta.get("vocab") if isinstance(meta, dict) else None
            if vocab is None or load_speech_vocab(vocab) != self._vocab():
                raise ValueError(f"the model in {directory} does not spell with the same "
                                 "characters or pieces as the first model, so it cannot join its "
                                 "ensemble")
        return CTCEnsemble([unwrap(model), *(unwrap(m) for _, m, _ in others)])

    # -- saved with the model -----------------------------------------------------------------
    def save_extra(self, directory: Path) -> dict[str, Any]:
        """The vocabulary and sample rate, stored as JSON in config.json (no extra files)."""
        return {"vocab": self._vocab().to_dict(), "sample_rate": self.sample_rate}

    def load_extra(self, directory: Path, meta: dict[str, Any]) -> None:
        if not isinstance(meta, dict) or "vocab" not in meta:
            raise ValueError(f"the saved model in {directory} has no speech vocabulary in its "
                             "config.json (task_meta.vocab)")
        self.vocab = load_speech_vocab(meta["vocab"])
        self.sample_rate = int(meta.get("sample_rate", self.sample_rate))
        if self._fusion is not None and self._fusion.vocab != self.vocab:
            self._fusion = None  # built for other characters: rebuilt for the saved model's

    @classmethod
    def example_input(cls, cfg: Any) -> tuple[tuple[Any, ...], str]:
        """10 s of audio (waveform or 10 ms log-mel frames, as ``cfg`` reads); see
        `Task.example_input`."""
        seconds = EXAMPLE_SECONDS
        audio = torch.zeros(1, seconds * cfg.sample_rate) if cfg.features == "waveform" else (
            torch.zeros(1, seconds * 100, cfg.n_mels))  # 10 ms frames
        return (audio, torch.tensor([audio.shape[1]])), f"{seconds} s of audio"
