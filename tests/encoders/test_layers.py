"""Feed-forward activations, DropPath, LayerScale, the conformer convolution and the layers'
pre-/post-norm wiring and parameter names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from encoders.layers import (
    ConformerLayer,
    ConvModule,
    DecoderLayer,
    DropPath,
    EncoderLayer,
    FeedForward,
    LayerScale,
)

DIM, HEADS = 16, 4


@pytest.mark.parametrize(
    "act, fn",
    [
        ("gelu", F.gelu),
        ("relu", F.relu),
        ("swiglu", lambda h: h.chunk(2, -1)[0] * F.silu(h.chunk(2, -1)[1])),
    ],
)
def test_feed_forward_activations(act: str, fn) -> None:
    torch.manual_seed(0)
    ff = FeedForward(DIM, mlp_ratio=2.0, act=act).eval()
    hidden = 2 * DIM
    assert ff.fc1.out_features == (2 * hidden if act == "swiglu" else hidden)  # value + gate
    assert ff.fc2.in_features == hidden
    x = torch.randn(2, 3, DIM)
    torch.testing.assert_close(ff(x), ff.fc2(fn(ff.fc1(x))))


def test_feed_forward_activations_differ() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, DIM)
    outs = {}
    for act in ("gelu", "relu", "swiglu"):
        torch.manual_seed(1)
        outs[act] = FeedForward(DIM, act=act)(x)
    assert not torch.allclose(outs["gelu"], outs["relu"])
    assert not torch.allclose(outs["gelu"], outs["swiglu"])


def test_feed_forward_rejects_an_unknown_activation() -> None:
    with pytest.raises(ValueError, match="unknown activation 'tanh'.*gelu.*relu.*swiglu"):
        FeedForward(DIM, act="tanh")


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 5, DIM)
    drop = DropPath(0.5)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)
    y = drop.train()(x)
    kept = (y != 0).flatten(1).all(1)
    dropped = (y == 0).flatten(1).all(1)
    assert bool((kept | dropped).all())  # each sample is kept or dropped as a whole
    assert 0 < int(kept.sum()) < 64
    torch.testing.assert_close(y[kept], x[kept] / 0.5)  # kept samples are rescaled by 1/keep


def test_layer_scale_multiplies_channels_by_gamma() -> None:
    ls = LayerScale(DIM, init_value=0.1)
    assert torch.equal(ls.gamma, torch.full((DIM,), 0.1))
    x = torch.randn(2, 3, DIM)
    torch.testing.assert_close(ls(x), 0.1 * x)


def test_encoder_layer_scale_option_shrinks_the_residual_branches() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, DIM)
    plain = EncoderLayer(DIM, HEADS).eval()
    scaled = EncoderLayer(DIM, HEADS, layer_scale=1e-5).eval()
    assert isinstance(scaled.ls1, LayerScale) and isinstance(scaled.ls2, LayerScale)
    assert "ls1.gamma" in scaled.state_dict() and "ls1.gamma" not in plain.state_dict()
    assert (scaled(x) - x).abs().max() < 1e-3  # branches start near zero
    assert (plain(x) - x).abs().max() > 1e-1


def test_encoder_layer_pre_norm_and_post_norm_wiring() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, DIM)
    pre = EncoderLayer(DIM, HEADS, norm_first=True).eval()
    h = x + pre.attn(pre.norm1(x))
    torch.testing.assert_close(pre(x), h + pre.mlp(pre.norm2(h)))

    post = EncoderLayer(DIM, HEADS, norm_first=False).eval()
    post.load_state_dict(pre.state_dict())
    h = post.norm1(x + post.attn(x))
    out = post(x)
    torch.testing.assert_close(out, post.norm2(h + post.mlp(h)))
    # post-norm ends in a LayerNorm (weight 1, bias 0): every token has zero mean
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    assert not torch.allclose(pre(x), out)


def test_layer_parameter_names_follow_timm() -> None:
    keys = set(EncoderLayer(DIM, HEADS).state_dict())
    for name in (
        "norm1.weight",
        "attn.qkv.weight",
        "attn.proj.weight",
        "norm2.weight",
        "mlp.fc1.weight",
        "mlp.fc2.weight",
    ):
        assert name in keys
    dec = set(DecoderLayer(DIM, HEADS).state_dict())
    assert {"attn.qkv.weight", "cross_attn.q.weight", "cross_attn.kv.weight"} <= dec
    conformer = set(ConformerLayer(DIM, HEADS, conv_kernel=3).state_dict())
    assert {
        "ff1.fc1.weight",
        "conv.dw.weight",
        "conv.bn.running_mean",
        "norm_out.weight",
    } <= conformer


def test_conformer_convolution_ignores_padded_frames() -> None:
    torch.manual_seed(0)
    conv = ConvModule(DIM, kernel_size=5).eval()
    x = torch.randn(1, 9, DIM)
    mask = torch.tensor([[False] * 6 + [True] * 3])
    garbage = x.clone()
    garbage[:, 6:] = 100 * torch.randn(1, 3, DIM)
    out = conv(x, mask)
    torch.testing.assert_close(conv(garbage, mask)[:, :6], out[:, :6])
    torch.testing.assert_close(conv(x[:, :6])[:, :6], out[:, :6], atol=1e-6, rtol=0)
    assert out.shape == x.shape


def test_conformer_convolution_needs_an_odd_kernel() -> None:
    with pytest.raises(ValueError, match="conv_kernel must be odd.*got 4"):
        ConvModule(DIM, kernel_size=4)


def test_conformer_layer_is_macaron_with_a_final_norm() -> None:
    torch.manual_seed(0)
    layer = ConformerLayer(DIM, HEADS, conv_kernel=3).eval()
    x = torch.randn(2, 5, DIM)
    h = x + 0.5 * layer.ff1(layer.norm_ff1(x))
    h = h + layer.attn(layer.norm1(h))
    h = h + layer.conv(layer.norm_conv(h))
    h = h + 0.5 * layer.mlp(layer.norm2(h))
    torch.testing.assert_close(layer(x), layer.norm_out(h))
