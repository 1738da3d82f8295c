"""Sampling: cached generation equals uncached (past the context too), greedy and seeds are
reproducible, top-k=1 is greedy, top-p keeps the smallest set above p, the repetition penalty,
EOS, stop strings held back while they form, and option errors."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.core import CoreConfig
from tasks.language_modeling import GPT, GPTConfig
from tasks.language_modeling.sampling import (
    SamplingOptions,
    StopStrings,
    apply_repetition_penalty,
    choose,
    sample,
    top_k_filter,
    top_p_filter,
)

PROMPT = [5, 9, 7]


def _gpt(pos: str = "learned") -> GPT:
    torch.manual_seed(0)
    core = CoreConfig(dim=16, depth=2, num_heads=2)
    return GPTConfig(vocab_size=20, core=core, max_len=12, pos=pos).build().eval()


def _run(
    model: GPT, use_cache: bool = True, context: int | None = None, **options
) -> list[list[int]]:
    opts = SamplingOptions(**{"max_new_tokens": 6, **options})
    steps = list(sample(model, PROMPT, opts, [0, 1, 3], use_cache=use_cache, context=context))
    return torch.stack(steps, 1).tolist()


@pytest.mark.parametrize("pos", ["learned", "rotary"])
@pytest.mark.parametrize("options", [{"greedy": True}, {"seed": 3, "num_samples": 3}])
def test_cached_generation_equals_uncached_past_the_context(pos: str, options: dict) -> None:
    model = _gpt(pos)  # 3 prompt tokens + 20 new ones overflow the 12 positions
    cached = _run(model, True, max_new_tokens=20, **options)
    assert cached == _run(model, False, max_new_tokens=20, **options)
    assert len(cached[0]) == 20


def test_a_shorter_context_than_the_positions_is_kept_cached_and_uncached() -> None:
    model = _gpt()  # 12 positions; a model trained on blocks of 7 sees at most 7 tokens
    short = _run(model, True, max_new_tokens=15, greedy=True, context=7)
    assert short == _run(model, False, max_new_tokens=15, greedy=True, context=7)
    assert short != _run(model, True, max_new_tokens=15, greedy=True)


def test_greedy_is_deterministic_and_top_k_1_equals_greedy() -> None:
    model = _gpt()
    greedy = _run(model, greedy=True)
    assert greedy == _run(model, greedy=True, seed=7)
    assert _run(model, top_k=1, seed=1) == greedy == _run(model, top_k=1, seed=2)
    assert _run(model, temperature=0.0) == greedy  # temperature 0 means greedy
    with torch.no_grad():  # the first step is the argmax of the next-token logits
        logits = model(torch.tensor([PROMPT]))[0, -1]
    logits[[0, 1, 3]] = -math.inf
    assert greedy[0][0] == int(logits.argmax())


def test_the_same_seed_gives_the_same_tokens() -> None:
    model = _gpt()
    a = _run(model, seed=11, temperature=1.5, num_samples=2)
    assert a == _run(model, seed=11, temperature=1.5, num_samples=2)
    assert a != _run(model, seed=12, temperature=1.5, num_samples=2)
    assert a[0] != a[1]  # the samples of one call are independent
    assert all(t not in (0, 1, 3) for row in a for t in row)  # banned ids never come


def test_top_p_keeps_the_smallest_set_whose_probability_reaches_p() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.125, 0.125, 0.25, 0.5]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()
    assert kept(0.5) == [[True, False, False, False], [False, False, False, True]]
    assert kept(0.7) == kept(0.75) == [[True, True, False, False], [False, False, True, True]]
    three = kept(0.8)  # 0.875 is the smallest total above 0.8: one of the tied 0.125s joins
    assert [sum(row) for row in three] == [3, 3] and three[0][:2] == [True, True]
    assert kept(1.0) == [[True] * 4] * 2
    assert kept(0.01) == kept(0.5)  # never fewer than one token


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, True, False]]
    torch.testing.assert_close(top_k_filter(logits, 9), logits)


def test_repetition_penalty_lowers_seen_tokens_either_sign() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    got = apply_repetition_penalty(logits, seen, 2.0)
    torch.testing.assert_close(got, torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    # greedy picks the unseen runner-up once the penalty pulls the seen favourite below it
    options = SamplingOptions(greedy=True, repetition_penalty=1.5)
    pick = choose(torch.tensor([[3.0, 2.9]]), torch.tensor([[True, False]]), options, None)
    assert pick.tolist() == [1]
    assert choose(torch.tensor([[3.0, 2.9]]), torch.tensor([[True, False]]),
                  SamplingOptions(greedy=True), None).tolist() == [0]  # fmt: skip


def test_a_penalised_greedy_run_repeats_less() -> None:
    model = _gpt()
    plain = _run(model, greedy=True, max_new_tokens=9)[0]
    penalised = _run(model, greedy=True, max_new_tokens=9, repetition_penalty=1e3)[0]
    assert len(set(penalised)) > len(set(plain))


def test_eos_ends_a_sample_and_the_generator_stops_when_all_have_ended() -> None:
    model = _gpt()
    options = SamplingOptions(max_new_tokens=5, seed=0, num_samples=2)
    not_eos = [i for i in range(20) if i != 2]
    steps = list(sample(model, PROMPT, options, banned=not_eos, eos_id=2))
    assert [s.tolist() for s in steps] == [[2, 2]]


def test_stop_strings_are_held_back_while_they_may_be_forming() -> None:
    stops = StopStrings(["END", "o w"])
    assert stops.feed("Hel") == "Hel"
    assert stops.feed("lo E") == "lo "  # "E" may begin "END": held back
    assert stops.feed("Xo wo") == "EX"  # "o w" ends the text before it
    assert stops.stopped and stops.feed("more") == "" and stops.flush() == ""
    held = StopStrings(["END"])
    assert [held.feed(t) for t in ("abE", "N", "x")] == ["ab", "", "ENx"]
    assert held.feed("yE") == "y" and held.flush() == "E"
    assert StopStrings([]).feed("anything") == "anything"


@pytest.mark.parametrize(
    "options, message",
    [({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
     ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
     ({"top_k": 0}, "top_k must be at least 1"),
     ({"temperature": -1.0}, "temperature must be >= 0"),
     ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
     ({"num_samples": 0}, "num_samples must be at least 1"),
     ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
     ({"stop": ("",)}, "stop string must not be empty")],
)  # fmt: skip
def test_bad_options_are_refused_in_one_sentence(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingOptions(**options)


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        next(sample(_gpt(), [], SamplingOptions()))
