"""Head pruning: choosing heads to remove (by importance, iteratively as Michel et al. 2019,
or at random as the control of Budhraja et al. 2020), and removing them for real: a smaller
model of the same family whose attention projections lost the pruned heads' rows and columns,
and whose config records the heads each layer kept."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo.interpret.extract import STACK_ATTENTION, attention_modules, original_heads
from zoo.registry import build_model

Scorer = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def plan_pruning(
    model: nn.Module,
    fraction: float,
    scorer: Scorer,
    per_layer: bool = False,
    step: float = 0.1,
) -> dict[str, Tensor]:
    """Masks (H,) of 1s (kept) and 0s (pruned) per attention module.

    Heads are removed in rounds of ``step`` of all heads (Michel et al. prune 10% at a time),
    the scores recomputed each round with the heads pruned so far masked; each round removes
    the lowest-scoring heads, over all modules (their scores normalised per module) or, with
    ``per_layer``, the same share of each module. Every module keeps at least one head.

    Args:
        model: any zoo model.
        fraction: share of all heads to remove, in [0, 1).
        scorer: ``masks -> scores`` per module (higher: more important).
        per_layer: prune each module by the same share instead of globally.
        step: share of the heads removed per round (1: one shot).

    Raises:
        ValueError: a fraction or step out of range.
    """
    if not 0 <= fraction < 1 or not 0 < step <= 1:
        raise ValueError(f"--fraction must be in [0, 1) and the step in (0, 1], got "
                         f"{fraction} and {step}")
    sizes = {n: m.num_heads for n, m in attention_modules(model).items()}
    masks = {n: torch.ones(h) for n, h in sizes.items()}
    share, rounds = 0.0, math.ceil(round(fraction / step, 9))
    for k in range(1, rounds + 1):
        share = min(fraction, k * step)
        scores = scorer({n: m.clone() for n, m in masks.items()})
        if per_layer:
            for name, h in sizes.items():
                _remove(masks, {name: scores[name]}, min(h - 1, round(share * h)))
        else:
            _remove(masks, scores, round(share * sum(sizes.values())))
    return masks


def _remove(masks: dict[str, Tensor], scores: Mapping[str, Tensor], goal: int) -> None:
    """Zero the lowest-scoring kept heads of ``scores``' modules until ``goal`` of their heads
    are pruned, never a module's last head."""
    pruned = sum(int((masks[n] == 0).sum()) for n in scores)
    ranked = sorted((float(s[h]), name, h) for name, s in scores.items()
                    for h in range(len(s)) if masks[name][h] > 0)
    for _, name, h in ranked:
        if pruned >= goal:
            return
        if masks[name].sum() > 1:
            masks[name][h] = 0.0
            pruned += 1


def random_scorer(seed: int = 0) -> Scorer:
    """Scores drawn uniformly at random (the same draws for the same seed and call)."""
    generator = torch.Generator().manual_seed(seed)

    def score(masks: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: torch.rand(len(m), generator=generator) for n, m in masks.items()}

    return score


def prune_heads(
    model: nn.Module,
    keep: Mapping[str, Sequence[int]],
    scales: Mapping[str, Tensor] | None = None,
    drop_gates: bool = False,
) -> nn.Module:
    """A copy of ``model`` with only the heads ``keep`` (module name -> indices of its current
    heads) in each attention module; its outputs equal the original's with the other heads
    masked. Modules missing from ``keep`` keep all their heads.

    Args:
        model: a zoo model (``.cfg`` with a ``core``, ``.model_name``).
        keep: heads kept per module.
        scales: (H,) factors folded into each module's output projection (learned gates).
        drop_gates: build the copy without head gates (their values folded in ``scales``).

    Raises:
        ValueError: a module that keeps no head, a bad index, or an attention module outside
            the core and decoder stacks.
    """
    modules = attention_modules(model)
    bad = [n for n in modules if not STACK_ATTENTION.match(n)]
    if bad or not dataclasses.is_dataclass(getattr(model, "cfg", None)):
        raise ValueError(f"cannot prune {bad[0] if bad else type(model).__name__}: only the "
                         "attention of a zoo model's core and decoder stacks can be pruned")
    keep = {n: sorted(keep.get(n, range(m.num_heads))) for n, m in modules.items()}
    for name, heads in keep.items():
        if not heads or not all(0 <= h < modules[name].num_heads for h in heads):
            raise ValueError(f"{name} must keep at least one of its {modules[name].num_heads} "
                             f"heads, got {heads}")
    state = model.state_dict()
    for name, heads in keep.items():
        scale = None if scales is None else scales.get(name)
        _shrink(state, name, modules[name], heads, scale)
    if drop_gates:
        state = {k: v for k, v in state.items() if not k.endswith(".gate.log_alpha")}
    pruned = build_model(model.model_name, _pruned_config(model, keep, drop_gates))
    pruned.load_state_dict(state)
    device = next(model.parameters()).device
    return pruned.to(device).train(model.training)


def _shrink(state: dict[str, Tensor], name: str, module: nn.Module, heads: list[int],
            scale: Tensor | None) -> None:
    """Keep ``heads`` in module ``name``'s tensors of ``state``: the rows of q/k/v (laid out
    (part, head, Dh)), the columns of the output projection (head, Dh), the gates."""
    h, dh = module.num_heads, module.head_dim
    index = torch.tensor(heads)
    rows = (torch.arange(h * dh).view(h, dh)[index]).flatten()  # one part's kept rows
    for part, parts in (("qkv", 3), ("q", 1), ("kv", 2)):
        for kind in ("weight", "bias"):
            key = f"{name}.{part}.{kind}"
            if key in state:
                every = torch.cat([rows + p * h * dh for p in range(parts)])
                state[key] = state[key][every].clone()
    proj = state[f"{name}.proj.weight"]
    if scale is not None:  # (D, H * Dh) columns of head j times scale[j]
        proj = proj * scale.to(proj).repeat_interleave(dh)[None, :]
    state[f"{name}.proj.weight"] = proj[:, rows].clone()
    if f"{name}.gate.log_alpha" in state:
        state[f"{name}.gate.log_alpha"] = state[f"{name}.gate.log_alpha"][index].clone()


def _pruned_config(model: nn.Module, keep: Mapping[str, list[int]], drop_gates: bool):
    """The family config of the pruned copy: the kept heads in original indices."""
    cfg, orig = model.cfg, original_heads(model)

    def kept(name: str) -> tuple[int, ...]:
        return tuple(orig[name][i] for i in keep[name])

    core = dataclasses.replace(
        cfg.core,
        heads_per_layer=tuple(kept(f"core.blocks.{i}.attn") for i in range(cfg.core.depth)),
        head_gate_l0=None if drop_gates else cfg.core.head_gate_l0,
    )
    changes = {"core": core}
    if getattr(model, "decoder", None) is not None:
        depth = len(model.decoder.blocks)
        changes["decoder_heads"] = tuple(
            (kept(f"decoder.blocks.{i}.attn"), kept(f"decoder.blocks.{i}.cross_attn"))
            for i in range(depth)
        )
    return dataclasses.replace(cfg, **changes)


def kept_indices(masks: Mapping[str, Tensor]) -> dict[str, list[int]]:
    """Masks (H,) -> the indices of their nonzero entries."""
    return {n: torch.nonzero(m > 0).flatten().tolist() for n, m in masks.items()}
