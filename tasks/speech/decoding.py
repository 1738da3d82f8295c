"""CTC decoding: greedy (best path), prefix beam search, and n-best rescoring with the exact CTC
likelihood and, when the model has one, the attention decoder (joint CTC/attention decoding,
Watanabe et al. 2017, simplified to rescoring the CTC n-best). A character language model
(``tasks.speech.lm.LMFusion``) can join the beam search's scores (shallow fusion).

Log-probabilities are (B, T, V) with frame lengths (B,); hypotheses are lists of token ids
without blanks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from tasks.speech.lm import LMFusion

NEG_INF = float("-inf")
Hypothesis = tuple[list[int], float]  # (token ids, log score)


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best path per utterance: argmax per frame, repeats collapsed, blanks dropped.

    Args:
        log_probs: (B, T, V) frame scores (log-probabilities or logits).
        lengths: (B,) valid frames per utterance.
    """
    best = log_probs.argmax(-1).cpu()  # (B, T)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist()):
        path = row[:n]
        out.append([c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])])
    return out


def ctc_log_likelihood(
    log_probs: Tensor, lengths: Tensor, targets: list[list[int]], blank: int = 0
) -> Tensor:
    """Exact log P(target | audio) under CTC (all alignments summed), via ``F.ctc_loss``.

    Args:
        log_probs: (B, T, V) log-probabilities.
        lengths: (B,) valid frames.
        targets: B token id lists (no blanks); an impossible target scores -inf.
    Returns:
        (B,) log-likelihoods.
    """
    flat = torch.tensor([c for t in targets for c in t], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    nll = F.ctc_loss(
        log_probs.float().transpose(0, 1).cpu(), flat, lengths.cpu(), target_lengths,
        blank=blank, reduction="none", zero_infinity=False,
    )
    return -nll


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _prefix_search(
    frames: list[list[float]], beam: int, blank: int, prune: float, lm: LMFusion | None = None
) -> list[tuple]:
    """Prefix beam search over one utterance's (T, V) log-probabilities (Hannun et al. 2014).

    Each prefix keeps two scores: ending in blank (pb) and ending in its last label (pnb).
    Per frame only labels within ``prune`` nats of the best (at most ``beam`` of them) extend a
    prefix; a prefix's own last label is always tried, so that repeats keep their mass. With
    ``lm``, prefixes are ranked by their CTC score plus the LM's fusion score of their labels.
    """
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, NEG_INF)}
    fused: dict[tuple, float] = {(): 0.0}  # the LM's score of each prefix seen (with lm)
    for lp in frames:
        top = max(lp)
        ranked = sorted((c for c in range(len(lp)) if c != blank and lp[c] >= top - prune),
                        key=lambda c: -lp[c])[:beam]
        nxt: dict[tuple, list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            stay = nxt[prefix]
            stay[0] = _logaddexp(stay[0], total + lp[blank])
            last = prefix[-1] if prefix else None
            cands = ranked if last is None or last in ranked else [*ranked, last]
            for c in cands:
                longer = prefix + (c,)
                ext = nxt[longer]
                if lm is not None and longer not in fused:
                    fused[longer] = fused[prefix] + lm.step(prefix, c)
                if c == last:  # "aa" needs a blank between; without one it stays "a"
                    stay[1] = _logaddexp(stay[1], pnb + lp[c])
                    ext[1] = _logaddexp(ext[1], pb + lp[c])
                else:
                    ext[1] = _logaddexp(ext[1], total + lp[c])
        if lm is None:
            scored = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam]
        else:
            scored = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]) - fused[kv[0]])[:beam]
        beams = {k: (v[0], v[1]) for k, v in scored}
    return list(beams)


def ctc_prefix_beam_search(
    log_probs: Tensor, lengths: Tensor, beam_size: int = 10, blank: int = 0, prune: float = 10.0,
    lm: LMFusion | None = None,
) -> list[list[Hypothesis]]:
    """N-best lists by CTC prefix beam search, each rescored with the exact CTC likelihood.

    The greedy hypothesis joins every n-best list before the exact rescoring, so the first
    hypothesis is never less likely under the model than the greedy one (without ``lm``).

    Args:
        log_probs: (B, T, V) log-probabilities.
        lengths: (B,) valid frames.
        beam_size: prefixes kept per frame (and n-best size).
        prune: labels scoring more than this many nats below a frame's best are not tried.
        lm: shallow fusion with a character language model: its score joins the ranking in
            the search and the final one (``LMFusion.total``, end of sentence included).
    Returns:
        per utterance, hypotheses sorted best first, scores = CTC log-likelihoods (plus the
        LM's fusion score with ``lm``).
    """
    log_probs = log_probs.float().cpu()
    greedy = ctc_greedy(log_probs, lengths, blank)
    owners, cands = [], []
    for b, n in enumerate(lengths.tolist()):
        found = _prefix_search(log_probs[b, :n].tolist(), beam_size, blank, prune, lm)
        for prefix in dict.fromkeys([*found, tuple(greedy[b])]):
            owners.append(b)
            cands.append(list(prefix))
    scores = ctc_log_likelihood(log_probs[owners], lengths.cpu()[owners], cands, blank).tolist()
    if lm is not None:
        scores = [s + lm.total(hyp) for s, hyp in zip(scores, cands)]
    nbest: list[list[Hypothesis]] = [[] for _ in range(log_probs.shape[0])]
    for b, hyp, s in zip(owners, cands, scores):
        nbest[b].append((hyp, s))
    return [sorted(h, key=lambda x: -x[1])[:beam_size] for h in nbest]


