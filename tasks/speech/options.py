"""The recipe settings of the speech recognition task: ``data.options``, ``augment``, ``loss``,
``decode`` and ``tokenizer`` (ESPnet's names: ``ctc_weight``, ``beam_size``, ``lm_weight``).

SpecAugment and vocal tract length perturbation run inside the model (``model.overrides``:
``spec_augment``, ``freq_warp``); the sample rate is the model's too
(``model.overrides.sample_rate``, 16 kHz by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.options import setting

DATASETS = ("synthetic", "fsdd", "fsdd_connected", "manifest", "kathleen_arctic")
ON_DISK = DATASETS[1:]
GENERATED = ("synthetic", "fsdd_connected")  # utterances made up of digits
MANIFESTS = ("manifest", "kathleen_arctic")


def _paths(value: Any) -> tuple[str, ...]:
    """One path or a list of them, as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass
class SpeechData:
    """``data.options``: splits, generated utterances and manifests. Splits and generated
    utterances depend on ``data_seed``, not on ``train.seed``, so that runs with different
    training seeds share one test set."""

    data_seed: int = 0
    skip_bad_audio: bool = setting(False, datasets=ON_DISK)  # skip (and count) unreadable files
    cache_audio: bool = setting(True, datasets=ON_DISK)  # keep decoded audio in memory
    test_speakers: str | tuple[str, ...] = setting((), datasets=ON_DISK)  # held out as test
    # manifest: the fraction of prompts held out as the test split (0: none)
    test_fraction: float = setting(0.0, ge=0, lt=1, datasets=MANIFESTS)
    # relative to data.root; a list is read as one corpus split by prompt, each later file's
    # own held-out prompts a split test_<name> (tasks/speech/corpus.py)
    manifest: str | tuple[str, ...] = setting("transcripts.tsv", datasets=MANIFESTS)
    # a manifest per split, {train: ..., val: ..., test: ...}; val is held out of train if absent
    manifests: dict[str, str] | None = setting(None, datasets=MANIFESTS)
    # manifest files (paths as given) whose utterances join the train split only, leaving out
    # val and test prompts, e.g. synthetic speech mixed into a small corpus
    extra_train: str | tuple[str, ...] = setting((), datasets=MANIFESTS)
    extra_train_count: int | None = setting(None, ge=1, datasets=MANIFESTS)  # None: all
    train_utterances: int = setting(2000, ge=1, datasets=GENERATED)
    # generated val (and test) utterances; None: synthetic 200, fsdd_connected 300
    eval_utterances: int | None = setting(None, ge=1, datasets=GENERATED)
    # [min, max] digits per generated utterance; None: synthetic [1, 5], fsdd_connected [2, 7]
    digits: tuple[int, int] | None = setting(None, ge=1, datasets=GENERATED)
    # model.overrides.feature_norm=speaker: each speaker's statistics from at most this many of
    # its utterances in the split (a seeded draw, data_seed; None: all), e.g. the few
    # recordings a new voice enrols with
    speaker_stats_utterances: int | None = setting(None, ge=1)

    def __post_init__(self) -> None:
        self.test_speakers = _paths(self.test_speakers)
        self.extra_train = _paths(self.extra_train)
        if not isinstance(self.manifest, str):
            self.manifest = _paths(self.manifest)
            if not self.manifest:
                raise ValueError("manifest must name at least one file, got an empty list")
        if self.manifests is not None and (
            "train" not in self.manifests or set(self.manifests) - {"train", "val", "test"}
        ):
            raise ValueError("manifests needs a 'train' file and allows only 'train', 'val', "
                             f"'test'; got {sorted(self.manifests)}")
        if self.digits is not None and self.digits[0] > self.digits[1]:
            raise ValueError(f"digits must be [min, max] with min <= max, got {list(self.digits)}")


@dataclass
class SpeechAugment:
    """``augment``: waveform augmentation of the training batches."""

    speed_perturb: tuple[float, ...] = setting((), ge=0.5, le=2.0)  # factors drawn per utterance
    noise_snr: tuple[float, float] | None = None  # [low, high] dB: white noise at a drawn SNR
    noise_prob: float = setting(1.0, ge=0, le=1)  # the share of utterances that get noise

    def __post_init__(self) -> None:
        if self.noise_snr is not None and self.noise_snr[0] > self.noise_snr[1]:
            raise ValueError(f"noise_snr must be [low, high] in dB with low <= high, got "
                             f"{list(self.noise_snr)}")


@dataclass
class SpeechLoss:
    """``loss``: with an attention decoder, ``ctc_weight * ctc + (1 - ctc_weight) * att``."""

    ctc_weight: float = setting(0.3, ge=0, le=1)


@dataclass
class SpeechDecoding:
    """``decode``: CTC greedy or prefix beam search, n-best rescoring, the character LM."""

    beam_size: int = setting(1, ge=1)  # 1: greedy (best path)
    ctc_weight: float | None = setting(None, ge=0, le=1)  # of the rescoring; None: loss's
    lm_weight: float = setting(0.0, ge=0)  # character n-gram LM in beam search; 0: off
    lm_bonus: float = 0.0  # score added per output character when the LM is on
    lm_order: int = setting(6, ge=1)  # n of the n-gram
    # UTF-8 text files, a sentence per line, that the LM learns from besides the transcripts
    lm_texts: tuple[str, ...] = ()
    # a word list mixed into the LM: a file of "word [count]" lines, or "wordfreq:<language>"
    lm_lexicon: str | None = None
    lm_lexicon_size: int = setting(100_000, ge=1)  # keep the most frequent words
    lm_lexicon_mix: float = setting(0.7, ge=0, lt=1)  # the lexicon's share of the predictions


UNITS = ("char", "bpe", "unigram")


@dataclass
class SpeechTokenizer:
    """``tokenizer``: the output units, characters or sentencepiece pieces trained on the
    training transcripts (ESPnet's ``token_type: bpe``); blank and EOS are added."""

    units: str = "char"  # one of UNITS
    # exactly these characters (char units); None: the digits for the digit datasets, else the
    # training transcripts' characters
    characters: str | None = None
    # bpe/unigram: the most output ids, blank and EOS included (a small corpus yields fewer);
    # 8 leaves room for a few characters only: a corpus needs one id per character at least
    vocab_size: int = setting(128, ge=8)

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}; got {self.units!r}")
        if self.units != "char" and self.characters is not None:
            raise ValueError(f"characters applies to units=char only; units={self.units} learns "
                             "its pieces from the training transcripts")


MOVED = {
    "eval.beam_size": "decode.beam_size",
    "data.sample_rate": "model.overrides.sample_rate",
    "data.options.seed": "data.options.data_seed",
    "data.options.vocab": "tokenizer.characters",
    "data.options.ctc_weight": "loss.ctc_weight",
    **{f"data.options.{k}": f"augment.{k}" for k in ("speed_perturb", "noise_snr", "noise_prob")},
    **{
        f"data.options.{k}": f"decode.{k}"
        for k in (
            "lm_weight", "lm_bonus", "lm_order", "lm_texts", "lm_lexicon", "lm_lexicon_size",
            "lm_lexicon_mix",
        )
    },  # fmt: skip
}
