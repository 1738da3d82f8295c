"""Sampling from a decoder-only model with a KV cache: greedy, temperature, top-k, top-p
(nucleus, Holtzman et al. 2020), a repetition penalty (Keskar et al. 2019, CTRL), a seed, a
maximum length, and stop strings held back while they may still be forming; the text of each
sample as its tokens arrive (`Continuations`).

Logits pass the processors in the order of HF transformers' ``generate``: repetition penalty,
temperature, top-k, top-p; greedy takes the argmax after the penalty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from encoders import KVCache
from tasks.language_modeling.vocab import CharVocab, Vocab


@dataclass
class SamplingOptions:
    """How to pick each next token.

    Attributes:
        max_new_tokens: the most tokens to generate.
        temperature: divides the logits; 0 means greedy.
        top_k: keep the k most likely tokens (None: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches p.
        repetition_penalty: > 1 makes tokens already in the prompt or output less likely.
        greedy: always the most likely token (after the repetition penalty).
        seed: seeds the sampling generator; the same seed gives the same text. None: random.
        num_samples: independent continuations of the prompt, generated as one batch.
        stop: strings that end a sample; the output stops before the first one.
    """

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    greedy: bool = False
    seed: int | None = None
    num_samples: int = 1
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        if any(not s for s in self.stop):
            raise ValueError("a stop string must not be empty")
        self.stop = tuple(self.stop)
        self.greedy = self.greedy or self.temperature == 0


# -- logits processors --------------------------------------------------------------------------
def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty as HF applies it: seen tokens' positive logits are divided by
    ``penalty``, negative ones multiplied (both lower the token for penalty > 1).

    Args:
        logits: (S, V).
        seen: (S, V) bool, True for tokens already in the sequence.
    """
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """(S, V) logits with all but the ``k`` largest per row set to -inf (ties kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (S, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """(S, V) logits keeping, per row, the smallest set of most likely tokens whose total
    probability is at least ``p`` (never fewer than one); the rest become -inf."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = before >= p  # the set had reached p without this token
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose(
    logits: Tensor, seen: Tensor, options: SamplingOptions, generator: torch.Generator | None
) -> Tensor:
    """The next token of each row: (S, V) logits -> (S,) ids."""
    logits = apply_repetition_penalty(logits.float(), seen, options.repetition_penalty)
    if options.greedy:
        return logits.argmax(dim=-1)
    logits = logits / options.temperature
    if options.top_k is not None:
        logits = top_k_filter(logits, options.top_k)
    if options.top_p is not None:
        logits = top_p_filter(logits, options.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# -- the loop -----------------------------------------------------------------------------------
def _next_logits(
    model: nn.Module, ids: Tensor, cache: list[KVCache] | None, use_cache: bool, context: int
) -> tuple[Tensor, list[KVCache] | None]:
    """(S, V) logits after ``ids`` (S, L) given its last ``context`` tokens, and the cache.

    The cache holds the keys of ``ids[:, :len(cache)]``. Once the context is full, positions
    cannot slide (they are absolute), so every later step re-encodes the last ``context``
    tokens: the same as running the model on them without a cache, as nanoGPT does.
    """
    if not use_cache:
        new, cache = ids[:, -context:], None
    elif cache is None or len(cache[0]) >= context:
        new, cache = ids[:, -context:], model.new_cache()
    else:
        new = ids[:, len(cache[0]) :]
    tokens, _ = model.forward_features(new, cache=cache)
    return model.forward_head(tokens[:, -1]), cache


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt: Sequence[int],
    options: SamplingOptions,
    banned: Sequence[int] = (),
    eos_id: int | None = None,
    use_cache: bool = True,
    context: int | None = None,
) -> Iterator[Tensor]:
    """Generate token by token; yields the (S,) new ids of each step, S = num_samples.

    Args:
        model: a ``GPT`` (``forward_features`` with a cache, ``forward_head``, ``cfg.max_len``),
            in eval mode.
        prompt: the ids to continue (at least one).
        banned: ids never generated (pad, bos, unk).
        eos_id: an id that ends a sample; the generator stops when every sample has ended, and
            an ended sample yields ``eos_id`` from then on. None: only ``max_new_tokens`` ends.
        use_cache: False re-runs the model over the whole context each step (for tests).
        context: the most tokens the model sees (default its ``max_len``; a model trained on
            shorter blocks has never learned its later positions).
    """
    if not prompt:
        raise ValueError("generation needs a prompt of at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)] * options.num_samples, device=device)  # (S, P)
    generator = None
    if not options.greedy:
        generator = torch.Generator(device=device)
        if options.seed is None:
            generator.seed()  # a fresh random seed
        else:
            generator.manual_seed(options.seed)
    seen = torch.zeros(ids.shape[0], model.cfg.vocab_size, dtype=torch.bool, device=device)
    seen.scatter_(1, ids, True)
    ended = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    context = min(context or model.cfg.max_len, model.cfg.max_len)
    cache = None
    for _ in range(options.max_new_tokens):
        logits, cache = _next_logits(model, ids, cache, use_cache, context)
        logits[:, list(banned)] = float("-inf")
        token = choose(logits, seen, options, generator)
        if eos_id is not None:
            token = token.masked_fill(ended, eos_id)
            ended |= token == eos_id
        seen.scatter_(1, token[:, None], True)
        ids = torch.cat([ids, token[:, None]], dim=1)
        yield token
        if bool(ended.all()):
            return


class StopStrings:
    """Holds back text that may be the start of a stop string, so that streamed output never
    shows part of one; ``feed`` returns the text safe to show and whether a stop was reached.

    Args:
        stops: the stop strings (none: everything passes at once).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops, self.pending, self.stopped = tuple(stops), "", False

    def feed(self, text: str) -> str:
        """Add ``text``; return what may be shown now (nothing after a stop)."""
        if self.stopped:
            return ""
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            out, self.pending = self.pending[: min(found)], ""
            return out
        keep = max((self._overlap(s) for s in self.stops), default=0)
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out

    def _overlap(self, stop: str) -> int:
        """Length of the longest end of ``pending`` that begins ``stop``."""
        for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:n]):
                return n
        return 0

    def flush(self) -> str:
        """The held-back text, at the end of generation."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def continuation_decoder(vocab: Vocab, prompt: list[int]) -> Callable[[list[int]], str]:
    """ids -> the text they add after ``prompt``. Pieces are decoded after the prompt, so that
    a word piece's leading space survives (decoded alone, sentencepiece drops it)."""
    if isinstance(vocab, CharVocab):
        return vocab.decode
    base = vocab.decode(prompt)

    def decode(ids: list[int]) -> str:
        full = vocab.decode(prompt + ids)
        return full[len(base) :] if full.startswith(base) else vocab.decode(ids)

    return decode


class Continuations:
    """The text of each sample as tokens arrive: decoded after the prompt, cut at EOS or before
    a stop string, and handed to ``on_text`` piece by piece."""

    def __init__(
        self,
        options: SamplingOptions,
        decode: Callable[[list[int]], str],
        eos: int | None,
        on_text: Callable[[int, str], None] | None,
    ) -> None:
        n = options.num_samples
        self.decode, self.eos, self.on_text = decode, eos, on_text
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.shown, self.texts = [""] * n, [""] * n
        self.stops, self.done = [StopStrings(options.stop) for _ in range(n)], [False] * n

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def add(self, i: int, token: int) -> None:
        """Sample ``i``'s next token."""
        if self.done[i] or token == self.eos:
            self.done[i] = True
            return
        self.ids[i].append(token)
        text = self.decode(self.ids[i])
        self._emit(i, self.stops[i].feed(text[len(self.shown[i]) :]))
        self.shown[i], self.done[i] = text, self.stops[i].stopped

    def _emit(self, i: int, piece: str) -> None:
        self.texts[i] += piece
        if piece and self.on_text is not None:
            self.on_text(i, piece)

    def finish(self) -> list[str]:
        """Release held-back text; the continuations."""
        for i, stops in enumerate(self.stops):
            self._emit(i, stops.flush())
        return self.texts
