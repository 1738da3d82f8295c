"""Speaker-level feature normalisation (``model.overrides.feature_norm=speaker``): every
utterance's log-mel frames are normalised by the mean and standard deviation of all frames of
its speaker in its split, as Kaldi's per-speaker CMVN does, instead of by its own.

The statistics are computed once per split from the audio alone (no transcript), so a held-out
speaker's come from that speaker's test recordings: the model adapts to an unseen voice without
labels, as a recogniser adapting to its user would. Utterances without a speaker name count as
one speaker per split (a one-voice corpus). Speed perturbation in training leaves them as they
are (they describe the unperturbed voice).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from encoders.adapters.audio import LogMel, normalize_wave, speaker_stats, stft_sizes

log = logging.getLogger(__name__)

Frontend = Callable[[Tensor], Tensor]  # (S,) waveform or (T, F) features -> (T, F) log-mel


def log_mel_frontend(
    sample_rate: int, n_mels: int, wave_norm: bool = False, features: str = "waveform"
) -> Frontend:
    """The log-mel a speech model of these settings computes (``SpeechRecognizer``'s front end:
    25 ms windows, 10 ms hop, optional unit-RMS scaling first); precomputed features (a 2-D
    item, ``features="fbank"``) pass as they are."""
    mel = LogMel(sample_rate, *stft_sizes(sample_rate), n_mels)

    @torch.no_grad()
    def frontend(x: Tensor) -> Tensor:
        if features != "waveform" or x.ndim == 2:
            return x.float()
        wave = x.float().unsqueeze(0)
        if wave_norm:
            wave = normalize_wave(wave, torch.tensor([wave.shape[1]]))
        return mel(wave)[0]

    return frontend


def split_speaker_stats(
    speakers: Sequence[str], items: Callable[[int], Tensor], frontend: Frontend,
    limit: int | None = None, seed: int = 0,
) -> dict[str, Tensor]:
    """Speaker name -> (2, F) statistics over the utterances ``items(i)`` of each speaker, at
    most ``limit`` of them per speaker (drawn with ``seed``; None: all)."""
    chosen: dict[str, list[int]] = defaultdict(list)
    for i, spk in enumerate(speakers):
        chosen[spk].append(i)
    if limit is not None:
        rng = random.Random(seed)
        chosen = {spk: sorted(rng.sample(idx, min(limit, len(idx))))
                  for spk, idx in sorted(chosen.items())}
    return {spk: speaker_stats([frontend(items(i)) for i in idx]) for spk, idx in chosen.items()}


class SpeakerNormalized(Dataset):
    """A speech dataset whose items also carry ``feat_stats`` (2, F), their speaker's log-mel
    statistics in this dataset; every other attribute (``lengths``, ``texts``, ``ids``) is the
    wrapped dataset's.

    Args:
        dataset: items ``{"audio", "text", "id"}``; speakers come from its ``utterances``
            (``Utterance.speaker``) when it has them, else one speaker for all.
        frontend: the model's log-mel (``log_mel_frontend``).
        limit, seed: each speaker's statistics from at most ``limit`` of its utterances,
            drawn with ``seed`` (None: all).
    """

    def __init__(self, dataset: Dataset, frontend: Frontend, limit: int | None = None,
                 seed: int = 0) -> None:
        self.dataset = dataset
        utts = getattr(dataset, "utterances", None)
        self.speakers = [u.speaker for u in utts] if utts is not None else [""] * len(dataset)
        self.stats = split_speaker_stats(self.speakers, lambda i: dataset[i]["audio"], frontend,
                                         limit, seed)
        log.info("speaker statistics of %d speaker(s) over %d utterances (%s per speaker)",
                 len(self.stats), len(self.speakers), "all" if limit is None else f"<= {limit}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "feat_stats": self.stats[self.speakers[i]]}

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
