"""CTC decoding (tasks.speech.decoding): greedy on a hand-made path, prefix beam search against
greedy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.speech.decoding import (
    ctc_greedy,
    ctc_log_likelihood,
    ctc_prefix_beam_search,
)


# -- CTC decoding ------------------------------------------------------------------------------
def test_ctc_greedy_hand_made():
    # frames: a a _ a b b _ _ (blank=0, a=2, b=3) plus padding frames that must be ignored
    path = [2, 2, 0, 2, 3, 3, 0, 0, 3, 3]
    lp = torch.full((1, 10, 4), -10.0)
    lp[0, torch.arange(10), torch.tensor(path)] = 0.0
    assert ctc_greedy(lp, torch.tensor([8])) == [[2, 2, 3]]
    assert ctc_greedy(lp, torch.tensor([10])) == [[2, 2, 3, 3]]


def test_prefix_beam_search_never_worse_than_greedy():
    gen = torch.Generator().manual_seed(0)
    lp = (torch.randn(6, 12, 5, generator=gen) * 1.5).log_softmax(-1)
    lengths = torch.tensor([12, 11, 9, 12, 7, 5])
    greedy = ctc_greedy(lp, lengths)
    nbest = ctc_prefix_beam_search(lp, lengths, beam_size=8)
    best = [h[0][0] for h in nbest]
    g_score = ctc_log_likelihood(lp, lengths, greedy)
    b_score = ctc_log_likelihood(lp, lengths, best)
    assert (b_score >= g_score - 1e-5).all() and (b_score > g_score + 1e-3).any()
    for hyps, s in zip(nbest, b_score.tolist()):  # reported scores are the exact likelihoods
        assert hyps[0][1] == pytest.approx(s, abs=1e-4)
        assert [x[1] for x in hyps] == sorted((x[1] for x in hyps), reverse=True)


def test_prefix_beam_search_equals_greedy_on_peaked_posteriors():
    gen = torch.Generator().manual_seed(1)
    path = torch.randint(0, 6, (4, 20), generator=gen)
    lp = F.one_hot(path, 6).float().mul(30).log_softmax(-1)
    lengths = torch.tensor([20, 18, 15, 9])
    assert [h[0][0] for h in ctc_prefix_beam_search(lp, lengths, 5)] == ctc_greedy(lp, lengths)
