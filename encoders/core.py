"""The shared core: encoder and decoder stacks. They see (B, N, D) tokens and padding masks only,
never token ids, pixels or audio; the modality adapters produce their input."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from encoders.attention import KVCache
from encoders.layers import NORM_EPS, DecoderLayer, EncoderLayer
from encoders.positional import RotaryEmbedding


def _drop_path_rates(drop_path: float, depth: int) -> list[float]:
    # Stochastic depth grows linearly with depth (Huang et al. 2016), as in timm and DeiT.
    return [drop_path * i / max(depth - 1, 1) for i in range(depth)]


def _init_weights(module: nn.Module) -> None:
    # timm ViT / BERT style: truncated normal 0.02 for linear layers, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TransformerEncoder(nn.Module):
    """A stack of encoder layers with a final norm (pre-norm) — the zoo's shared core.

    Args:
        dim: width D.
        depth: number of layers.
        num_heads: attention heads per layer.
        mlp_ratio: feed-forward width over D.
        qkv_bias: bias on the attention projections.
        dropout: residual/feed-forward dropout.
        attn_drop: attention-weight dropout.
        drop_path: stochastic depth rate of the last layer (linear from 0).
        act: feed-forward activation ("gelu", "relu", "swiglu").
        norm_first: pre-norm layers; post-norm layers get no final norm.
        layer_scale: initial LayerScale value or None.
        conformer: Conformer blocks (macaron feed-forward + convolution module).
        conv_kernel: conformer depthwise kernel size.
        rotary: rotary position embedding inside attention.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "gelu",
        norm_first: bool = True,
        layer_scale: float | None = None,
        conformer: bool = False,
        conv_kernel: int = 31,
        rotary: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.depth = dim, depth
        rope = RotaryEmbedding(dim // num_heads) if rotary else None
        self.blocks = nn.ModuleList(
            EncoderLayer(
                dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                dropout,
                attn_drop,
                dpr,
                act,
                norm_first,
                layer_scale,
                conformer,
                conv_kernel,
                rope,
            )
            for dpr in _drop_path_rates(drop_path, depth)
        )
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if norm_first else nn.Identity()
        self.apply(_init_weights)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: (B, N, D), padding_mask: (B, N) True at padding -> (B, N, D)."""
        for block in self.blocks:
            x = block(x, padding_mask)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Run the stack and also return the outputs of chosen layers.

        Args:
            x: (B, N, D) tokens.
            padding_mask: (B, N) True at padding.
            indices: layer indices (negative counts from the end), an int n for the last n
                layers, or None for all.
            norm: apply the final norm to each intermediate.
        Returns:
            the final output (B, N, D) and a list of (B, N, D), in layer order.
        """
        if indices is None:
            wanted = set(range(self.depth))
        elif isinstance(indices, int):
            wanted = set(range(self.depth - indices, self.depth))
        else:
            bad = [i for i in indices if not -self.depth <= i < self.depth]
            if bad:  # i % depth would silently pick another layer
                raise ValueError(f"layer index {bad[0]} out of range for depth {self.depth}")
            wanted = {i % self.depth for i in indices}
        intermediates = []
        for i, block in enumerate(self.blocks):
            x = block(x, padding_mask)
            if i in wanted:
                intermediates.append(self.norm(x) if norm else x)
        return self.norm(x), intermediates


class DecoderCache:
    """Per-layer self- and cross-attention KV caches of a decoder during incremental decoding."""

    def __init__(self, depth: int) -> None:
        self.layers = [(KVCache(), KVCache()) for _ in range(depth)]

    @property
    def offset(self) -> int:
        """Number of target positions already decoded."""
        return len(self.layers[0][0])

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',): beams reordered, or finished rows dropped."""
        for self_kv, cross_kv in self.layers:
            self_kv.reorder(index)
            cross_kv.reorder(index)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers (causal self-attention + cross-attention) with a final norm.

    Arguments as in ``TransformerEncoder`` (without the conformer options).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "gelu",
        norm_first: bool = True,
        layer_scale: float | None = None,
        rotary: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.depth = dim, depth
        rope = RotaryEmbedding(dim // num_heads) if rotary else None
        self.blocks = nn.ModuleList(
            DecoderLayer(
                dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                dropout,
                attn_drop,
                dpr,
                act,
                norm_first,
                layer_scale,
                rope,
            )
            for dpr in _drop_path_rates(drop_path, depth)
        )
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if norm_first else nn.Identity()
        self.apply(_init_weights)

    def new_cache(self) -> DecoderCache:
        """An empty cache for incremental decoding."""
        return DecoderCache(self.depth)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        memory_padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Decode target states against the encoder output.

        Args:
            x: (B, N, D) target tokens; with a cache, only the new positions.
            memory: (B, M, D) encoder output; may be None once the cache holds the
                cross-attention keys/values.
            memory_padding_mask: (B, M) True at padded source positions.
            cache: updated in place; incremental results equal a full pass.
            padding_mask: (B, N_total) True at padded target positions (rarely needed: with
                right padding the causal mask already hides them from real positions).
        Returns:
            (B, N, D).
        """
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(x, memory, memory_padding_mask, padding_mask, layer_cache)
        return self.norm(x)
