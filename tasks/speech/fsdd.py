"""The Free Spoken Digit Dataset (FSDD): its recordings, the official and leave-speakers-out
splits, single digits and connected digit strings made of its clips."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.speech.utterances import Utterance, probe_all

log = logging.getLogger(__name__)

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")  # {digit}_{speaker}_{index}.wav
FSDD_TEST_INDICES = range(5)  # the dataset's own convention: recordings 0-4 are test


@dataclass(frozen=True)
class DigitClip:
    """One FSDD recording; ``num_samples`` at the target rate."""

    path: str
    digit: str
    speaker: str
    index: int
    num_samples: int


def fsdd_clips(root: str | Path, sample_rate: int, skip_bad: bool) -> list[DigitClip]:
    """The recordings of an FSDD folder (``root/recordings/*.wav`` or ``root/*.wav``).

    Raises:
        FileNotFoundError: no FSDD-named WAV file under ``root``.
    """
    root = Path(root)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    named = [(p, FSDD_NAME.match(p.name)) for p in sorted(folder.glob("*.wav"))]
    odd = [p.name for p, m in named if m is None]
    if odd:
        log.warning("ignoring %d WAV file(s) not named digit_speaker_index.wav in %s (e.g. %s)",
                    len(odd), folder, odd[0])
    named = [(str(p), m) for p, m in named if m is not None]
    if not named:
        raise FileNotFoundError(f"no FSDD recordings (digit_speaker_index.wav) in {folder}")
    lengths, _ = probe_all([p for p, _ in named], sample_rate, skip_bad)
    return [
        DigitClip(p, m.group(1), m.group(2), int(m.group(3)), lengths[p])
        for p, m in named
        if p in lengths
    ]


def fsdd_pools(
    clips: list[DigitClip], test_speakers: Sequence[str], val_fraction: float, seed: int
) -> dict[str, list[DigitClip]]:
    """Train/val/test clip pools. Test: every clip of ``test_speakers`` when given (a voice never
    trained on), else recordings 0-4 of every speaker (FSDD's official split). Val: a seeded
    ``val_fraction`` of the remaining clips.

    Raises:
        ValueError: a test speaker that has no recording.
    """
    speakers = sorted({c.speaker for c in clips})
    unknown = sorted(set(test_speakers) - set(speakers))
    if unknown:
        raise ValueError(f"test speaker(s) {unknown} not in the FSDD data (speakers: {speakers})")
    if test_speakers:
        is_test = lambda c: c.speaker in test_speakers
    else:
        is_test = lambda c: c.index in FSDD_TEST_INDICES
    rest = [c for c in clips if not is_test(c)]
    random.Random(seed).shuffle(rest)
    n_val = round(len(rest) * val_fraction)
    return {"train": rest[n_val:], "val": rest[:n_val], "test": [c for c in clips if is_test(c)]}


def single_digits(pool: list[DigitClip]) -> list[Utterance]:
    """One utterance per clip; the transcript is the digit character."""
    return [
        Utterance(Path(c.path).stem, c.digit, (c.path,), c.num_samples, c.speaker) for c in pool
    ]


def connected_digits(
    pool: list[DigitClip],
    count: int,
    seed: int,
    sample_rate: int,
    digits: tuple[int, int] = (2, 7),
    pause_s: tuple[float, float] = (0.05, 0.4),
) -> list[Utterance]:
    """``count`` digit strings, each 2-7 clips of one speaker (without repeats) joined with
    random pauses; a pure function of its arguments.

    The transcript is the digit string without spaces ("419"), so CER is the digit error rate.
    """
    rng = random.Random(seed)
    by_speaker: dict[str, list[DigitClip]] = {}
    for c in pool:
        by_speaker.setdefault(c.speaker, []).append(c)
    speakers = sorted(by_speaker)
    utts = []
    for i in range(count):
        spk = rng.choice(speakers)
        k = min(rng.randint(*digits), len(by_speaker[spk]))
        chosen = rng.sample(by_speaker[spk], k)
        # silences: a short lead-in and tail, random pauses between digits
        gaps = [rng.uniform(0.02, 0.2)] + [rng.uniform(*pause_s) for _ in range(k - 1)]
        gaps = tuple(int(g * sample_rate) for g in [*gaps, rng.uniform(0.02, 0.2)])
        text = "".join(c.digit for c in chosen)
        size = sum(c.num_samples for c in chosen) + sum(gaps)
        utts.append(Utterance(f"{spk}_{i:05d}_{text}", text, tuple(c.path for c in chosen),
                              size, spk, gaps))
    return utts
