"""Int8 static quantization (zoo.quantize): the quantized graph holds int8 ops, agrees with the
float model, accepts other batch sizes, and bad calls get one clear sentence."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.quantize import attention_bf16, quantize_int8

pytest.importorskip("torchao", reason="int8 quantization needs torchao (the quant extra)")


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(
        "test_vit", img_size=16, patch_size=4, dim=32, depth=2, num_heads=2, num_classes=5
    ).eval()


def batches(n: int, size: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 16, 16, generator=gen) for _ in range(n)]


def model_input_and_logits(size: int = 16) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The tiny ViT, a batch of ``size`` images and the float model's logits for it."""
    model = tiny_vit()
    x = batches(1, size=size)[0]
    with torch.no_grad():
        return model, x, model(x)


def test_int8_graph_agrees_with_the_float_model() -> None:
    model = tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model, batches(4), compile=False)
    for key, value in model.state_dict().items():  # the float model is left as it was
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    targets = [str(n.target) for n in quantized.graph.graph.nodes if n.op == "call_function"]
    assert sum("quantize_per_tensor" in t for t in targets) >= 2 * 2  # qkv, proj, fc1, fc2 ...
    x = batches(1, size=16)[0]  # another batch size than calibration's
    with torch.no_grad():
        ref = model(x)
    out = quantized(x)
    assert out.shape == ref.shape == (16, 5)
    assert (out - ref).norm() / ref.norm() < 0.1
    assert not torch.equal(out, ref)  # it did change the arithmetic


def attention_targets(quantized) -> list[object]:
    return [
        n.target
        for n in quantized.graph.graph.nodes
        if n.target is attention_bf16 or "scaled_dot_product" in str(n.target)
    ]


def test_attention_dtype_picks_the_attention_kernel() -> None:
    model, x, ref = model_input_and_logits()
    fp32 = quantize_int8(model, batches(2), compile=False, attention_dtype=torch.float32)
    bf16 = quantize_int8(
        model, batches(2), compile=False, attention_dtype=torch.bfloat16, float_dtype=torch.float32
    )
    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    assert attention_targets(fp32) == [sdpa, sdpa]  # one per block, PyTorch's kernel
    assert attention_targets(bf16) == [attention_bf16, attention_bf16]
    out32, out16 = fp32(x), bf16(x)
    assert (out16 - ref).norm() / ref.norm() < 0.1
    assert (out16 - out32).norm() / out32.norm() < 0.05  # bf16 rounding, not a different model
    assert not torch.equal(out16, out32)


def test_bf16_graph_runs_under_autocast_and_returns_float32() -> None:
    model, x, ref = model_input_and_logits()
    fp32 = quantize_int8(model, batches(2), compile=False, float_dtype=torch.float32)
    bf16 = quantize_int8(model, batches(2), compile=False, float_dtype=torch.bfloat16)
    assert (fp32.float_dtype, bf16.float_dtype) == (torch.float32, torch.bfloat16)
    assert attention_targets(bf16) == [attention_bf16, attention_bf16]  # bf16 graph, bf16 attention
    asserts = [n for n in bf16.graph.graph.nodes if "_assert_tensor_metadata" in str(n.target)]
    assert asserts == []  # export's float32 checks would fail on bf16 values
    calls = []
    hook = bf16.graph.register_forward_hook(lambda m, i, o: calls.append(o.dtype))
    out16, out32 = bf16(x), fp32(x)
    hook.remove()
    assert calls == [torch.bfloat16]  # the graph itself computed in bf16 ...
    assert out16.dtype == torch.float32  # ... and the caller gets float32
    assert (out16 - ref).norm() / ref.norm() < 0.1
    assert (out16 - out32).norm() / out32.norm() < 0.05
    assert not torch.equal(out16, out32)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_bf16_attention_matches_sdpa(mask_kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 16, generator=gen) for _ in range(3))
    mask, causal = None, mask_kind == "causal"
    if mask_kind == "bool":  # the second sequence has its last three keys padded
        mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
        mask[1, :, :, 4:] = False
    elif mask_kind == "float":
        mask = torch.randn(2, 1, 7, 7, generator=gen)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
    out = attention_bf16(q, k, v, attn_mask=mask, is_causal=causal, scale=0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)  # bf16 has 8 significant bits
    default_scale = attention_bf16(q, k, v, attn_mask=mask, is_causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(default_scale, ref, atol=3e-2, rtol=3e-2)


def test_bad_attention_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"attention_dtype must be .* got torch.float16"):
        quantize_int8(tiny_vit(), batches(1), attention_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"float_dtype must be .* got torch.float64"):
        quantize_int8(tiny_vit(), batches(1), float_dtype=torch.float64)
    with pytest.raises(ValueError, match=r"attention_dtype=torch.float32 needs float_dtype="):
        quantize_int8(
            tiny_vit(), batches(1), attention_dtype=torch.float32, float_dtype=torch.bfloat16
        )
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="attention_bf16 is for inference; got dropout_p=0.1"):
        attention_bf16(q, q, q, dropout_p=0.1)


def test_empty_calibration_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_int8(tiny_vit(), [])


def test_missing_torchao_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantize_pt2e", None)
    with pytest.raises(ImportError, match=r"needs the torchao package.*\.\[quant\]"):
        quantize_int8(tiny_vit(), batches(1))


@pytest.mark.slow
def test_compiled_int8_model_matches_the_reference_graph() -> None:
    model, x, ref = model_input_and_logits(size=8)
    for dtype in (torch.float32, torch.bfloat16):
        compiled = quantize_int8(model, batches(2), float_dtype=dtype)
        reference = quantize_int8(model, batches(2), compile=False, float_dtype=dtype)
        out = compiled(x)
        assert out.dtype == torch.float32
        assert (out - ref).norm() / ref.norm() < 0.1
        torch.testing.assert_close(out, reference(x), atol=0.05, rtol=0.05)


class DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)  # export cannot trace this branch


def test_a_model_that_cannot_be_exported_is_named() -> None:
    with pytest.raises(ValueError, match="DataDependent cannot be exported for int8"):
        quantize_int8(DataDependent(), [torch.randn(2, 4)])
