"""Built-in speech data, no download: digit strings spoken as DTMF-like two-tone beeps.

Each digit is a distinct (low, high) frequency pair; utterances have random tone durations,
pauses, amplitude and background noise. It is learnable, not noise: a tiny CTC model reaches a
few percent CER within a minute on a CPU (the demo and the smoke tests use it).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

TONE_LOW = (350.0, 600.0, 950.0, 1400.0, 2000.0)  # Hz; wider apart than DTMF's so that
TONE_HIGH = (2700.0, 3600.0)  # 40 mel bins resolve them, and below 4 kHz (8 kHz audio works)


def tone_pair(digit: int) -> tuple[float, float]:
    """The two frequencies of a digit, DTMF-like: a low and a high tone."""
    return TONE_LOW[digit % 5], TONE_HIGH[digit // 5]


class ToneDigits(Dataset):
    """Built-in data, no download: digit strings of 1-5 two-tone beeps with random durations,
    pauses, amplitude and background noise. A tiny model learns it within a minute on a CPU.

    The plan of every utterance is drawn at construction and its noise is seeded per index, so
    item ``i`` is always the same waveform.

    Args:
        count: number of utterances.
        seed: data seed.
        sample_rate: output rate.
        digits: (min, max) digits per utterance.
    """

    def __init__(self, count: int, seed: int, sample_rate: int = 16000,
                 digits: tuple[int, int] = (1, 5)) -> None:
        self.seed, self.sample_rate = seed, sample_rate
        rng = random.Random(seed)
        self.plans = [self._plan(rng, digits) for _ in range(count)]
        self.lengths = [sum(n for _, n in p["segments"]) for p in self.plans]
        self.texts = [p["text"] for p in self.plans]
        self.ids = [f"tones_{seed}_{i:05d}" for i in range(count)]

    def _plan(self, rng: random.Random, digits: tuple[int, int]) -> dict[str, Any]:
        sr, k = self.sample_rate, rng.randint(*digits)
        seq = [rng.randrange(10) for _ in range(k)]
        segments = [(-1, int(rng.uniform(0.02, 0.12) * sr))]  # (digit or -1 for silence, samples)
        for j, d in enumerate(seq):
            segments.append((d, int(rng.uniform(0.08, 0.2) * sr)))
            last = j == k - 1
            segments.append((-1, int(rng.uniform(0.02, 0.12) * sr if last else
                                     rng.uniform(0.06, 0.2) * sr)))
        return {"text": "".join(map(str, seq)), "segments": segments,
                "amp": rng.uniform(0.2, 0.9), "noise": rng.uniform(0.002, 0.03)}

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, i: int) -> dict[str, Any]:
        plan, sr = self.plans[i], self.sample_rate
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        parts = []
        for digit, n in plan["segments"]:
            if digit < 0:
                parts.append(torch.zeros(n))
                continue
            t = torch.arange(n) / sr
            phase = torch.rand(2, generator=gen) * 2 * math.pi
            f1, f2 = tone_pair(digit)
            tone = 0.5 * (torch.sin(2 * math.pi * f1 * t + phase[0])
                          + torch.sin(2 * math.pi * f2 * t + phase[1]))
            parts.append(tone * _fade(n, int(0.005 * sr)))
        audio = torch.cat(parts) * plan["amp"]
        audio = audio + plan["noise"] * torch.randn(audio.shape, generator=gen)
        return {"audio": audio, "text": plan["text"], "id": self.ids[i]}


def _fade(n: int, ramp: int) -> Tensor:
    """(n,) raised-cosine fade in and out of ``ramp`` samples (no clicks at tone edges)."""
    env = torch.ones(n)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        up = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, ramp))
        env[:ramp], env[n - ramp:] = up, up.flip(0)
    return env
