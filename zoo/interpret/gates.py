"""Learned head gates (Voita et al. 2019): the L0 penalty that trains them, their values, and
pruning the heads they closed.

A model gets gates with the core setting ``head_gate_l0`` (the penalty weight lambda), e.g.
``model.overrides.head_gate_l0: 0.01`` in a recipe; the engine adds
lambda * E[number of open gates] to each step's loss through :func:`add_gate_penalty`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo.interpret.extract import attention_modules
from zoo.interpret.prune import prune_heads


def gate_weight(model: nn.Module) -> float | None:
    """The model's L0 penalty weight, None when it has no gates."""
    return getattr(getattr(getattr(model, "cfg", None), "core", None), "head_gate_l0", None)


def expected_open(model: nn.Module) -> Tensor | None:
    """E[L0]: the expected number of open gates over all heads (differentiable), or None."""
    gates = [m.gate for m in attention_modules(model).values() if m.gate is not None]
    if not gates:
        return None
    return torch.stack([g.open_probability().sum() for g in gates]).sum()


def add_gate_penalty(
    model: nn.Module, loss: Tensor, logs: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    """``loss`` + lambda * E[L0] for a gated model (logging ``heads_open``, the expected open
    gates); ``loss`` and ``logs`` unchanged for any other model."""
    weight = gate_weight(model)
    opened = expected_open(model) if weight is not None else None
    if opened is None:
        return loss, logs
    return loss + weight * opened, {**logs, "heads_open": opened.item()}


@torch.no_grad()
def gate_values(model: nn.Module) -> dict[str, Tensor]:
    """The evaluation-time gate of every head, per gated module: (H,) in [0, 1]; 0 is closed.

    Raises:
        ValueError: the model has no gates.
    """
    values = {n: m.gate.deterministic().float().cpu() for n, m in attention_modules(model).items()
              if m.gate is not None}
    if not values:
        raise ValueError("the model has no head gates (train it with the core setting "
                         "head_gate_l0, e.g. model.overrides.head_gate_l0=0.01)")
    return values


def prune_closed_heads(model: nn.Module) -> nn.Module:
    """A copy of a gated model without its closed heads and without gates: each open head's
    gate value is folded into the output projection, so the copy's outputs equal the gated
    model's in evaluation. A module whose gates are all closed keeps one head (its output is
    then the projection's bias alone, as before).

    Raises:
        ValueError: the model has no gates.
    """
    values = gate_values(model)
    keep = {}
    for name, value in values.items():
        opened = torch.nonzero(value > 0).flatten().tolist()
        keep[name] = opened or [int(attention_modules(model)[name].gate.log_alpha.argmax())]
    return prune_heads(model, keep, scales=values, drop_gates=True)
