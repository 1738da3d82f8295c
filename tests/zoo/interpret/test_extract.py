"""One extractor for every family: the weights it records, the default path it leaves alone,
the head masks it sets and restores."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import create_model
from zoo.interpret.extract import (
    AttentionExtract,
    attention_modules,
    masked_heads,
    original_heads,
    short_name,
)

Case = tuple[nn.Module, Callable[[nn.Module], Tensor]]


def family_cases() -> dict[str, Case]:
    """A tiny model of each family (eval mode, padded inputs) and a call giving its outputs."""
    torch.manual_seed(0)
    vit = create_model("test_vit", num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    mt = create_model("test_mt_transformer", vocab_size=40).eval()
    src = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]])  # sample 1: 2 pad keys
    tgt = torch.tensor([[1, 5, 6, 7], [1, 7, 8, 2]])
    asr = create_model("test_asr_transformer", vocab_size=12, decoder_depth=1).eval()
    audio, lengths = 0.1 * torch.randn(2, 4000), torch.tensor([4000, 2500])
    tokens = torch.tensor([[1, 3, 4], [1, 5, 0]])

    def speech(m: nn.Module) -> Tensor:
        out = m(audio, lengths, tokens)
        return torch.cat([out.logits.flatten(), out.decoder_logits.flatten()])

    return {
        "vision": (vit, lambda m: m(images)),
        "translation": (mt, lambda m: m(src, tgt)),
        "speech": (asr, speech),
    }


@pytest.mark.parametrize("family", ["vision", "translation", "speech"])
def test_every_attention_module_records_weights_and_outputs_do_not_change(family: str):
    model, run = family_cases()[family]
    default = run(model)
    with AttentionExtract(model) as found:
        recorded = run(model)
    torch.testing.assert_close(recorded, default, atol=1e-5, rtol=0)
    modules = attention_modules(model)
    assert set(found.weights) == set(modules) and len(modules) >= 2
    for name, module in modules.items():
        (weights,) = found.weights[name]  # one call each
        assert weights.shape[:2] == (2, module.num_heads)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:3]))
        assert module.weight_sink is None  # restored on exit


def test_padded_source_keys_get_no_weight_in_encoder_and_cross_attention() -> None:
    model, run = family_cases()["translation"]
    with AttentionExtract(model, ["core.blocks.0.attn", "decoder.blocks.1.cross_attn"]) as found:
        run(model)
    for name in found.weights:
        weights = found.last(name)
        assert (weights[1, :, :, 3:] == 0).all() and (weights[0, :, :, 3:] > 0).all()
    decoder_self = found.modules.get("decoder.blocks.0.attn")
    assert decoder_self is None  # only the named modules are recorded


def test_the_default_forward_takes_sdpa_and_the_extractor_the_explicit_path(monkeypatch):
    model, run = family_cases()["translation"]
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    run(model)
    assert len(calls) == len(attention_modules(model))
    with AttentionExtract(model):
        run(model)
    assert len(calls) == len(attention_modules(model))  # no SDPA call while recording
    run(model)
    assert len(calls) == 2 * len(attention_modules(model))


def test_extract_names_an_unknown_module_and_last_an_unrecorded_one() -> None:
    model, _ = family_cases()["vision"]
    with pytest.raises(ValueError, match="'core.blocks.9.attn' is not an attention module"):
        AttentionExtract(model, ["core.blocks.9.attn"])
    with AttentionExtract(model) as found, pytest.raises(ValueError, match="no attention weights"):
        found.last("core.blocks.0.attn")


def test_masked_heads_sets_and_restores_masks_and_checks_them() -> None:
    model, run = family_cases()["vision"]
    default = run(model)
    zeros = {n: torch.zeros(m.num_heads) for n, m in attention_modules(model).items()}
    with masked_heads(model, zeros):
        assert not torch.allclose(run(model), default)
    assert all(m.head_mask is None for m in attention_modules(model).values())
    torch.testing.assert_close(run(model), default)
    with pytest.raises(ValueError, match="3 entries for 4 heads"):
        with masked_heads(model, {"core.blocks.0.attn": torch.ones(3)}):
            pass
    with pytest.raises(ValueError, match="'head.attn' is not an attention module"):
        with masked_heads(model, {"head.attn": torch.ones(4)}):
            pass


def test_names_and_original_heads_of_a_pruned_config() -> None:
    assert short_name("core.blocks.3.attn") == "enc 3"
    assert short_name("decoder.blocks.1.cross_attn") == "dec 1 cross"
    assert short_name("decoder.blocks.0.attn") == "dec 0 self"
    model = create_model("test_mt_transformer", heads_per_layer=[[1, 3], [0]],
                         decoder_heads=[[[0], [2, 3]], [[1, 2], [3]]])
    heads = original_heads(model)
    assert heads["core.blocks.0.attn"] == (1, 3) and heads["core.blocks.1.attn"] == (0,)
    assert heads["decoder.blocks.0.cross_attn"] == (2, 3)
    assert heads["decoder.blocks.1.attn"] == (1, 2)
    plain = original_heads(create_model("test_vit"))
    assert plain["core.blocks.1.attn"] == (0, 1, 2, 3)
