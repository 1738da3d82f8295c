"""MultiHeadAttention against a reference written here; masks, empty rows and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from encoders import attention
from encoders.attention import (
    KVCache,
    MultiHeadAttention,
    build_attention_mask,
    lengths_to_padding_mask,
)
from encoders.positional import RotaryEmbedding

DIM, HEADS = 16, 4


def _attn(cross: bool = False, rope: RotaryEmbedding | None = None, seed: int = 0):
    torch.manual_seed(seed)
    attn = MultiHeadAttention(DIM, HEADS, cross=cross, rope=rope).eval()
    with torch.no_grad():  # nonzero biases, so that the reference checks them too
        for p in attn.parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.1)
    return attn


def reference_attention(
    attn: MultiHeadAttention,
    x: Tensor,
    context: Tensor | None = None,
    padding_mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """softmax(QK^T / sqrt(Dh)) V with the module's weights, written out from the paper."""
    return reference_with_weights(attn, x, context, padding_mask, causal)[0]


def reference_with_weights(
    attn: MultiHeadAttention,
    x: Tensor,
    context: Tensor | None = None,
    padding_mask: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """The reference output (B, Nq, D) and weights (B, H, Nq, Nk), zero at masked keys."""
    b, nq, d = x.shape
    h, dh = attn.num_heads, d // attn.num_heads
    if context is None:
        q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split(d, dim=-1)
    else:
        q = F.linear(x, attn.q.weight, attn.q.bias)
        k, v = F.linear(context, attn.kv.weight, attn.kv.bias).split(d, dim=-1)
    nk = k.shape[1]

    def heads(t: Tensor) -> Tensor:  # (B, N, D) -> (B, H, N, Dh)
        return t.reshape(b, -1, h, dh).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(dh)  # (B, H, Nq, Nk)
    allowed = torch.ones(b, 1, nq, nk, dtype=torch.bool)
    if padding_mask is not None:
        allowed = allowed & ~padding_mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(nq, nk, dtype=torch.bool).tril()
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # rows with no key at all
    out = (weights @ heads(v)).transpose(1, 2).reshape(b, nq, d)
    out = F.linear(out, attn.proj.weight, attn.proj.bias)
    empty = ~allowed.any(-1)[:, 0, :, None]  # (B, Nq, 1)
    return out.masked_fill(empty, 0.0), weights


PADDING = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])  # (2, 7), sample 1 has 4 tokens


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_path_matches_reference_softmax_attention(causal: bool, padded: bool) -> None:
    attn = _attn()
    x = torch.randn(2, 7, DIM)
    mask = PADDING if padded else None
    out = attn(x, padding_mask=mask, causal=causal)
    expected = reference_attention(attn, x, padding_mask=mask, causal=causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_cross_attention_matches_reference() -> None:
    attn = _attn(cross=True)
    x, context = torch.randn(2, 3, DIM), torch.randn(2, 7, DIM)
    out = attn(x, context, padding_mask=PADDING)
    expected = reference_attention(attn, x, context, padding_mask=PADDING)
    assert out.shape == (2, 3, DIM)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_sdpa_is_the_default_and_need_weights_takes_the_explicit_path(monkeypatch) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    attn, x = _attn(), torch.randn(2, 5, DIM)
    attn(x)
    assert len(calls) == 1
    attn(x, need_weights=True)
    assert len(calls) == 1


@pytest.mark.parametrize("short_keys", [64, 4])
def test_bf16_training_on_cpu_avoids_the_slow_half_precision_kernel(
    monkeypatch, short_keys
) -> None:
    """Under bf16 autocast with gradients, up to SHORT_KEYS keys the softmax is written out in
    bf16 (SDPA is not called), beyond them SDPA gets fp32 inputs (its CPU backward is much
    faster than in bf16); the layer returns bf16 either way, and without gradients SDPA runs
    in bf16."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(attention, "SHORT_KEYS", short_keys)
    attn, x = _attn().train(), torch.randn(2, 7, DIM, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, padding_mask=PADDING)
        with torch.no_grad():
            attn(x, padding_mask=PADDING)
    trained = [] if short_keys >= 7 else [torch.float32]
    assert seen == [*trained, torch.bfloat16] and out.dtype == torch.bfloat16
    out.float().sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    reference_attention(attn, reference, padding_mask=PADDING).sum().backward()
    torch.testing.assert_close(
        out.float(), reference_attention(attn, x, padding_mask=PADDING), atol=0.05, rtol=0.05
    )
    torch.testing.assert_close(x.grad, reference.grad, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("padded", [False, True])
def test_short_bf16_causal_training_masks_the_future(padded: bool) -> None:
    """The written-out path builds the causal mask SDPA would have built in its kernel."""
    attn = _attn().train()
    x = torch.randn(2, 7, DIM, requires_grad=True)
    mask = PADDING if padded else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, padding_mask=mask, causal=True)
    expected = reference_attention(attn, x, padding_mask=mask, causal=True)
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("causal", [False, True])
def test_need_weights_path_equals_sdpa_path_and_rows_sum_to_one(causal: bool) -> None:
    attn, x = _attn(), torch.randn(2, 7, DIM)
    out = attn(x, padding_mask=PADDING, causal=causal)
    out_w, weights = attn(x, padding_mask=PADDING, causal=causal, need_weights=True)
    torch.testing.assert_close(out_w, out, atol=1e-5, rtol=0)
    assert weights.shape == (2, HEADS, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, 7))
    assert (weights[1, :, :, 4:] == 0).all()  # padded keys get no weight
    if causal:
        assert (weights.triu(diagonal=1) == 0).all()  # nor do future keys


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_causal_outputs_ignore_future_tokens(need_weights: bool, padded: bool) -> None:
    attn, x = _attn(), torch.randn(2, 7, DIM)
    changed = x.clone()
    changed[:, 3:] = torch.randn(2, 4, DIM)
    mask = PADDING if padded else None

    def run(inp: Tensor) -> Tensor:
        out = attn(inp, padding_mask=mask, causal=True, need_weights=need_weights)
        return out[0] if need_weights else out

    a, b = run(x), run(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 3:], b[:, 3:])  # the future does reach later positions


# Sample 1 is all padding (no query has a key); with causal=True, sample 0's first query only
# sees key 0, which is padded (left padding), so that row is empty too.
FULLY_MASKED = torch.tensor([[True, False, False, False], [True, True, True, True]])


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_rows_give_zeros_and_finite_gradients(need_weights: bool, causal: bool):
    attn = _attn().train()  # gradients as in training (no dropout configured)
    x = torch.randn(2, 4, DIM, requires_grad=True)
    result = attn(x, padding_mask=FULLY_MASKED, causal=causal, need_weights=need_weights)
    out = result[0] if need_weights else result
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    if causal:
        assert (out[0, 0] == 0).all()
    assert out[0, 1:].abs().sum() > 0  # rows with keys are not zeroed
    if need_weights:
        weights = result[1]
        assert (weights[1] == 0).all() and torch.isfinite(weights).all()
        torch.testing.assert_close(weights[0, :, 1:].sum(-1), torch.ones(HEADS, 3))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    expected = reference_attention(attn, x.detach(), padding_mask=FULLY_MASKED, causal=causal)
    torch.testing.assert_close(out.detach(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rotary", [False, True])
def test_self_attention_kv_cache_equals_full_causal_pass(rotary: bool) -> None:
    rope = RotaryEmbedding(DIM // HEADS) if rotary else None
    attn, x = _attn(rope=rope), torch.randn(2, 6, DIM)
    full = attn(x, causal=True)
    cache = KVCache()
    chunks = [x[:, :2], x[:, 2:3], x[:, 3:6]]  # a prompt, one step, then several at once
    steps = [attn(chunk, causal=True, cache=cache) for chunk in chunks]
    assert len(cache) == 6 and cache.k.shape == (2, HEADS, 6, DIM // HEADS)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_kv_cache_reorder_selects_batch_rows() -> None:
    cache = KVCache()
    assert len(cache) == 0
    cache.reorder(torch.tensor([0]))  # an empty cache stays empty
    assert len(cache) == 0 and cache.k is None
    k, v = torch.randn(3, HEADS, 5, 4), torch.randn(3, HEADS, 5, 4)
    cache.k, cache.v = k, v
    cache.reorder(torch.tensor([2, 0, 0]))
    assert torch.equal(cache.k, k[[2, 0, 0]]) and torch.equal(cache.v, v[[2, 0, 0]])


def test_lengths_to_padding_mask_is_true_at_padding() -> None:
    mask = lengths_to_padding_mask(torch.tensor([3, 1, 0]))
    expected = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert lengths_to_padding_mask(torch.tensor([2]), max_len=4).tolist() == [[0, 0, 1, 1]]


def test_build_attention_mask_is_true_where_a_query_may_attend() -> None:
    assert build_attention_mask(None, False, 3, 3, torch.device("cpu")) is None
    padding = torch.tensor([[False, False, True]])
    mask = build_attention_mask(padding, True, 3, 3, torch.device("cpu"))
    assert mask.shape == (1, 1, 3, 3)
    assert mask[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    # with a cache, the 2 queries are the last 2 of 4 keys
    cached = build_attention_mask(None, True, 2, 4, torch.device("cpu"))
    assert cached[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]


def test_dim_must_divide_into_heads() -> None:
    with pytest.raises(ValueError, match="dim 10 is not divisible by num_heads 4"):
        MultiHeadAttention(10, 4)


def test_cross_attention_without_context_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match=r"context tensor \(B, M, D\)"):
        _attn(cross=True)(torch.randn(1, 2, DIM))


# ---------------------------------------------------------------------------------------------
# Inspection points (weight_sink, head_mask) and layers with fewer heads than D / Dh


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_weight_sink_receives_the_reference_weights_of_every_call(causal: bool, cross: bool):
    attn, x = _attn(cross=cross), torch.randn(2, 7, DIM)
    context = torch.randn(2, 7, DIM) if cross else None
    causal = causal and not cross
    default = attn(x, context, padding_mask=PADDING, causal=causal)
    attn.weight_sink = []
    out = attn(x, context, padding_mask=PADDING, causal=causal)
    attn(x[:1], None if context is None else context[:1], padding_mask=PADDING[:1])
    sink, attn.weight_sink = attn.weight_sink, None
    expected_out, expected = reference_with_weights(attn, x, context, PADDING, causal)
    assert len(sink) == 2 and sink[1].shape == (1, HEADS, 7, 7)
    torch.testing.assert_close(sink[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(sink[0].sum(-1), torch.ones(2, HEADS, 7))  # rows sum to 1
    assert (sink[0][1, :, :, 4:] == 0).all()  # masked keys get exactly zero
    torch.testing.assert_close(out, default, atol=1e-5, rtol=0)  # the output is unchanged
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=0)


def test_the_default_forward_stays_on_sdpa_outside_an_inspection(monkeypatch) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    attn, x = _attn(), torch.randn(2, 5, DIM)
    attn(x)
    attn.weight_sink = []
    attn(x)  # recording: the explicit path
    attn.weight_sink = None
    attn.head_mask = torch.ones(HEADS)
    attn(x)  # a head mask alone keeps SDPA
    assert len(calls) == 2


def _without_heads(attn: MultiHeadAttention, heads: list[int]) -> MultiHeadAttention:
    """A copy whose output projection ignores ``heads`` (their columns zeroed)."""
    copy = _attn()
    copy.load_state_dict(attn.state_dict())
    dh = DIM // HEADS
    with torch.no_grad():
        for h in heads:
            copy.proj.weight[:, h * dh : (h + 1) * dh] = 0.0
    return copy


def test_head_mask_removes_heads_for_the_batch_or_per_sample() -> None:
    attn, x = _attn(), torch.randn(2, 5, DIM)
    attn.head_mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(attn(x), _without_heads(attn, [1, 3])(x), atol=1e-6, rtol=0)
    attn.head_mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # (B, H)
    out = attn(x)
    attn.head_mask = None
    torch.testing.assert_close(out[0], _without_heads(attn, [1])(x)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], attn(x)[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cross", [False, True])
def test_fewer_heads_of_full_width_equal_the_full_layer_with_the_rest_masked(cross: bool):
    full, keep, dh = _attn(cross=cross), [0, 2], DIM // HEADS
    small = MultiHeadAttention(DIM, len(keep), head_dim=dh, cross=cross).eval()
    rows = torch.cat([torch.arange(h * dh, (h + 1) * dh) for h in keep])
    parts = {"qkv": 3, "q": 1, "kv": 2}
    state = {}
    for name, tensor in full.state_dict().items():
        part, kind = name.split(".")
        if part == "proj":
            state[name] = tensor[:, rows] if kind == "weight" else tensor
        else:  # rows laid out (part, head, Dh)
            state[name] = tensor[torch.cat([rows + p * DIM for p in range(parts[part])])]
    small.load_state_dict(state)
    assert small.proj.weight.shape == (DIM, len(keep) * dh)
    x, context = torch.randn(2, 5, DIM), torch.randn(2, 6, DIM) if cross else None
    full.head_mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(small(x, context), full(x, context), atol=1e-6, rtol=0)


def test_a_head_count_needs_at_least_one_head() -> None:
    assert MultiHeadAttention(10, 4, head_dim=3).qkv.weight.shape == (36, 10)
    with pytest.raises(ValueError, match="at least one head"):
        MultiHeadAttention(DIM, 0, head_dim=4)
