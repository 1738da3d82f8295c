"""Optimizer and learning-rate schedules shared by every task.

AdamW with the usual split into decayed and non-decayed parameters (norms, biases, position and
cls embeddings are not decayed, as in BERT, ViT and DeiT), an optional per-parameter LR scale for
layer-wise LR decay, and three schedules written as plain ``LambdaLR`` closures so that the
scheduler's state dict holds only numbers and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# Parameters named like these are not decayed whatever their shape: decaying a learned position
# table or cls token pulls them towards zero, which hurts (ViT/DeiT recipes exclude them).
NO_DECAY_SUFFIXES = ("pos_embed", "cls_token")
NO_DECAY_INFIX = "pos_embed."

SCHEDULES = ("constant", "cosine", "inverse_sqrt")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Whether a parameter is exempt from weight decay (norms, biases, position/cls embeddings)."""
    return param.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES) or NO_DECAY_INFIX in name


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_scale_fn: Callable[[str], float] | None = None,
) -> list[dict]:
    """Split the trainable parameters of ``model`` into optimizer groups.

    Each trainable parameter appears exactly once (tied parameters are taken once, under the first
    name that reaches them). Groups are keyed by (weight decay, LR scale) and listed in the order
    their first parameter appears in the model.

    Args:
        model: The model whose ``requires_grad`` parameters are grouped.
        weight_decay: Decay for weight matrices; norms, biases and position/cls embeddings get 0.
        lr_scale_fn: Optional ``name -> scale`` hook (layer-wise LR decay); default scale is 1.

    Returns:
        A list of dicts with keys ``params``, ``param_names``, ``weight_decay`` and ``lr_scale``.
    """
    groups: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        decay = 0.0 if _no_decay(name, param) else float(weight_decay)
        scale = 1.0 if lr_scale_fn is None else float(lr_scale_fn(name))
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "param_names": [], "weight_decay": decay, "lr_scale": scale},
        )
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def combine_scales(
    a: Callable[[str], float] | None, b: Callable[[str], float] | None
) -> Callable[[str], float] | None:
    """Two ``name -> LR scale`` hooks as one (their product); None when neither is given."""
    if a is None or b is None:
        return a or b
    return lambda name: a(name) * b(name)


_BLOCK = re.compile(r"^(.*?)blocks\.(\d+)\.")