def attention_log_likelihood(
    model: nn.Module, memory: Tensor, memory_mask: Tensor | None, owners: list[int],
    hyps: list[list[int]], eos: int, pad: int = 0,
) -> Tensor:
    """Log P_att(hyp + eos | audio) of each hypothesis under the model's attention decoder.

    Args:
        model: a ``SpeechRecognizer`` with a decoder.
        memory: (B, T, D) encoder output; memory_mask: (B, T) True at padding.
        owners: N utterance indices, one per hypothesis.
        hyps: N token id lists.
    Returns:
        (N,) log-likelihoods, one teacher-forced decoder pass for all of them.
    """
    index = torch.tensor(owners, device=memory.device)
    width = max(len(h) for h in hyps) + 1
    tgt_in = torch.full((len(hyps), width), pad, dtype=torch.long)
    tgt_out = torch.full((len(hyps), width), -1, dtype=torch.long)  # -1: not scored
    for i, h in enumerate(hyps):
        tgt_in[i, : len(h) + 1] = torch.tensor([eos, *h])
        tgt_out[i, : len(h) + 1] = torch.tensor([*h, eos])
    tgt_in, tgt_out = tgt_in.to(memory.device), tgt_out.to(memory.device)
    mask = memory_mask[index] if memory_mask is not None else None
    logp = model.decode(tgt_in, memory[index], mask).float().log_softmax(-1)  # (N, U, V)
    picked = logp.gather(-1, tgt_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, U)
    return (picked * (tgt_out >= 0)).sum(-1).cpu()


@torch.no_grad()
def decode_batch(
    model: nn.Module, memory: Tensor, memory_mask: Tensor | None, logits: Tensor,
    lengths: Tensor, beam_size: int = 1, ctc_weight: float = 0.3, lm: LMFusion | None = None,
) -> list[list[int]]:
    """Transcripts (token ids) of a batch from the encoder output.

    beam_size 1: CTC greedy. Larger: CTC prefix beam search; with an attention decoder the n-best
    is rescored by ``ctc_weight * log P_ctc + (1 - ctc_weight) * log P_att``. A language model
    (``lm``, beam_size > 1 only) adds its fusion score to the search and to the final score.

    Args:
        model: the ``SpeechRecognizer`` that produced the tensors.
        memory: (B, T, D) encoder output, memory_mask (B, T) True at padding.
        logits: (B, T, V) CTC logits; lengths (B,) valid frames.
    """
    blank, eos = model.cfg.blank_id, model.cfg.eos_id
    # the CTC head shares the decoder's vocabulary, but EOS is never a CTC label
    log_probs = logits.float().index_fill(-1, torch.tensor([eos], device=logits.device), NEG_INF)
    log_probs = log_probs.log_softmax(-1)
    if beam_size <= 1:
        return ctc_greedy(log_probs, lengths, blank)
    nbest = ctc_prefix_beam_search(log_probs, lengths, beam_size, blank, lm=lm)
    if getattr(model, "decoder", None) is None:
        return [h[0][0] for h in nbest]
    owners = [b for b, hs in enumerate(nbest) for _ in hs]
    hyps = [h for hs in nbest for h, _ in hs]
    fusion = torch.tensor([lm.total(h) if lm is not None else 0.0 for h in hyps])
    ctc = torch.tensor([s for hs in nbest for _, s in hs]) - fusion  # the CTC part alone
    att = attention_log_likelihood(model, memory, memory_mask, owners, hyps, eos)
    joint = (ctc_weight * ctc + (1 - ctc_weight) * att + fusion).tolist()
    best: dict[int, tuple[float, list[int]]] = {}
    for b, h, s in zip(owners, hyps, joint):
        if b not in best or s > best[b][0]:
            best[b] = (s, h)
    return [best[b][1] for b in range(len(nbest))]
