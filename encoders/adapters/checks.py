"""Input checks shared by the adapters, the entry point of every model: a wrong shape, dtype
or length becomes one ``ValueError`` sentence that names the input, not a PyTorch error from
deep inside a layer."""

from __future__ import annotations

import torch
from torch import Tensor


def check_not_empty(x: Tensor, what: str, layout: str) -> None:
    """Refuse a tensor with an empty axis: ``what`` of shape ``layout`` (e.g. "(B, N)")."""
    if x.numel() == 0:
        raise ValueError(
            f"expected {what} of shape {layout} with no empty axis, got shape {tuple(x.shape)}"
        )


def check_float(x: Tensor, what: str, weight: Tensor, hint: str) -> None:
    """Refuse a non-floating ``x``, or one whose dtype the layer of ``weight`` cannot take.

    Outside autocast a layer needs its input in its weights' dtype (``float16`` images into a
    ``float32`` model fail in the convolution); under autocast PyTorch casts both.

    Args:
        hint: how to get a float tensor, e.g. "convert with images.float() / 255 and normalise".
    """
    if not x.is_floating_point():
        raise ValueError(f"expected floating-point {what}, got dtype {x.dtype}; {hint}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{what} are {x.dtype} but the model's weights are {weight.dtype}; convert one to "
            f"the other (x.to({weight.dtype}) or model.to({x.dtype}))"
        )


def check_lengths(lengths: Tensor, batch: int, longest: int, unit: str) -> None:
    """Refuse ``lengths`` that are not (B,) integers in [0, ``longest``] (the padded size).

    Args:
        unit: what a length counts ("samples", "tokens"), for the message.
    """
    if lengths.shape != (batch,):
        raise ValueError(
            f"expected lengths of shape ({batch},), one per batch row, got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"expected integer lengths, got dtype {lengths.dtype}")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 0 or high > longest:
        raise ValueError(
            f"lengths must lie in [0, {longest}] (the padded input holds {longest} {unit}), "
            f"got values in [{low}, {high}]"
        )
