"""Greedy and beam search for ``Seq2SeqTransformer``.

The source is encoded once. Each step feeds the newest token to ``model.decode_step`` with a
``DecoderCache`` (self-attention keys/values grow by one position; the cross-attention
keys/values of the source are computed on the first step and reused). ``use_cache=False`` is
the reference path: it reruns ``model.decode`` on the whole prefix every step; both give the
same hypotheses.

Beam search keeps the K beams of the B sentences as one flat batch of B*K rows. Each step takes
the top 2K of the K*V continuations of every sentence at once (``topk``, no loop over beams or
tokens): a continuation ending in EOS among the first K goes to the sentence's pool of finished
hypotheses, scored log-prob / length**len_penalty; the best K others stay live, and the cache is
reordered to their parents. A sentence is done when its pool holds K hypotheses or it reaches
its maximum length ``a * source_length + b``, where EOS is forced; done sentences leave the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Hypothesis:
    """One translation: ``tokens`` without bos/eos, ``score`` = ``log_prob`` /
    length**len_penalty, where length counts the tokens and the EOS."""

    tokens: list[int]
    score: float
    log_prob: float


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel or ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def max_lengths(
    src_lengths: Tensor, max_len_a: float, max_len_b: int, limit: int
) -> Tensor:
    """(B,) source lengths -> (B,) most target tokens (EOS included): a*len + b in [1, limit]."""
    return (max_len_a * src_lengths.float() + max_len_b).long().clamp(1, limit)


class _Stepper:
    """Log-probs (R, V) of the next token for R prefixes (R, t), cached or uncached."""

    def __init__(self, model: nn.Module, memory: Tensor, mask: Tensor | None, use_cache: bool):
        self.model, self.memory, self.mask = model, memory, mask
        self.cache = model.decoder.new_cache() if use_cache else None
        cfg = model.cfg
        self.banned = [cfg.pad_id, cfg.bos_id]  # never generated

    def __call__(self, prefix: Tensor) -> Tensor:
        if self.cache is None:
            states = self.model.decode(prefix, self.memory, self.mask)  # (R, t, D)
            logits = self.model.head(states[:, -1:])[:, -1]
        else:
            logits = self.model.decode_step(prefix[:, -1:], self.memory, self.mask, self.cache)
            self.memory = None  # the cache now holds the cross-attention keys/values
        lprobs = logits.float().log_softmax(dim=-1)
        lprobs[:, self.banned] = float("-inf")
        return lprobs

    def reorder(self, rows: Tensor) -> None:
        """Keep prefixes ``rows`` (R',) in this order."""
        if self.mask is not None:
            self.mask = self.mask.index_select(0, rows)
        if self.cache is None:
            self.memory = self.memory.index_select(0, rows)
        else:
            self.cache.reorder(rows)


def _force_eos(lprobs: Tensor, forced: Tensor, eos: int) -> Tensor:
    """Rows ``forced`` (R,) may only end: every token but EOS gets -inf."""
    not_eos = torch.arange(lprobs.shape[1], device=lprobs.device) != eos
    return lprobs.masked_fill(forced[:, None] & not_eos[None, :], float("-inf"))


def _strip(tokens: list[int], eos: int, pad: int) -> list[int]:
    tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
    return [t for t in tokens if t != pad]


def _encode(model: nn.Module, src: Tensor, src_lengths: Tensor | None):
    if src_lengths is None:
        src_lengths = (src != model.cfg.pad_id).sum(dim=1)
    memory, mask = model.encode(src, src_lengths)
    return memory, mask, src_lengths


@torch.no_grad()
def greedy_search(
    model: nn.Module,
    src: Tensor,
    src_lengths: Tensor | None = None,
    len_penalty: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[Hypothesis]:
    """The most likely next token at every step, for a batch of sources.

    Args:
        src: (B, S) source ids (with EOS, padded with pad_id).
        src_lengths: (B,) source lengths; from the padding if None.
        len_penalty: only for the reported score (log_prob / length**len_penalty).
        max_len_a, max_len_b: at most a * source length + b target tokens (EOS included).
        use_cache: incremental decoding with the KV cache; False reruns the whole prefix.
    Returns:
        one hypothesis per source.
    """
    model = unwrap(model)
    cfg = model.cfg
    memory, mask, src_lengths = _encode(model, src, src_lengths)
    limits = max_lengths(src_lengths, max_len_a, max_len_b, cfg.max_len - 1)
    step_fn = _Stepper(model, memory, mask, use_cache)
    prefix = src.new_full((src.shape[0], 1), cfg.bos_id)  # (B, 1), grows by one per step
    log_prob = torch.zeros(src.shape[0], device=src.device)
    length = torch.zeros_like(src_lengths)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for step in range(int(limits.max())):
        lprobs = _force_eos(step_fn(prefix), step + 1 >= limits, cfg.eos_id)  # (B, V)
        best, token = lprobs.max(dim=-1)
        log_prob += best.masked_fill(done, 0.0)
        length += (~done).long()
        prefix = torch.cat([prefix, token.masked_fill(done, cfg.pad_id)[:, None]], dim=1)
        done |= token == cfg.eos_id
        if bool(done.all()):
            break
    score = log_prob / length.float() ** len_penalty
    return [
        Hypothesis(_strip(row, cfg.eos_id, cfg.pad_id), s, lp)
        for row, s, lp in zip(prefix[:, 1:].tolist(), score.tolist(), log_prob.tolist())
    ]


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    src_lengths: Tensor | None = None,
    beam_size: int = 5,
    nbest: int = 1,
    len_penalty: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Batched beam search (see the module docstring).

    Args:
        src: (B, S) source ids (with EOS, padded with pad_id).
        src_lengths: (B,) source lengths; from the padding if None.
        beam_size: K beams per source.
        nbest: hypotheses returned per source, best first (at most K).
        len_penalty: alpha in score = log_prob / length**alpha; 0 ranks by log-prob alone.
        max_len_a, max_len_b: at most a * source length + b target tokens (EOS included).
        use_cache: incremental decoding with the KV cache; False reruns the whole prefix.
    Returns:
        for each source, up to ``nbest`` hypotheses sorted by score.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and the beam size {beam_size}, got {nbest}")
    model = unwrap(model)
    cfg, k, device = model.cfg, beam_size, src.device
    memory, mask, src_lengths = _encode(model, src, src_lengths)
    limits = max_lengths(src_lengths, max_len_a, max_len_b, cfg.max_len - 1)
    steps = int(limits.max())
    rows = torch.arange(src.shape[0], device=device).repeat_interleave(k)  # B*K rows
    step_fn = _Stepper(model, memory[rows], None if mask is None else mask[rows], use_cache)
    pool = _Pool(src.shape[0], k, steps, cfg.pad_id, device)
    active = torch.arange(src.shape[0], device=device)  # sentences still searching, (n,)
    prefix = src.new_full((src.shape[0] * k, 1), cfg.bos_id)  # (n*K, t)
    # Only the first beam starts live, or the K identical beams would fill the beam with copies.
    scores = torch.full((src.shape[0], k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # (n, K) log-probs of the live beams
    for step in range(steps):
        forced = step + 1 >= limits[active]  # (n,)
        lprobs = step_fn(prefix)  # (n*K, V)
        lprobs = _force_eos(lprobs, forced.repeat_interleave(k), cfg.eos_id)
        n = active.numel()
        top, parent, token = _best_continuations(scores, lprobs, k)  # each (n, 2K)
        is_eos = token == cfg.eos_id
        seqs = torch.cat([prefix[parent.flatten()], token.view(-1, 1)], dim=1)  # (n*2K, t+1)
        pool.add(active, seqs.view(n, 2 * k, -1)[:, :, 1:], top, is_eos, step + 1, len_penalty)
        live = _live(is_eos, k)  # (n, K)
        keep = (~(pool.full(active) | forced)).nonzero().squeeze(1)  # (n',)
        if keep.numel() == 0:
            break
        rows = parent.gather(1, live)[keep].flatten()  # (n'*K,) parents of the kept beams
        prefix = torch.cat([prefix[rows], token.gather(1, live)[keep].view(-1, 1)], dim=1)
        step_fn.reorder(rows)
        scores, active = top.gather(1, live)[keep], active[keep]
    return pool.results(nbest, cfg.eos_id, cfg.pad_id)


def _best_continuations(scores: Tensor, lprobs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The 2K best one-token continuations of each sentence's K beams.

    Args:
        scores: (n, K) log-probs of the live beams.
        lprobs: (n*K, V) next-token log-probs of each beam.
    Returns:
        their scores (n, 2K), their parent beams as rows of the (n*K) beams, their tokens.
    """
    n, vocab = scores.shape[0], lprobs.shape[1]
    top, flat = (scores.view(-1, 1) + lprobs).view(n, k * vocab).topk(2 * k, dim=1)
    parent = torch.arange(n, device=scores.device)[:, None] * k + flat // vocab
    return top, parent, flat % vocab


def _live(is_eos: Tensor, k: int) -> Tensor:
    """(n, K) indices into (n, 2K) ranked continuations of the best K that do not end: the
    non-EOS ones first, each group in rank order."""
    rank = torch.arange(2 * k, device=is_eos.device).expand(is_eos.shape[0], -1)
    return torch.where(is_eos, rank + 2 * k, rank).argsort(dim=1)[:, :k]


class _Pool:
    """The K best finished hypotheses of every sentence: scores (B, K) sorted best first,
    log-probs (B, K) and tokens (B, K, L) padded with pad_id."""

    def __init__(self, batch: int, k: int, max_steps: int, pad_id: int, device: torch.device):
        self.k, self.pad_id = k, pad_id
        self.scores = torch.full((batch, k), float("-inf"), device=device)
        self.log_probs = torch.full((batch, k), float("-inf"), device=device)
        self.tokens = torch.full((batch, k, max_steps), pad_id, dtype=torch.long, device=device)

    def add(
        self, active: Tensor, seqs: Tensor, log_probs: Tensor, is_eos: Tensor, length: int,
        len_penalty: float,
    ) -> None:
        """Merge candidates (n, 2K, length) ending in EOS among the first K ranks into the pools
        of sentences ``active`` (n,)."""
        rank = torch.arange(is_eos.shape[1], device=is_eos.device)
        ends = is_eos & (rank < self.k) & log_probs.isfinite()  # (n, 2K)
        score = (log_probs / length**len_penalty).masked_fill(~ends, float("-inf"))
        seqs = F.pad(seqs, (0, self.tokens.shape[2] - length), value=self.pad_id)
        all_scores = torch.cat([self.scores[active], score], dim=1)  # (n, 3K)
        best, sel = all_scores.topk(self.k, dim=1)  # (n, K)
        all_tokens = torch.cat([self.tokens[active], seqs], dim=1)  # (n, 3K, L)
        self.scores[active] = best
        self.log_probs[active] = torch.cat([self.log_probs[active], log_probs], 1).gather(1, sel)
        self.tokens[active] = all_tokens.gather(1, sel[..., None].expand(-1, -1, seqs.shape[2]))

    def full(self, active: Tensor) -> Tensor:
        """(n,) whether each active sentence has K finished hypotheses."""
        return self.scores[active, -1].isfinite()

    def results(self, nbest: int, eos: int, pad: int) -> list[list[Hypothesis]]:
        out = []
        for scores, log_probs, tokens in zip(
            self.scores.tolist(), self.log_probs.tolist(), self.tokens.tolist()
        ):
            out.append([
                Hypothesis(_strip(t, eos, pad), s, lp)
                for s, lp, t in zip(scores[:nbest], log_probs[:nbest], tokens[:nbest])
                if s > float("-inf")
            ])
        return out


def search(
    model: nn.Module,
    src: Tensor,
    src_lengths: Tensor | None = None,
    beam_size: int = 1,
    nbest: int = 1,
    **options: float,
) -> list[list[Hypothesis]]:
    """Greedy search when ``beam_size`` is 1, else beam search; ``options`` as in
    ``beam_search`` (len_penalty, max_len_a, max_len_b, use_cache)."""
    if beam_size == 1:
        if nbest != 1:
            raise ValueError(f"nbest {nbest} needs a beam of at least {nbest}")
        return [[h] for h in greedy_search(model, src, src_lengths, **options)]
    return beam_search(model, src, src_lengths, beam_size, nbest, **options)
