"""Attention rollout (Abnar & Zuidema 2020): how much each output token draws on each input
token through all the layers, residual connections included."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(weights: Tensor, fusion: str = "mean") -> Tensor:
    """(B, H, Nq, Nk) weights -> (B, Nq, Nk): the mean, max or min over the heads.

    Raises:
        ValueError: an unknown fusion.
    """
    if fusion == "mean":
        return weights.mean(1)
    if fusion == "max":
        return weights.amax(1)
    if fusion == "min":
        return weights.amin(1)
    raise ValueError(f"unknown head fusion '{fusion}'; expected one of {', '.join(HEAD_FUSIONS)}")


def attention_rollout(maps: Sequence[Tensor], head_fusion: str = "mean") -> Tensor:
    """Roll the attention of a stack out from its input to its output.

    Each layer's heads are fused, the residual path added as the identity and the rows
    renormalised, A_l = norm(fuse(W_l) + I) (for mean fusion the paper's 0.5 W + 0.5 I), and the
    layers are multiplied from the first: R = A_L ... A_2 A_1.

    Args:
        maps: each layer's self-attention weights (B, H, N, N), in layer order.
        head_fusion: "mean", "max" or "min" over the heads.
    Returns:
        (B, N, N): row i is how output token i is made of the input tokens (rows sum to 1).

    Raises:
        ValueError: no layers, or layers of different shapes.
    """
    if not maps:
        raise ValueError("attention rollout needs the weights of at least one layer")
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, device=maps[0].device, dtype=torch.float32)
    result = eye.expand(b, n, n)
    for i, weights in enumerate(maps):
        if weights.shape[0] != b or weights.shape[-2:] != (n, n):
            raise ValueError(f"layer {i} has attention of shape {tuple(weights.shape)}, "
                             f"layer 0 of {tuple(maps[0].shape)}")
        a = fuse_heads(weights.float(), head_fusion) + eye
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result
