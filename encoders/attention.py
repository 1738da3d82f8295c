"""Multi-head attention: the one attention implementation of the zoo.

Self- or cross-attention with padding and causal masks and a KV cache for incremental decoding.
The default path is ``F.scaled_dot_product_attention``; ``need_weights=True`` takes an explicit
softmax path that returns the attention weights and the same output, as does half-precision
training on the CPU over short sequences (it is faster there).

Two inspection points, left None by the model and set by tools that look inside it
(``zoo.interpret``) for the length of a ``with`` block: ``weight_sink``, a list that receives the
attention weights of every call (which then takes the explicit path), and ``head_mask``, a (H,)
or per-sample (B, H) tensor that scales each head's output before the output projection (1
keeps a head, 0 removes it; its gradient is the head's importance).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from encoders.gates import HardConcreteGate
from encoders.positional import RotaryEmbedding


@dataclass
class KVCache:
    """Keys and values of one attention layer kept across decoding steps.

    Attributes:
        k: keys (B, H, N, Dh), or None before the first step.
        v: values (B, H, N, Dh), or None before the first step.
    """

    k: Tensor | None = None
    v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in this order, e.g. the surviving beams."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


SHORT_KEYS = 64  # up to this many keys, half-precision CPU training writes the softmax out


def _cpu_training_path(q: Tensor, nk: int) -> str:
    """How a half-precision query on the CPU attends while a gradient will flow: "sdpa" (any
    other case), "explicit" or "upcast".

    PyTorch's CPU attention kernel trains slower in bf16 than in fp32, the more so the shorter
    the sequence, while inference costs the same (docs/benchmarks.md has the measurements).
    Up to ``SHORT_KEYS`` keys the softmax written out in the query's dtype is faster still
    than the fp32 kernel; above, the kernel gets fp32 inputs and its output is cast back.
    """
    if not (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and torch.is_grad_enabled()
        and q.requires_grad
    ):
        return "sdpa"
    return "explicit" if nk <= SHORT_KEYS else "upcast"


def lengths_to_padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Lengths (B,) -> bool padding mask (B, N), True at padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] >= lengths[:, None]


def build_attention_mask(
    padding_mask: Tensor | None, causal: bool, num_queries: int, num_keys: int, device: torch.device
) -> Tensor | None:
    """Combine key padding and causality into one bool mask, True where a query may attend.

    This is the single place where the zoo's padding convention (True at padding) is turned into
    the convention of ``scaled_dot_product_attention`` (True = attend).

    Args:
        padding_mask: (B, Nk) bool, True at padded keys, or None.
        causal: whether query i may only see keys up to its own position. With a cache the queries
            are the last ``num_queries`` positions of the ``num_keys`` keys.
    Returns:
        (B or 1, 1, Nq, Nk) bool mask, or None when nothing is masked.
    """
    mask = None
    if padding_mask is not None:
        mask = ~padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
    if causal:
        offset = num_keys - num_queries  # queries sit at the end of the key sequence
        allowed = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device)
        allowed = allowed.tril(diagonal=offset)[None, None]  # (1, 1, Nq, Nk)
        mask = allowed if mask is None else mask & allowed
    return mask


def _visible_keys(
    padding_mask: Tensor | None, causal: bool, nq: int, nk: int, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """The SDPA mask, and the query rows (B, 1, Nq, 1) that see no key at all, or Nones.

    A query with no visible key would give NaN: it is let see every key here, and the caller
    zeroes its output (the contract: a fully masked row gives zeros, never NaN).
    """
    mask = build_attention_mask(padding_mask, causal, nq, nk, device)
    if mask is None:
        return None, None
    has_key = mask.any(dim=-1, keepdim=True)  # (B, 1, Nq, 1)
    return mask | ~has_key, ~has_key


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention softmax(QK^T / sqrt(d_k)) V over several heads.

    Self-attention uses one fused ``qkv`` projection (parameter names as in timm's ViT);
    cross-attention projects queries with ``q`` and the context with ``kv``.

    Args:
        dim: model width D.
        num_heads: number of heads H; D must be divisible by H unless ``head_dim`` is given.
        head_dim: width Dh of a head; None gives D // H. A pruned layer keeps its heads' width
            and has fewer of them: the projections then map D -> 3 * H * Dh and H * Dh -> D.
        qkv_bias: bias on the input projections.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        cross: build a cross-attention layer (queries from x, keys/values from a context).
        rope: rotary position embedding applied to queries and keys (self-attention only).
        gate: a learned hard-concrete gate on each head's output (``encoders.gates``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cross: bool = False,
        rope: RotaryEmbedding | None = None,
        gate: bool = False,
    ) -> None:
        super().__init__()
        if head_dim is None and dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if num_heads < 1 or (head_dim is not None and head_dim < 1):
            raise ValueError(f"attention needs at least one head of width >= 1, got "
                             f"num_heads={num_heads}, head_dim={head_dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads if head_dim is None else head_dim
        inner = num_heads * self.head_dim
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, inner, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * inner, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rope = rope
        self.gate = HardConcreteGate(num_heads) if gate else None
        # inspection points (module docstring): not state, never saved
        self.weight_sink: list[Tensor] | None = None
        self.head_mask: Tensor | None = None

    def _split_heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        return rearrange(x, "b n (p h d) -> p b h n d", p=parts, h=self.num_heads).unbind(0)

    def _project(self, x: Tensor, context: Tensor | None, cache: KVCache | None):
        """Queries, keys and values, each (B, H, N, Dh), using and updating the cache."""
        if not self.cross:
            q, k, v = self._split_heads(self.qkv(x), 3)
            offset = len(cache) if cache is not None else 0
            if self.rope is not None:
                q, k = self.rope(q, offset), self.rope(k, offset)
            if cache is not None:
                if cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
            return q, k, v
        (q,) = self._split_heads(self.q(x), 1)
        if cache is not None and cache.k is not None:
            return q, cache.k, cache.v  # the context is encoded once per source
        if context is None:
            raise ValueError("cross-attention needs a context tensor (B, M, D)")
        k, v = self._split_heads(self.kv(context), 2)
        if cache is not None:
            cache.k, cache.v = k, v
        return q, k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        padding_mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from ``x`` to itself or to ``context``.

        Args:
            x: queries (B, N, D).
            context: keys/values source (B, M, D) for cross-attention.
            padding_mask: (B, Nk) bool, True at padded keys (over the whole key sequence,
                cached keys included).
            causal: mask future keys.
            cache: KV cache updated in place for incremental decoding.
            need_weights: also return the attention weights (B, H, N, Nk).
        Returns:
            (B, N, D), or ((B, N, D), (B, H, N, Nk)) when ``need_weights``.
        """
        q, k, v = self._project(x, context, cache)
        nq, nk = q.shape[2], k.shape[2]
        keep = need_weights or self.weight_sink is not None
        path = "explicit" if keep else _cpu_training_path(q, nk)
        # Plain causal self-attention needs no mask tensor: SDPA builds it inside its kernel.
        plain_causal = causal and padding_mask is None and nq == nk and path != "explicit"
        mask, empty_rows = None, None
        if not plain_causal:
            mask, empty_rows = _visible_keys(padding_mask, causal, nq, nk, x.device)
        out, weights = self._attend(q, k, v, mask, path, plain_causal)
        weights = weights if keep else None  # CPU half training: no masking them below
        out = self.proj_drop(self.proj(self._merge_heads(out)))
        if empty_rows is not None:  # queries that saw no key output exact zeros
            out = out.masked_fill(empty_rows[:, 0], 0.0)  # (B, 1, Nq, 1) -> (B, Nq, 1)
            weights = None if weights is None else weights.masked_fill(empty_rows, 0.0)
        if self.weight_sink is not None:
            self.weight_sink.append(weights.detach())
        return (out, weights) if need_weights else out

    def _merge_heads(self, out: Tensor) -> Tensor:
        """(B, H, N, Dh) head outputs, each scaled by its gate and mask -> (B, N, H * Dh)."""
        scale = self.gate() if self.gate is not None else None
        if self.head_mask is not None:  # (H,) or per sample (B, H)
            scale = self.head_mask if scale is None else scale * self.head_mask
        if scale is not None:
            out = out * scale.to(out.dtype)[..., None, None]  # (..., H) -> (..., H, 1, 1)
        return rearrange(out, "b h n d -> b n (h d)")

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, path: str, is_causal: bool
    ) -> tuple[Tensor, Tensor | None]:
        """(B, H, Nq, Dh) outputs by the chosen path, and the weights on the explicit one."""
        drop = self.attn_drop if self.training else 0.0
        if path == "explicit":
            return self._explicit_attention(q, k, v, mask, drop)
        out_dtype, upcast = q.dtype, path == "upcast"
        if upcast:  # autocast would cast fp32 inputs straight back: switch it off here
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=drop, is_causal=is_causal
            )
        return out.to(out_dtype), None

    def _explicit_attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, drop: float
    ) -> tuple[Tensor, Tensor]:
        """softmax(QK^T / sqrt(Dh)) V written out, for when the weights are wanted."""
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, Nq, Nk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype)  # fp32 sums
        out = F.dropout(weights, drop, training=drop > 0) @ v
        return out, weights
