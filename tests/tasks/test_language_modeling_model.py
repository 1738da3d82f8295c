"""The decoder-only model: parts and the tied head, causality, cached features equal a full
pass, the context limit, padding, and GPT-2's initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.core import CoreConfig
from tasks.language_modeling import GPT, GPTConfig


def _gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    core = CoreConfig(dim=16, depth=2, num_heads=2, **kwargs.pop("core", {}))
    return GPTConfig(vocab_size=20, core=core, max_len=12, **kwargs).build().eval()


def _ids(b: int = 2, n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 20, (b, n), generator=torch.Generator().manual_seed(seed))


def test_parts_are_adapter_core_head_and_the_head_is_the_embedding() -> None:
    model = _gpt()
    assert model.head.weight is model.adapter.embed.weight
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"adapter", "core"}
    ids = _ids()
    tokens, mask = model.forward_features(ids)
    assert tokens.shape == (2, 8, 16) and mask is None
    torch.testing.assert_close(model(ids), model.forward_head(tokens))
    assert model(ids).shape == (2, 8, 20)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rotary"])
def test_a_later_token_never_changes_an_earlier_output(pos: str) -> None:
    model = _gpt(pos=pos)
    ids = _ids()
    changed = ids.clone()
    changed[:, 5:] = _ids(2, 3, seed=1)
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_cached_features_equal_a_full_pass(pos: str) -> None:
    model = _gpt(pos=pos)
    ids = _ids(n=9)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model.forward_head(model.forward_features(ids[:, a:b], cache=cache)[0])
                  for a, b in ((0, 4), (4, 5), (5, 6), (6, 9))]  # fmt: skip
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_right_padding_leaves_the_real_tokens_alone() -> None:
    model = _gpt()
    ids = _ids()
    padded = ids.clone()
    padded[1, 5:] = 0  # pad_id
    out = model(padded)
    torch.testing.assert_close(out[1, :5], model(ids[1:, :5])[0], atol=1e-5, rtol=0)
    assert model.forward_features(padded)[1].tolist()[1] == [False] * 5 + [True] * 3


def test_inputs_longer_than_the_context_are_refused_by_name() -> None:
    model = _gpt()
    with pytest.raises(ValueError, match="13 tokens exceed the model's context of 12"):
        model(_ids(n=13))
    cache = model.new_cache()
    model.forward_features(_ids(n=10), cache=cache)
    with pytest.raises(ValueError, match="13 tokens exceed"):
        model.forward_features(_ids(n=3), cache=cache)


def test_a_conformer_core_is_refused() -> None:
    with pytest.raises(ValueError, match="Conformer"):
        _gpt(core={"conformer": True, "conv_kernel": 3})


def test_a_fresh_model_predicts_about_uniformly() -> None:
    # GPT-2's init: unscaled embeddings of std 0.02; sqrt(D)-scaled ones tied to the head would
    # make the model predict its own input token with confidence (a loss far above ln V)
    torch.manual_seed(0)
    core = CoreConfig(dim=64, depth=2, num_heads=2)
    ids = torch.randint(4, 60, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = {}
    for scaled in (False, True):
        model = GPTConfig(vocab_size=60, core=core, max_len=32, embed_scale=scaled).build()
        logits = model(ids[:, :-1])
        losses[scaled] = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), ids[:, 1:].flatten()
        ).item()
    assert abs(losses[False] - math.log(60)) < 0.1 and losses[True] > math.log(60) + 1
    std = 0.02 / math.sqrt(2 * 2)  # residual projections start smaller (GPT-2)
    assert model.core.blocks[1].mlp.fc2.weight.std().item() == pytest.approx(std, rel=0.1)
