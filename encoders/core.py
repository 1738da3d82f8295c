"""The shared core: its configuration, the named sizes every family shares, and the encoder and
decoder stacks built from it. The stacks see (B, N, D) tokens and padding masks only, never
token ids, pixels or audio; the modality adapters produce their input.

Two models whose ``core`` configs are equal have identical ``core.*`` keys, shapes and
behaviour, whatever their modality, so a trained core moves between them with one
``load_state_dict``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from encoders.attention import KVCache
from encoders.layers import ACTIVATIONS, NORM_EPS, ConformerLayer, DecoderLayer, EncoderLayer
from encoders.positional import RotaryEmbedding


@dataclass
class CoreConfig:
    """Settings of the shared core (``TransformerEncoder``; the translation and speech decoders
    reuse them with their own depth).

    Attributes:
        dim: width D of every token.
        depth: number of layers.
        num_heads: attention heads per layer; ``dim`` must be divisible by it.
        mlp_ratio: feed-forward hidden width over ``dim``.
        qkv_bias: bias on the attention input projections.
        dropout: dropout on residual branches and inside the feed-forward.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of the last layer (linear from 0 at the first).
        act: feed-forward activation, one of ``ACTIVATIONS``.
        norm_first: pre-norm layers (x + f(norm(x))); False gives the original post-norm.
        layer_scale: initial LayerScale value (CaiT), or None for none.
        conformer: Conformer blocks (macaron feed-forwards + convolution module).
        conv_kernel: depthwise kernel of the Conformer convolution (odd).
        rotary: rotary position embedding inside attention (the adapters then add none).
        heads_per_layer: for each layer, the heads it kept after pruning (indices among the
            ``num_heads`` it was built with; ``zoo prune`` writes them); None: all heads.
        head_gate_l0: learned hard-concrete gates on every attention head, trained with this
            L0 penalty weight (Voita et al. 2019; the engine adds the penalty); None: no gates.
    """

    dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    act: str = "gelu"
    norm_first: bool = True
    layer_scale: float | None = None
    conformer: bool = False
    conv_kernel: int = 31
    rotary: bool = False
    heads_per_layer: tuple[tuple[int, ...], ...] | None = None
    head_gate_l0: float | None = None

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"core dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown core activation '{self.act}'; expected one of {ACTIVATIONS}")
        self.heads_per_layer = kept_heads(
            self.heads_per_layer, self.depth, self.num_heads, "core.heads_per_layer"
        )
        if self.head_gate_l0 is not None and not self.head_gate_l0 >= 0:
            raise ValueError(f"core.head_gate_l0 must be >= 0 (or None), got {self.head_gate_l0}")


def kept_heads(heads: Any, depth: int, num_heads: int, what: str, pairs: bool = False) -> Any:
    """``heads`` (kept head indices per layer, nested lists or tuples, or None) as nested
    tuples, checked: one entry per layer, each a non-empty, increasing run of indices below
    ``num_heads``; with ``pairs`` (a decoder), each entry a (self, cross) pair of such runs.

    Raises:
        ValueError: a malformed entry, named with ``what`` and its layer.
    """
    if heads is None:
        return None
    if not isinstance(heads, (list, tuple)) or len(heads) != depth:
        raise ValueError(f"{what} needs one entry per layer ({depth}), got {heads!r}")

    def check(entry: Any, where: str) -> tuple[int, ...]:
        ok = isinstance(entry, (list, tuple)) and len(entry) > 0
        ok = ok and all(isinstance(h, int) and 0 <= h < num_heads for h in entry)
        if not ok or list(entry) != sorted(set(entry)):
            raise ValueError(f"{what}[{where}] must list increasing head indices below "
                             f"{num_heads}, at least one, got {entry!r}")
        return tuple(entry)

    def layer(i: int, entry: Any) -> tuple:
        if not pairs:
            return check(entry, str(i))
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"{what}[{i}] must be a (self, cross) pair of kept heads, "
                             f"got {entry!r}")
        return tuple(check(e, f"{i}][{j}") for j, e in enumerate(entry))

    return tuple(layer(i, entry) for i, entry in enumerate(heads))


CORE_FIELDS = tuple(f.name for f in dataclasses.fields(CoreConfig))

# Named sizes shared by every family: `vit_mini_*`, `mt_transformer_mini` and
# `asr_transformer_ctc_mini` hold the same core. "test" is for tests and smoke runs; "mini" is
# the size real-data recipes of all three tasks train on a 2-core CPU; tiny/small/base are
# DeiT's ViT-Ti/S/B widths (Touvron et al. 2021).
CORE_SIZES: dict[str, CoreConfig] = {
    "test": CoreConfig(dim=64, depth=2, num_heads=4),
    "mini": CoreConfig(dim=128, depth=6, num_heads=4),
    "tiny": CoreConfig(dim=192, depth=12, num_heads=3),
    "small": CoreConfig(dim=384, depth=12, num_heads=6),
    "base": CoreConfig(dim=768, depth=12, num_heads=12),
}


def core_size(name: str, **overrides: Any) -> CoreConfig:
    """The named core size ``name`` with ``overrides`` applied.

    Raises:
        ValueError: an unknown size (the message lists the sizes).
    """
    if name not in CORE_SIZES:
        raise ValueError(f"unknown core size '{name}'; expected one of {', '.join(CORE_SIZES)}")
    return dataclasses.replace(CORE_SIZES[name], **overrides)


def make_core_config(value: CoreConfig | str | dict[str, Any], **overrides: Any) -> CoreConfig:
    """A ``CoreConfig`` from a config, a size name or a dict of fields (as in ``config.json``),
    with ``overrides`` on top.

    Raises:
        TypeError: a dict key or override that is not a core setting (the nearest is named).
        ValueError: an unknown size name.
    """
    if isinstance(value, str):
        base = core_size(value)
    elif isinstance(value, dict):
        _check_keys(value)
        base = CoreConfig(**value)
    else:
        base = value
    _check_keys(overrides)
    return dataclasses.replace(base, **overrides) if overrides else base


def _check_keys(values: dict[str, Any]) -> None:
    for key in values:
        if key not in CORE_FIELDS:
            close = difflib.get_close_matches(key, CORE_FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TypeError(f"the core has no setting '{key}'{hint}")


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


def rotary_positions(pos: str, core: CoreConfig) -> tuple[str, CoreConfig]:
    """A family's ``pos`` setting and its core agreed on rotary positions: ``pos="rotary"``
    turns on ``core.rotary`` (rotations live inside attention), and a rotary core shows as
    ``pos="rotary"``. Other positions are the adapter's and leave the core as it is."""
    if pos == "rotary" or core.rotary:
        return "rotary", dataclasses.replace(core, rotary=True)
    return pos, core
