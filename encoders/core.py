"""The shared core: the encoder and decoder stacks, and (from `encoders.core_config`) their
configuration and the named sizes every family shares. The stacks see (B, N, D) tokens and
padding masks only, never token ids, pixels or audio; the modality adapters produce their input.

Two models whose ``core`` configs are equal have identical ``core.*`` keys, shapes and
behaviour, whatever their modality, so a trained core moves between them with one
``load_state_dict``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from encoders.attention import KVCache
from encoders.core_config import (
    CORE_FIELDS,
    CORE_SIZES,
    CoreConfig,
    core_size,
    kept_heads,
    make_core_config,
    rotary_positions,
)
from encoders.layers import NORM_EPS, ConformerLayer, DecoderLayer, EncoderLayer
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


class _Stack(nn.Module):
    """What the encoder and decoder stacks share: the layers (built by ``make_layer`` with each
    layer's stochastic depth rate), an optional shared rotary embedding, the final norm
    (pre-norm stacks only) and the weight init."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        make_layer: Callable[..., nn.Module],
        drop_path: float,
        norm_first: bool,
        rotary: bool,
        layer_heads: Sequence[dict[str, int]] | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.depth = dim, depth
        rope = RotaryEmbedding(dim // num_heads) if rotary else None
        layer_heads = layer_heads or [{}] * depth  # pruned stacks: each layer's head counts
        self.blocks = nn.ModuleList(
            make_layer(dim, drop_path=dpr, norm_first=norm_first, rope=rope,
                       **{"num_heads": num_heads, **heads})
            for dpr, heads in zip(_drop_path_rates(drop_path, depth), layer_heads)
        )
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if norm_first else nn.Identity()
        self.apply(_init_weights)


class TransformerEncoder(_Stack):
    """A stack of encoder (or Conformer) layers with a final norm (pre-norm): the zoo's shared
    core. ``TransformerEncoder.from_config(cfg)`` builds it from a ``CoreConfig``.

    Args:
        dim: width D.
        depth: number of layers.
        num_heads: attention heads per layer.
        conformer: Conformer blocks (macaron feed-forward + convolution module).
        conv_kernel: conformer depthwise kernel size.
        drop_path: stochastic depth rate of the last layer (linear from 0).
        norm_first: pre-norm layers; post-norm layers get no final norm.
        rotary: rotary position embedding inside attention.
        heads_per_layer: the heads each layer kept after pruning (see ``CoreConfig``).
        **layer_args: the layers' other settings (``mlp_ratio``, ``qkv_bias``, ``dropout``,
            ``attn_drop``, ``act``, ``layer_scale``, ``head_gates``), as in ``EncoderLayer``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        conformer: bool = False,
        conv_kernel: int = 31,
        drop_path: float = 0.0,
        norm_first: bool = True,
        rotary: bool = False,
        heads_per_layer: Sequence[Sequence[int]] | None = None,
        **layer_args: Any,
    ) -> None:
        def make_layer(*args: Any, **kwargs: Any) -> nn.Module:
            if conformer:
                return ConformerLayer(*args, conv_kernel=conv_kernel, **kwargs, **layer_args)
            return EncoderLayer(*args, **kwargs, **layer_args)

        heads = kept_heads(heads_per_layer, depth, num_heads, "heads_per_layer")
        layer_heads = None
        if heads is not None:
            layer_heads = [{"num_heads": len(h), "head_dim": dim // num_heads} for h in heads]
        super().__init__(
            dim, depth, num_heads, make_layer, drop_path, norm_first, rotary, layer_heads
        )

    @classmethod
    def from_config(cls, cfg: CoreConfig) -> TransformerEncoder:
        """The encoder stack of a core config."""
        args = _stack_args(cfg)
        return cls(cfg.dim, cfg.depth, cfg.num_heads, heads_per_layer=cfg.heads_per_layer, **args)

    def new_cache(self) -> list[KVCache]:
        """Empty per-layer key/value caches for incremental causal decoding."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        *,
        causal: bool = False,
        cache: list[KVCache] | None = None,
    ) -> Tensor:
        """Run the stack.

        Args:
            x: (B, N, D) tokens; with a cache, only the positions after the cached ones.
            padding_mask: (B, N) True at padding (with a cache: over cached and new positions).
            causal: each position sees itself and earlier positions only (decoder-only LMs).
            cache: one ``KVCache`` per layer (``new_cache()``), extended in place; causal only.
                Feeding a sequence in pieces gives the same outputs as one full pass.
        Returns:
            (B, N, D).
        """
        if not causal and cache is None:
            for block in self.blocks:  # the bidirectional encoder every family shares
                x = block(x, padding_mask)
            return self.norm(x)
        if not causal:
            raise ValueError("a KV cache needs causal=True: later tokens would change earlier ones")
        if isinstance(self.blocks[0], ConformerLayer):
            raise ValueError("a Conformer core cannot run causally: its convolution sees ahead")
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} layer caches, got {len(cache)}")
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            x = block(x, padding_mask, causal=True, cache=layer_cache)
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


class TransformerDecoder(_Stack):
    """A stack of decoder layers (causal self-attention + cross-attention) with a final norm.

    Arguments as in ``TransformerEncoder`` (without the Conformer options), but
    ``heads_per_layer`` holds a (self-attention, cross-attention) pair of kept heads per layer;
    ``TransformerDecoder.from_config(cfg, depth)`` builds one from a core config.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        drop_path: float = 0.0,
        norm_first: bool = True,
        rotary: bool = False,
        heads_per_layer: Sequence[Sequence[Sequence[int]]] | None = None,
        **layer_args: Any,
    ) -> None:
        def make_layer(*args: Any, **kwargs: Any) -> nn.Module:
            return DecoderLayer(*args, **kwargs, **layer_args)

        heads = kept_heads(heads_per_layer, depth, num_heads, "decoder_heads", pairs=True)
        layer_heads = None
        if heads is not None:
            layer_heads = [{"num_heads": len(s), "cross_heads": len(c),
                            "head_dim": dim // num_heads} for s, c in heads]
        super().__init__(
            dim, depth, num_heads, make_layer, drop_path, norm_first, rotary, layer_heads
        )

    @classmethod
    def from_config(
        cls, cfg: CoreConfig, depth: int, heads_per_layer: Sequence | None = None
    ) -> TransformerDecoder:
        """A decoder of ``depth`` layers with the core's width, heads and layer settings
        (the Conformer options and the encoder's pruned heads do not apply to it; a pruned
        decoder's (self, cross) heads per layer come as ``heads_per_layer``)."""
        args = _stack_args(cfg)
        del args["conformer"], args["conv_kernel"]
        return cls(cfg.dim, depth, cfg.num_heads, heads_per_layer=heads_per_layer, **args)

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


def _stack_args(cfg: CoreConfig) -> dict[str, Any]:
    """The keyword arguments of a stack built from ``cfg`` (all but dim, depth, num_heads and
    the encoder's kept heads; the gates' L0 weight becomes whether there are gates)."""
    args = dataclasses.asdict(cfg)
    del args["dim"], args["depth"], args["num_heads"], args["heads_per_layer"]
    args["head_gates"] = args.pop("head_gate_l0") is not None
    return args


__all__ = [
    "CORE_FIELDS",
    "CORE_SIZES",
    "CoreConfig",
    "DecoderCache",
    "TransformerDecoder",
    "TransformerEncoder",
    "core_size",
    "kept_heads",
    "make_core_config",
    "rotary_positions",
]
