"""Post-training int8 quantization for CPU inference.

Static quantization through PyTorch 2 export (torchao's PT2E flow with the x86 inductor
quantizer): the model is exported to a graph, observers record activation ranges on a few
calibration batches, and every Linear and Conv becomes an int8 kernel (per-channel weights,
per-tensor activations). ``torch.compile`` with inductor's freezing then folds the int8 weights
into oneDNN's packed layout; without compilation the quantized graph runs as reference ops
(correct, but slower than fp32). Attention (softmax(QK^T/sqrt(d))V), which has no int8 kernel
here, runs its two matmuls in bfloat16 with a float32 softmax where the CPU has oneDNN's bf16
support (``attention_dtype``), and there the values between the int8 kernels (their outputs,
layer norms, GELU, residual adds) are bfloat16 too (``float_dtype``, "int8-mixed-bf16").

    from zoo.quantize import quantize_int8
    fast = quantize_int8(model, calibration=[images[:64], images[64:128]])
    logits = fast(images)

Needs the optional ``torchao`` package (``pip install -e ".[quant]"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["Int8Model", "attention_bf16", "quantize_int8"]

_SDPA = torch.ops.aten.scaled_dot_product_attention.default
_ASSERT_METADATA = torch.ops.aten._assert_tensor_metadata.default


def _pt2e():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as e:
        raise ImportError(
            f"int8 quantization needs the torchao package ({e}); "
            "install it with pip install -e \".[quant]\""
        ) from e
    return prepare_pt2e, convert_pt2e, x86


class Int8Model(nn.Module):
    """The quantized graph, compiled (or not), behind a module that takes the model's input.

    Calls run under ``torch.no_grad`` and, when compiled, with inductor's freezing on, which
    is what turns the int8 weights into packed oneDNN kernels (it is switched on for these
    calls only, so other compiled models are unaffected), as is inductor's C++ wrapper. With
    ``float_dtype=torch.bfloat16`` they also run under CPU bf16 autocast; the output is
    float32 either way.
    """

    def __init__(
        self, graph: nn.Module, compiled: bool, float_dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.graph = graph
        self.compiled = compiled
        self.float_dtype = float_dtype
        # one compiled graph per input shape; kept out of the module tree (it wraps self.graph)
        run = torch.compile(graph, dynamic=False) if compiled else graph
        object.__setattr__(self, "_run", run)

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.float_dtype == torch.bfloat16
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            if not self.compiled:
                return _float32(self._run(x))
            import torch._inductor.config as inductor_config

            # the C++ wrapper calls each kernel without a Python frame (faster: docs/benchmarks.md);
            # inductor's int8 lowering trips PyTorch's own copy-construct warning; not ours to fix
            config = inductor_config.patch(freezing=True, cpp_wrapper=True)
            with config, warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="To copy construct from a tensor", module="torch._inductor"
                )
                return _float32(self._run(x))


def _float32(out: Tensor) -> Tensor:
    """A bf16 tensor output (the mixed graph's) as float32; any other output as it is."""
    return out.float() if isinstance(out, Tensor) and out.dtype == torch.bfloat16 else out


def attention_bf16(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Inference attention with both matmuls in bfloat16 and the softmax in float32.

    Takes the arguments of ``F.scaled_dot_product_attention`` (no dropout) and returns the
    query's dtype. Scores and weights are rounded to bf16 (about 3 significant digits) before
    their matmul. On a CPU with native bf16 dot products (AVX-512 BF16) this is faster than
    PyTorch's float32 kernel, which the graph would otherwise keep (docs/benchmarks.md has the
    profile).
    """
    if dropout_p:
        raise ValueError(f"attention_bf16 is for inference; got dropout_p={dropout_p}")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    # the scale goes on the queries (one pass over N x D, not N x N)
    q = (query * scale).to(torch.bfloat16)
    scores = torch.matmul(q, key.to(torch.bfloat16).transpose(-2, -1)).float()
    if is_causal:  # top-left aligned, as in scaled_dot_product_attention
        n_q, n_k = scores.shape[-2:]
        attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = scores.softmax(dim=-1).to(torch.bfloat16)
    return torch.matmul(weights, value.to(torch.bfloat16)).to(query.dtype)


def _use_bf16_attention(graph: torch.fx.GraphModule) -> None:
    """Point the graph's attention calls at ``attention_bf16``.

    Calls with grouped-query heads or dropout keep PyTorch's kernel.
    """
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target is not _SDPA:
            continue
        dropout = node.args[4] if len(node.args) > 4 else node.kwargs.get("dropout_p", 0.0)
        if not node.kwargs.get("enable_gqa", False) and not dropout:
            node.target = attention_bf16
    graph.recompile()


def _drop_dtype_asserts(graph: torch.fx.GraphModule) -> None:
    """Remove export's float32 dtype checks, which bf16 autocast would fail."""
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is _ASSERT_METADATA and not node.users:
            graph.graph.erase_node(node)
    graph.recompile()


def quantize_int8(
    model: nn.Module,
    calibration: Iterable[Tensor],
    compile: bool = True,
    dynamic_batch: bool = True,
    attention_dtype: torch.dtype | None = None,
    float_dtype: torch.dtype | None = None,
) -> Int8Model:
    """Int8 static quantization of a model whose forward takes one tensor (e.g. a ViT).

    Args:
        model: the float model; it is put in eval mode and left otherwise unchanged.
        calibration: input batches that show typical activations (a few batches of real
            data; random inputs give poor ranges). The first one is also the export example.
        compile: compile the quantized graph (the fast path). False keeps reference ops,
            useful to check accuracy without the compile time.
        dynamic_batch: allow batch sizes other than the first calibration batch's (each new
            size is compiled on its first call).
        attention_dtype: the dtype of the attention matmuls (``scaled_dot_product_attention``
            calls), which stay in floating point: ``torch.bfloat16`` (``attention_bf16``) or
            ``torch.float32`` (PyTorch's kernel, unchanged). None picks bf16 where oneDNN
            supports it on this CPU (AVX-512 or newer), else float32.
        float_dtype: the dtype of the values between the int8 kernels (their outputs, layer
            norms, activations, residual adds): ``torch.bfloat16`` runs the graph under CPU
            bf16 autocast ("int8-mixed-bf16"; attention is then bf16 too), ``torch.float32``
            keeps them float32. None picks bf16 where oneDNN supports it and attention is not
            asked to be float32, else float32. The output is float32 either way.

    Raises:
        ImportError: torchao is not installed.
        ValueError: ``calibration`` is empty, the model cannot be exported to a graph, a dtype
            is neither float32 nor bfloat16, or float32 attention is asked for in a bf16 graph.
    """
    _check_dtypes(attention_dtype, float_dtype)
    prepare_pt2e, convert_pt2e, x86 = _pt2e()
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("quantize_int8 needs at least one calibration batch; got none")
    model.eval()
    graph = _export(model, first, dynamic_batch)
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        prepared(first)
        for batch in batches:
            prepared(batch)
    attention_dtype, float_dtype = _pick_dtypes(attention_dtype, float_dtype)
    quantized = convert_pt2e(prepared)
    if attention_dtype == torch.bfloat16:
        _use_bf16_attention(quantized)
    if float_dtype == torch.bfloat16:
        _drop_dtype_asserts(quantized)
    return Int8Model(quantized, compiled=compile, float_dtype=float_dtype)


def _check_dtypes(attention_dtype: torch.dtype | None, float_dtype: torch.dtype | None) -> None:
    for arg, dtype in (("attention_dtype", attention_dtype), ("float_dtype", float_dtype)):
        if dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"{arg} must be torch.float32, torch.bfloat16 or None; got {dtype}")
    if attention_dtype == torch.float32 and float_dtype == torch.bfloat16:
        raise ValueError(
            "attention_dtype=torch.float32 needs float_dtype=torch.float32 (a bf16 graph feeds "
            "attention bf16 values)"
        )


def _pick_dtypes(
    attention_dtype: torch.dtype | None, float_dtype: torch.dtype | None
) -> tuple[torch.dtype, torch.dtype]:
    """The attention and float dtypes, bf16 for those left None where oneDNN supports it."""
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if attention_dtype is None:
        asked = float_dtype == torch.bfloat16
        attention_dtype = torch.bfloat16 if bf16 or asked else torch.float32
    if float_dtype is None:
        float_dtype = attention_dtype if bf16 else torch.float32
    return attention_dtype, float_dtype


def _export(model: nn.Module, example: Tensor, dynamic_batch: bool) -> torch.fx.GraphModule:
    """``torch.export`` of ``model`` on ``example``; its long errors cut to the first line."""
    dims = ({0: torch.export.Dim.AUTO},) if dynamic_batch else None
    try:
        with torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes=dims).module()
    except Exception as e:  # export's errors are long; the first line names the cause
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{type(model).__name__} cannot be exported for int8 quantization: {cause}"
        ) from e
