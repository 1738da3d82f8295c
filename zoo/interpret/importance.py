"""Which heads matter: gradient importance (Michel et al. 2019) and the metric cost of masking
each head alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from zoo.interpret.extract import attention_modules, masked_heads

logger = logging.getLogger(__name__)

Batch = dict[str, Any]


def _batch_size(batch: Batch) -> int:
    return len(next(v for v in batch.values() if isinstance(v, Tensor)))


def head_importance(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], tuple[Tensor, Any]],
    batches: Iterable[Batch],
    masks: Mapping[str, Tensor] | None = None,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Head importance I_h = sum over samples x of |dL(x)/d xi_h| (Michel et al. 2019).

    A gate xi of 1 multiplies each head's output before the output projection, one gate per
    sample and head, so one backward pass gives every sample's gradient (the loss of a batch is
    a sum or a mean of its samples' losses; a mean only scales a batch's scores). The model is
    put in evaluation mode (no dropout) for the pass and restored after.

    Args:
        model: any zoo model.
        loss_fn: ``(model, batch) -> (loss, ...)``, e.g. a task's ``loss``.
        batches: batches already on the model's device.
        masks: (H,) masks already applied (iterative pruning): masked heads score 0.
        normalize: divide each module's scores by their L2 norm (the paper's per-layer
            normalisation, which makes scores comparable across layers).
    Returns:
        module name -> (H,) importance, float32 on the CPU.
    """
    modules = attention_modules(model)
    device = next(model.parameters()).device
    masks = dict(masks or {})
    scores = {n: torch.zeros(m.num_heads, device=device) for n, m in modules.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                b = _batch_size(batch)
                gates = {n: torch.ones(b, m.num_heads, device=device, requires_grad=True)
                         for n, m in modules.items()}
                applied = {n: g * masks[n].to(device) if n in masks else g
                           for n, g in gates.items()}
                with masked_heads(model, applied):
                    loss = loss_fn(model, batch)[0]
                grads = torch.autograd.grad(loss, list(gates.values()), allow_unused=True)
                for name, grad in zip(gates, grads):
                    if grad is not None:
                        scores[name] += grad.abs().sum(0)
    finally:
        model.train(was_training)
    if normalize:
        scores = {n: s / s.norm().clamp_min(1e-20) for n, s in scores.items()}
    return {n: s.float().cpu() for n, s in scores.items()}


def ablate_heads(
    model: nn.Module, evaluate: Callable[[nn.Module], float]
) -> tuple[float, dict[str, Tensor]]:
    """The metric with every head, and with each head masked alone.

    Args:
        model: any zoo model.
        evaluate: ``model -> metric`` (e.g. a task's evaluate over a loader, one key of it).
    Returns:
        the baseline metric and, per module, (H,) metrics with that head masked.
    """
    baseline = float(evaluate(model))
    out = {}
    for name, module in attention_modules(model).items():
        device = module.proj.weight.device
        values = []
        for h in range(module.num_heads):
            mask = torch.ones(module.num_heads, device=device)
            mask[h] = 0.0
            with masked_heads(model, {name: mask}):
                values.append(float(evaluate(model)))
        out[name] = torch.tensor(values, dtype=torch.float64)
        logger.debug("%s: %s", name, ", ".join(f"{v:.4g}" for v in values))
    return baseline, out
