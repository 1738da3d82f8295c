"""Exponential moving average of model weights (Polyak averaging, as in timm's ModelEmaV2)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel and ``torch.compile``."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * model`` over parameters and floating buffers.

    The average lives in ``.module``, a deep copy of the model in eval mode without gradients,
    whose floating tensors are float32 so that a decay like 0.9999 is not lost to bf16 rounding.
    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied, not averaged.

    Args:
        model: The model being trained (DDP and ``torch.compile`` wrappers are unwrapped).
        decay: Decay of the average; closer to 1 averages over more steps.
        warmup: If True, use ``min(decay, (1 + n) / (10 + n))`` at update ``n`` so that the
            average is not dominated by the random initial weights early in training.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(unwrap_model(model)).float().eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the weights of ``model`` into the average; call after each optimizer step."""
        model = unwrap_model(model)
        weight = 1.0 - self.current_decay()
        self.updates += 1
        # parameters()/buffers() skip tied duplicates, so a tied weight is averaged once;
        # the deep copy preserves the tie structure, so the two lists line up.
        pairs = list(zip(self.module.parameters(), model.parameters(), strict=True))
        pairs += list(zip(self.module.buffers(), model.buffers(), strict=True))
        ema_float, new_float = [], []
        for ema_t, t in pairs:
            if ema_t.is_floating_point():
                ema_float.append(ema_t)
                new_float.append(t.detach().to(device=ema_t.device, dtype=ema_t.dtype))
            else:
                ema_t.copy_(t)
        if ema_float:
            torch._foreach_lerp_(ema_float, new_float, weight)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only, so it loads with ``torch.load(weights_only=True)``."""
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the average and the update count (the decay stays as constructed)."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
