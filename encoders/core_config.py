"""The shared core's configuration: `CoreConfig`, the named sizes every family shares
(`CORE_SIZES`), building a config from a size name or a saved dict, and the checks of pruned
heads. `encoders.core` re-exports these names beside the stacks built from them.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from encoders.layers import ACTIVATIONS


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


def rotary_positions(pos: str, core: CoreConfig) -> tuple[str, CoreConfig]:
    """A family's ``pos`` setting and its core agreed on rotary positions: ``pos="rotary"``
    turns on ``core.rotary`` (rotations live inside attention), and a rotary core shows as
    ``pos="rotary"``. Other positions are the adapter's and leave the core as it is."""
    if pos == "rotary" or core.rotary:
        return "rotary", dataclasses.replace(core, rotary=True)
    return pos, core