def layer_decay_scales(model: nn.Module, decay: float) -> Callable[[str], float]:
    """Layer-wise LR decay (BEiT, MAE fine-tuning): a ``name -> scale`` hook for `param_groups`.

    Layer ids count from the input: 0 for the modality adapter (a top-level module named
    ``*adapter``: patch/token embeddings, positions, cls token, conv stem), ``i + 1`` for
    ``blocks.i``, and ``L + 1`` for the rest (final norm, head), whose scale is 1. Layer ``j``
    trains at ``decay ** (L + 1 - j)`` times the base LR, so the input side moves least.

    Raises:
        ValueError: the model has no stack of ``blocks`` or more than one (an encoder-decoder),
            where "depth" has no single meaning.
    """
    stacks: dict[str, int] = {}
    for name, _ in model.named_parameters():
        match = _BLOCK.match(name)
        if match:
            stacks[match[1]] = max(stacks.get(match[1], 0), int(match[2]) + 1)
    if len(stacks) != 1:
        found = ", ".join(f"'{p}blocks'" for p in stacks) or "none"
        raise ValueError(
            f"layer-wise LR decay needs a model with one stack of blocks; "
            f"{type(model).__name__} has {found}"
        )
    (prefix, depth), = stacks.items()

    def scale(name: str) -> float:
        match = _BLOCK.match(name)
        if match:
            layer = int(match[2]) + 1
        elif name.split(".")[0].endswith("adapter"):  # the modality adapter: the input side
            layer = 0
        else:  # after the blocks: the stack's final norm, the head
            layer = depth + 1
        return decay ** (depth + 1 - layer)

    return scale


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_scale_fn: Callable[[str], float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, each group starting at ``lr * lr_scale``.

    Args:
        model: The model to optimize; only ``requires_grad`` parameters are included.
        lr: Peak learning rate (before any schedule and per-group scale).
        weight_decay: Decoupled weight decay for weight matrices.
        betas: Adam betas.
        eps: Adam epsilon.
        lr_scale_fn: Optional ``name -> scale`` hook, see :func:`param_groups`.

    Raises:
        ValueError: If the model has no trainable parameter.
    """
    groups = param_groups(model, weight_decay, lr_scale_fn)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    for group in groups:
        # The scheduler multiplies each group's initial lr, so the scale is baked in here.
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def _warmup(step: int, warmup_steps: int) -> float:
    # (step + 1) so that the very first update already moves (lr / warmup_steps, not 0).
    return (step + 1) / warmup_steps


def _cosine_factor(
    total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _inverse_sqrt_factor(warmup_steps: int) -> Callable[[int], float]:
    # fairseq's inverse_sqrt: lr * sqrt(warmup / step) after warmup, continuous at step == warmup.
    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        return math.sqrt(max(1, warmup_steps) / max(1, step))

    return factor


def _constant_factor(warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return _warmup(step, warmup_steps) if step < warmup_steps else 1.0

    return factor


def _with_cooldown(
    factor: Callable[[int], float], total_steps: int, cooldown_steps: int
) -> Callable[[int], float]:
    # warmup-stable-decay style: from the factor reached at the cooldown's start, linearly to 0
    start = total_steps - cooldown_steps
    held = factor(start)

    def cooled(step: int) -> float:
        if step < start:
            return factor(step)
        return held * max(0.0, (total_steps - step) / cooldown_steps)

    return cooled


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    cooldown_steps: int = 0,
) -> LambdaLR:
    """A per-step learning-rate schedule (call ``scheduler.step()`` after each optimizer step).

    The factor multiplies each group's initial lr (which already includes its ``lr_scale``):

    - ``"cosine"``: linear warmup to 1 over ``warmup_steps``, then a half cosine that reaches
      ``min_lr_ratio`` at ``total_steps`` and stays there.
    - ``"inverse_sqrt"``: linear warmup to 1, then ``sqrt(warmup_steps / step)`` (fairseq).
    - ``"constant"``: linear warmup to 1, then 1.

    With ``cooldown_steps`` > 0 the last that many steps fall linearly from the factor reached
    when the cooldown starts to 0 at ``total_steps`` (a warmup-stable-decay run; with
    ``"inverse_sqrt"`` it anneals a schedule that would otherwise never come down).

    Args:
        optimizer: The optimizer whose groups are scheduled.
        name: One of ``"constant"``, ``"cosine"``, ``"inverse_sqrt"``.
        total_steps: Number of optimizer steps in the run (used by ``"cosine"``).
        warmup_steps: Steps of linear warmup; 0 for none.
        min_lr_ratio: Final lr as a fraction of the peak (``"cosine"`` only).
        cooldown_steps: Final steps of linear decay to 0; 0 for none.

    Raises:
        ValueError: On an unknown name or out-of-range step counts or ratio.
    """
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(
            f"steps must be >= 0, got total_steps={total_steps}, warmup_steps={warmup_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if name == "cosine":
        if warmup_steps > total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) exceeds the run's {total_steps} steps")
        factor = _cosine_factor(total_steps, warmup_steps, min_lr_ratio)
    elif name == "inverse_sqrt":
        factor = _inverse_sqrt_factor(warmup_steps)
    elif name == "constant":
        factor = _constant_factor(warmup_steps)
    else:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if cooldown_steps:
        if not 0 < cooldown_steps <= total_steps - warmup_steps:
            raise ValueError(
                f"cooldown_steps ({cooldown_steps}) must fit after the warmup: at most "
                f"{total_steps - warmup_steps} of the run's {total_steps} steps "
                f"({warmup_steps} are warmup)"
            )
        factor = _with_cooldown(factor, total_steps, cooldown_steps)
    # A plain function (not a partial or callable object): LambdaLR.state_dict stores None for it,
    # so the saved state holds no code.
    return LambdaLR(optimizer, factor)
