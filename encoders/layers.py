"""Building blocks of the core: feed-forward, stochastic depth, layer scale, conformer convolution,
and the encoder and decoder layers. Parameter names follow timm's ViT blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.attention import KVCache, MultiHeadAttention
from encoders.positional import RotaryEmbedding

ACTIVATIONS = ("gelu", "relu", "swiglu")
NORM_EPS = 1e-6  # LayerNorm epsilon of every norm in the core, as timm's ViT (weights load exactly)


class FeedForward(nn.Module):
    """Position-wise MLP: fc1 -> activation -> dropout -> fc2 -> dropout.

    Args:
        dim: input and output width D.
        mlp_ratio: hidden width = mlp_ratio * D.
        act: "gelu", "relu" or "swiglu" (fc1 then produces a value and a gate half).
        dropout: dropout after the activation and after fc2.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{act}'; expected one of {ACTIVATIONS}")
        hidden = int(dim * mlp_ratio)
        self.act = act
        self.fc1 = nn.Linear(dim, 2 * hidden if act == "swiglu" else hidden)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        h = self.fc1(x)
        if self.act == "swiglu":
            value, gate = h.chunk(2, dim=-1)
            h = value * F.silu(gate)
        elif self.act == "gelu":
            h = F.gelu(h)
        else:
            h = F.relu(h)
        return self.drop2(self.fc2(self.drop1(h)))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (Huang et al. 2016)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (CaiT, Touvron et al. 2021)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ConvModule(nn.Module):
    """Conformer convolution module (Gulati et al. 2020): pointwise conv + GLU, depthwise conv,
    batch norm, SiLU, pointwise conv. Padded frames are zeroed before the depthwise conv so they
    never leak into real frames."""

    def __init__(self, dim: int, kernel_size: int = 31, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd to keep lengths, got {kernel_size}")
        self.pw1 = nn.Conv1d(dim, 2 * dim, 1)
        self.dw = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.bn = nn.BatchNorm1d(dim)
        self.pw2 = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D), padding_mask: (B, T) True at padding -> (B, T, D)."""
        h = F.glu(self.pw1(x.transpose(1, 2)), dim=1)  # (B, D, T)
        if padding_mask is not None:
            h = h.masked_fill(padding_mask[:, None, :], 0.0)
        h = self.pw2(F.silu(self.bn(self.dw(h))))
        return self.drop(h.transpose(1, 2))


class _ResidualLayer(nn.Module):
    """Shared residual wiring of the encoder and decoder layers."""

    norm_first: bool
    drop_path: nn.Module

    def _residual(self, x: Tensor, norm: nn.Module, branch, scale: float = 1.0) -> Tensor:
        h = self.drop_path(branch(norm(x) if self.norm_first else x))
        if scale != 1.0:  # only the conformer's half-step feed-forwards; no extra pass otherwise
            h = h * scale
        return x + h if self.norm_first else norm(x + h)


class EncoderLayer(_ResidualLayer):
    """One encoder layer: self-attention and feed-forward, each a residual branch.

    Pre-norm by default (x + f(norm(x))); post-norm (norm(x + f(x))) as in the original
    Transformer.

    Args:
        dim: width D.
        num_heads: attention heads.
        mlp_ratio: feed-forward hidden width over D.
        qkv_bias: bias on the attention projections.
        dropout: dropout on residual branches and inside the feed-forward.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of this layer.
        act: feed-forward activation.
        norm_first: pre-norm (True) or post-norm (False).
        layer_scale: initial LayerScale value, or None for none.
        rope: shared rotary embedding, or None.
        head_dim: width of a head (None: dim // num_heads; a pruned layer has fewer heads).
        head_gates: a learned hard-concrete gate on each attention head.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "gelu",
        norm_first: bool = True,
        layer_scale: float | None = None,
        rope: RotaryEmbedding | None = None,
        head_dim: int | None = None,
        head_gates: bool = False,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = MultiHeadAttention(
            dim, num_heads, head_dim=head_dim, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=dropout, rope=rope, gate=head_gates,
        )
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = FeedForward(dim, mlp_ratio, act, dropout)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attend(
        self,
        h: Tensor,
        padding_mask: Tensor | None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        return self.ls1(self.attn(h, padding_mask=padding_mask, causal=causal, cache=cache))

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        *,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x: (B, N, D), padding_mask: (B, N) True at padding -> (B, N, D).

        ``causal``: each position attends to itself and earlier ones only (a decoder-only LM).
        ``cache``: this layer's keys and values of earlier positions, extended in place; ``x``
        then holds only the new positions (incremental decoding, causal only).
        """
        attend = lambda h: self._attend(h, padding_mask, causal, cache)
        x = self._residual(x, self.norm1, attend)
        return self._residual(x, self.norm2, lambda h: self.ls2(self.mlp(h)))


class ConformerLayer(EncoderLayer):
    """A Conformer block (Gulati et al. 2020): a half-step macaron feed-forward, self-attention,
    a convolution module, a half-step feed-forward and a final norm.

    Its attention and feed-forward keep ``EncoderLayer``'s names (``norm1``, ``attn``,
    ``norm2``, ``mlp``), so a plain Transformer core loads into a Conformer core by name; the
    Conformer's own parts are ``norm_ff1``, ``ff1``, ``norm_conv``, ``conv`` and ``norm_out``.

    Args:
        conv_kernel: depthwise kernel size of the convolution module (odd).
        others: as in ``EncoderLayer``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        conv_kernel: int = 31,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, act=act, dropout=dropout, **kwargs)
        self.norm_ff1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.ff1 = FeedForward(dim, mlp_ratio, act, dropout)
        self.norm_conv = nn.LayerNorm(dim, eps=NORM_EPS)
        self.conv = ConvModule(dim, conv_kernel, dropout)
        self.norm_out = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, D), padding_mask: (B, T) True at padding -> (B, T, D)."""
        x = self._residual(x, self.norm_ff1, self.ff1, 0.5)  # macaron: two half-steps
        x = self._residual(x, self.norm1, lambda h: self._attend(h, padding_mask))
        x = self._residual(x, self.norm_conv, lambda h: self.conv(h, padding_mask))
        x = self._residual(x, self.norm2, lambda h: self.ls2(self.mlp(h)), 0.5)
        return self.norm_out(x)


class DecoderLayer(_ResidualLayer):
    """One decoder layer: causal self-attention, cross-attention to the encoder output,
    feed-forward; pre- or post-norm. Arguments as in ``EncoderLayer``, and ``cross_heads``:
    the cross-attention's heads (None: ``num_heads``; they differ in a pruned layer)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "gelu",
        norm_first: bool = True,
        layer_scale: float | None = None,
        rope: RotaryEmbedding | None = None,
        head_dim: int | None = None,
        head_gates: bool = False,
        cross_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        attn_args = dict(qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=dropout,
                         head_dim=head_dim, gate=head_gates)
        self.attn = MultiHeadAttention(dim, num_heads, rope=rope, **attn_args)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm_cross = nn.LayerNorm(dim, eps=NORM_EPS)
        cross_heads = num_heads if cross_heads is None else cross_heads
        self.cross_attn = MultiHeadAttention(dim, cross_heads, cross=True, **attn_args)
        self.ls_cross = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = FeedForward(dim, mlp_ratio, act, dropout)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        memory_padding_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> Tensor:
        """x: (B, N, D) target states; memory: (B, M, D) encoder output (may be None once the
        cross-attention cache is filled); masks True at padding; cache: (self, cross) KV caches.
        Returns (B, N, D)."""
        self_cache, cross_cache = cache if cache is not None else (None, None)

        def self_attend(h: Tensor) -> Tensor:
            out = self.attn(h, padding_mask=padding_mask, causal=True, cache=self_cache)
            return self.ls1(out)

        def cross_attend(h: Tensor) -> Tensor:
            out = self.cross_attn(h, memory, padding_mask=memory_padding_mask, cache=cross_cache)
            return self.ls_cross(out)

        x = self._residual(x, self.norm1, self_attend)
        x = self._residual(x, self.norm_cross, cross_attend)
        return self._residual(x, self.norm2, lambda h: self.ls2(self.mlp(h)))
