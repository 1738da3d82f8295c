"""Reaching the attention modules of any zoo model: their names, their weights on request, and
masks on their heads.

One mechanism serves every family: each ``MultiHeadAttention`` has two inspection points
(``weight_sink`` and ``head_mask``, see ``encoders.attention``) that the context managers here
set on entry and restore on exit, so a model's own forward, decoding and loss code run unchanged
and the default path (SDPA, no weights) is untouched outside a ``with`` block.

    with AttentionExtract(model) as attn:
        model(images)
    attn.last("core.blocks.0.attn")        # (B, H, N, N)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping

from torch import Tensor, nn

from encoders.attention import MultiHeadAttention

# the attention modules of the core and decoder stacks, the ones a config can prune
STACK_ATTENTION = re.compile(r"^(core|decoder)\.blocks\.(\d+)\.(attn|cross_attn)$")


def attention_modules(model: nn.Module) -> dict[str, MultiHeadAttention]:
    """Every attention module of ``model`` by qualified name, in module order (the encoder
    core's layers, then the decoder's self- and cross-attention per layer)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MultiHeadAttention)}


def short_name(name: str) -> str:
    """A label for tables and figures: ``core.blocks.3.attn`` -> ``enc 3``,
    ``decoder.blocks.1.cross_attn`` -> ``dec 1 cross``; other names are kept."""
    found = STACK_ATTENTION.match(name)
    if found is None:
        return name
    part, layer, kind = found.groups()
    if part == "core":
        return f"enc {layer}"
    return f"dec {layer} {'self' if kind == 'attn' else 'cross'}"


def original_heads(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """For each attention module, the indices its heads had in the unpruned model (the
    ``heads_per_layer`` of the core and the family's ``decoder_heads``); all heads when the
    model was never pruned."""
    cfg = getattr(model, "cfg", None)
    core = getattr(getattr(cfg, "core", None), "heads_per_layer", None)
    decoder = getattr(cfg, "decoder_heads", None)
    out = {}
    for name, module in attention_modules(model).items():
        found, heads = STACK_ATTENTION.match(name), None
        if found is not None:
            part, layer, kind = found.group(1), int(found.group(2)), found.group(3)
            if part == "core" and core is not None:
                heads = core[layer]
            elif part == "decoder" and decoder is not None:
                heads = decoder[layer][0 if kind == "attn" else 1]
        out[name] = tuple(heads) if heads is not None else tuple(range(module.num_heads))
    return out


class AttentionExtract:
    """Within the ``with`` block, the chosen attention modules take the explicit softmax path
    and record the weights (B, H, Nq, Nk) of every call; on exit they return to the default.

    Args:
        model: any zoo model (or module holding ``MultiHeadAttention`` layers).
        names: the modules to record (qualified names); None records them all.

    Raises:
        ValueError: a name that is not an attention module of the model.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None) -> None:
        modules = attention_modules(model)
        names = list(modules) if names is None else list(names)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not an attention module of the model; it has "
                             f"{', '.join(modules) or 'none'}")
        self.modules = {n: modules[n] for n in names}
        self.weights: dict[str, list[Tensor]] = {n: [] for n in names}
        self._saved: dict[str, list[Tensor] | None] = {}

    def __enter__(self) -> AttentionExtract:
        for name, module in self.modules.items():
            self._saved[name] = module.weight_sink
            module.weight_sink = self.weights[name]
        return self

    def __exit__(self, *exc: object) -> None:
        for name, module in self.modules.items():
            module.weight_sink = self._saved.pop(name)

    def last(self, name: str) -> Tensor:
        """The weights (B, H, Nq, Nk) of the last call of module ``name``.

        Raises:
            ValueError: the module was not recorded, or not called.
        """
        if not self.weights.get(name):
            raise ValueError(f"no attention weights were recorded for '{name}'")
        return self.weights[name][-1]


@contextlib.contextmanager
def masked_heads(model: nn.Module, masks: Mapping[str, Tensor]) -> Iterator[None]:
    """Within the block, each head's output of module ``name`` is multiplied by
    ``masks[name]``: (H,) for the whole batch or (B, H) per sample (1 keeps a head, 0 removes
    it). A mask that requires grad receives d(loss)/d(mask), the heads' importance.

    Raises:
        ValueError: an unknown module, or a mask whose last dimension is not its head count.
    """
    modules = attention_modules(model)
    for name, mask in masks.items():
        if name not in modules:
            raise ValueError(f"'{name}' is not an attention module of the model")
        if mask.shape[-1] != modules[name].num_heads:
            raise ValueError(f"the mask of '{name}' has {mask.shape[-1]} entries for "
                             f"{modules[name].num_heads} heads")
    saved = {name: modules[name].head_mask for name in masks}
    try:
        for name, mask in masks.items():
            modules[name].head_mask = mask
        yield
    finally:
        for name, mask in saved.items():
            modules[name].head_mask = mask


def layer_index(layer: int, depth: int, stack: str) -> int:
    """``layer`` (negative: from the end, as in Python) as an index into a stack of ``depth``
    layers.

    Raises:
        ValueError: out of range, naming the ``stack`` ("encoder", "decoder") and its depth.
    """
    if not -depth <= layer < depth:
        raise ValueError(f"--layer {layer} is out of range: the {stack} has {depth} layers")
    return layer % depth
