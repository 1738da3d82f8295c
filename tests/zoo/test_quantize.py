"""Int8 static quantization (zoo.quantize): the quantized graph holds int8 ops, agrees with the
float model, accepts other batch sizes, and bad calls get one clear sentence."""

from __future__ import annotations

import sys

import pytest
import torch

import zoo
from zoo.quantize import quantize_int8

pytest.importorskip("torchao", reason="int8 quantization needs torchao (the quant extra)")


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(
        "test_vit", img_size=16, patch_size=4, dim=32, depth=2, num_heads=2, num_classes=5
    ).eval()


def batches(n: int, size: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 16, 16, generator=gen) for _ in range(n)]


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
    model = tiny_vit()
    compiled = quantize_int8(model, batches(2))
    reference = quantize_int8(model, batches(2), compile=False)
    x = batches(1)[0]
    with torch.no_grad():
        ref = model(x)
    out = compiled(x)
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
