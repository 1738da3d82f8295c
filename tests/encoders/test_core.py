"""The shared core: encoder padding invariance, intermediates, options; causality and KV-cached
incremental decoding of the causal encoder and of the decoder, the cross-attention cache and
cache reordering."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from encoders.attention import lengths_to_padding_mask
from encoders.core import CoreConfig, DecoderCache, TransformerDecoder, TransformerEncoder
from encoders.layers import LayerScale

DIM, HEADS = 16, 4


def _encoder(**kwargs) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(DIM, kwargs.pop("depth", 2), HEADS, **kwargs).eval()


def _decoder(**kwargs) -> TransformerDecoder:
    torch.manual_seed(0)
    return TransformerDecoder(DIM, kwargs.pop("depth", 2), HEADS, **kwargs).eval()


@pytest.mark.parametrize(
    "options",
    [{}, {"norm_first": False}, {"rotary": True}, {"conformer": True, "conv_kernel": 3}],
    ids=["pre_norm", "post_norm", "rotary", "conformer"],
)
def test_encoder_padded_sample_equals_its_unpadded_run(options: dict) -> None:
    enc = _encoder(**options)
    x = torch.randn(2, 7, DIM)
    x[1, 4:] = 50.0  # padding content must not matter
    mask = lengths_to_padding_mask(torch.tensor([7, 4]))
    out = enc(x, mask)
    torch.testing.assert_close(out[1, :4], enc(x[1:, :4])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], enc(x[:1])[0], atol=1e-5, rtol=0)


def test_encoder_options_reach_the_layers() -> None:
    post = _encoder(norm_first=False)
    assert isinstance(post.norm, nn.Identity) and not post.blocks[0].norm_first
    scaled = _encoder(layer_scale=0.1)
    assert all(isinstance(b.ls1, LayerScale) for b in scaled.blocks)
    swiglu = _encoder(act="swiglu")
    assert swiglu.blocks[0].mlp.act == "swiglu"
    # a block whose rate is 0 gets an Identity instead of a DropPath
    rates = [getattr(b.drop_path, "p", 0.0) for b in _encoder(depth=5, drop_path=0.4).blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])  # linear in depth


def test_drop_path_is_inactive_in_eval() -> None:
    enc = _encoder(drop_path=0.9)
    x = torch.randn(4, 5, DIM)
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc.eval()(x))


def test_forward_intermediates_returns_the_requested_layers() -> None:
    enc = _encoder(depth=4)
    x = torch.randn(2, 5, DIM)
    final, everything = enc.forward_intermediates(x, norm=True)
    assert len(everything) == 4
    torch.testing.assert_close(final, enc(x))
    torch.testing.assert_close(everything[-1], enc(x))
    # the raw output of each block, run by hand
    h, raw = x, []
    for block in enc.blocks:
        h = block(h)
        raw.append(h)
    _, last_two = enc.forward_intermediates(x, indices=2)
    torch.testing.assert_close(last_two, raw[2:])
    _, chosen = enc.forward_intermediates(x, indices=[0, -1])
    torch.testing.assert_close(chosen, [raw[0], raw[3]])
    _, normed = enc.forward_intermediates(x, indices=[1], norm=True)
    torch.testing.assert_close(normed, [enc.norm(raw[1])])
    with pytest.raises(ValueError, match="layer index 4 out of range for depth 4"):
        enc.forward_intermediates(x, indices=[0, 4])


def _memory(b: int = 2, m: int = 6):
    memory = torch.randn(b, m, DIM)
    mask = lengths_to_padding_mask(torch.tensor([m] + [m - 2] * (b - 1)))
    return memory, mask


@pytest.mark.parametrize("rotary", [False, True])
def test_decoder_outputs_ignore_future_targets(rotary: bool) -> None:
    dec = _decoder(rotary=rotary)
    memory, mask = _memory()
    tgt = torch.randn(2, 5, DIM)
    changed = tgt.clone()
    changed[:, 2:] = torch.randn(2, 3, DIM)
    a, b = dec(tgt, memory, mask), dec(changed, memory, mask)
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 2:], b[:, 2:])


@pytest.mark.parametrize(
    "options",
    [{}, {"rotary": True}, {"norm_first": False}],
    ids=["pre_norm", "rotary", "post_norm"],
)
def test_decoder_kv_cache_equals_a_full_pass(options: dict) -> None:
    dec = _decoder(**options)
    memory, mask = _memory()
    tgt = torch.randn(2, 6, DIM)
    full = dec(tgt, memory, mask)
    cache = dec.new_cache()
    outs = []
    for start, stop in ((0, 1), (1, 2), (2, 4), (4, 5), (5, 6)):  # single steps and a chunk
        outs.append(dec(tgt[:, start:stop], memory if start == 0 else None, mask, cache=cache))
        assert cache.offset == stop
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rotary", [False, True])
def test_causal_encoder_outputs_ignore_later_tokens(rotary: bool) -> None:
    enc = _encoder(rotary=rotary)
    x = torch.randn(2, 6, DIM)
    changed = x.clone()
    changed[:, 3:] = torch.randn(2, 3, DIM)
    a, b = enc(x, causal=True), enc(changed, causal=True)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    assert not torch.allclose(enc(x)[:, :3], a[:, :3])  # the default stays bidirectional


@pytest.mark.parametrize(
    "options",
    [{}, {"rotary": True}, {"norm_first": False}],
    ids=["pre_norm", "rotary", "post_norm"],
)
def test_causal_encoder_kv_cache_equals_a_full_pass(options: dict) -> None:
    enc = _encoder(**options)
    x = torch.randn(2, 6, DIM)
    full = enc(x, causal=True)
    cache = enc.new_cache()
    outs = [enc(x[:, a:b], causal=True, cache=cache) for a, b in ((0, 3), (3, 4), (4, 5), (5, 6))]
    assert [len(c) for c in cache] == [6, 6]
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


def test_causal_encoder_refuses_a_cache_without_causality_and_a_conformer() -> None:
    enc = _encoder()
    with pytest.raises(ValueError, match="causal=True"):
        enc(torch.randn(1, 3, DIM), cache=enc.new_cache())
    with pytest.raises(ValueError, match="2 layer caches, got 1"):
        enc(torch.randn(1, 3, DIM), causal=True, cache=enc.new_cache()[:1])
    with pytest.raises(ValueError, match="Conformer"):
        _encoder(conformer=True, conv_kernel=3)(torch.randn(1, 3, DIM), causal=True)


def test_cross_attention_keys_are_computed_once_per_source() -> None:
    dec = _decoder()
    calls = [0] * dec.depth

    def count(i: int):
        def hook(module, args, output):
            calls[i] += 1

        return hook

    for i, block in enumerate(dec.blocks):
        block.cross_attn.kv.register_forward_hook(count(i))
    memory, mask = _memory()
    cache = dec.new_cache()
    for _ in range(5):
        dec(torch.randn(2, 1, DIM), memory, mask, cache=cache)  # memory passed every step
    assert calls == [1] * dec.depth
    assert all(len(cross) == memory.shape[1] for _, cross in cache.layers)


def test_decoder_cache_reorder_continues_like_a_full_pass_on_the_reordered_batch() -> None:
    dec = _decoder(rotary=True)
    memory, mask = _memory(b=3)
    tgt = torch.randn(3, 5, DIM)
    cache = dec.new_cache()
    dec(tgt[:, :3], memory, mask, cache=cache)
    index = torch.tensor([2, 0, 0])  # e.g. beam 2 survives once, beam 0 twice
    cache.reorder(index)
    assert all(len(s) == 3 and s.k.shape[0] == 3 for s, _ in cache.layers)
    step = dec(tgt[index, 3:], None, mask[index], cache=cache)
    full = dec(tgt[index], memory[index], mask[index])
    torch.testing.assert_close(step, full[:, 3:], atol=1e-5, rtol=0)


def test_decoder_cache_starts_empty() -> None:
    cache = DecoderCache(3)
    assert len(cache.layers) == 3 and cache.offset == 0


def test_decoder_without_memory_or_cache_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match="needs a context tensor"):
        _decoder()(torch.randn(1, 2, DIM), None)


def test_core_config_builds_the_stack_and_checks_its_settings() -> None:
    from encoders.core import CORE_SIZES, CoreConfig, core_size

    cfg = core_size("test", conformer=True, conv_kernel=3, drop_path=0.2)
    enc = TransformerEncoder.from_config(cfg)
    assert len(enc.blocks) == cfg.depth and enc.dim == cfg.dim
    assert type(enc.blocks[0]).__name__ == "ConformerLayer"
    assert CORE_SIZES["test"].conformer is False  # the named size itself is unchanged
    dec = TransformerDecoder.from_config(cfg, depth=3)
    assert len(dec.blocks) == 3 and dec.blocks[0].attn.num_heads == cfg.num_heads
    with pytest.raises(ValueError, match="core dim 10 is not divisible by num_heads 4"):
        CoreConfig(dim=10, num_heads=4)
    with pytest.raises(ValueError, match="unknown core activation 'tanh'"):
        CoreConfig(act="tanh")


def test_stack_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        TransformerEncoder(DIM, 2, HEADS, 2.0)  # mlp_ratio by position would be silent
    with pytest.raises(TypeError):
        TransformerDecoder(DIM, 2, HEADS, 2.0)


def test_a_plain_core_loads_into_a_conformer_core_by_name() -> None:
    plain, conformer = _encoder(), _encoder(conformer=True, conv_kernel=3)
    missing, unexpected = conformer.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert all(k.split(".")[2] in {"norm_ff1", "ff1", "norm_conv", "conv", "norm_out"}
               for k in missing)
    torch.testing.assert_close(conformer.blocks[0].attn.qkv.weight, plain.blocks[0].attn.qkv.weight)


# ---------------------------------------------------------------------------------------------
# Pruned heads and head gates in the core config


def test_kept_heads_per_layer_build_narrower_attention() -> None:
    cfg = CoreConfig(dim=32, depth=2, num_heads=4, heads_per_layer=[[0, 2], [1, 2, 3]])
    assert cfg.heads_per_layer == ((0, 2), (1, 2, 3))  # JSON lists become tuples
    core = TransformerEncoder.from_config(cfg)
    first, second = core.blocks[0].attn, core.blocks[1].attn
    assert (first.num_heads, second.num_heads, first.head_dim) == (2, 3, 8)
    assert first.qkv.weight.shape == (3 * 2 * 8, 32) and first.proj.weight.shape == (32, 16)
    assert core(torch.randn(2, 5, 32)).shape == (2, 5, 32)


@pytest.mark.parametrize("heads, problem", [
    ([[0, 1]], "one entry per layer"),
    ([[0, 1], []], r"heads_per_layer\[1\]"),
    ([[0, 4], [0]], "below 4"),
    ([[1, 0], [0]], "increasing"),
])  # fmt: skip
def test_kept_heads_are_checked(heads, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CoreConfig(dim=32, depth=2, num_heads=4, heads_per_layer=heads)


def test_a_decoder_keeps_self_and_cross_heads_per_layer() -> None:
    cfg = CoreConfig(dim=32, depth=1, num_heads=4)
    decoder = TransformerDecoder.from_config(cfg, 2, [[[0, 1], [2]], [[3], [0, 1, 3]]])
    counts = [(b.attn.num_heads, b.cross_attn.num_heads) for b in decoder.blocks]
    assert counts == [(2, 1), (1, 3)]
    out = decoder(torch.randn(2, 3, 32), torch.randn(2, 4, 32))
    assert out.shape == (2, 3, 32)
    with pytest.raises(ValueError, match=r"decoder_heads\[0\] must be a \(self, cross\) pair"):
        TransformerDecoder.from_config(cfg, 1, [[0, 1, 2]])


def test_head_gate_l0_puts_a_gate_on_every_attention_head() -> None:
    cfg = CoreConfig(dim=32, depth=2, num_heads=4, head_gate_l0=0.01)
    core, decoder = TransformerEncoder.from_config(cfg), TransformerDecoder.from_config(cfg, 1)
    gates = [m.gate for m in [*core.modules(), *decoder.modules()] if hasattr(m, "gate")]
    assert len(gates) == 4 and all(g is not None and g.log_alpha.shape == (4,) for g in gates)
    plain = CoreConfig(dim=32, depth=1, num_heads=4)
    assert TransformerEncoder.from_config(plain).blocks[0].attn.gate is None
    with pytest.raises(ValueError, match="head_gate_l0 must be >= 0"):
        CoreConfig(dim=32, depth=2, num_heads=4, head_gate_l0=-1.0)
