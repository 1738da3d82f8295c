"""One speech example as the datasets describe it before reading audio, and the probing of
audio files for their lengths (known without decoding, for duration bucketing)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.speech.audio import AudioError, probe_audio, resampled_length

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One training example: clips joined with silences (one clip for ordinary utterances).

    ``gaps`` holds the silence in samples (at the target rate) before each clip and after the
    last one, so ``len(gaps) == len(clips) + 1``; empty means no silence.
    """

    id: str
    text: str
    clips: tuple[str, ...]
    num_samples: int
    speaker: str = ""
    gaps: tuple[int, ...] = ()


def probe_all(
    paths: Sequence[str], sample_rate: int, skip_bad: bool
) -> tuple[dict[str, int], list[str]]:
    """Target-rate lengths of readable files, and the unreadable ones (raises unless skipping).

    Raises:
        AudioError: a missing, unreadable or empty file, when ``skip_bad`` is false.
    """
    lengths, bad = {}, []
    for p in dict.fromkeys(paths):
        try:
            frames, rate = probe_audio(p)
        except AudioError as e:
            if not skip_bad:
                raise
            log.warning("skipping bad audio: %s", e)
            bad.append(p)
            continue
        lengths[p] = resampled_length(frames, rate, sample_rate)
    if bad:
        log.warning("skipped %d bad audio file(s) of %d", len(bad), len(lengths) + len(bad))
    return lengths, bad
