"""The multitask family: one shared core with several tasks' models on it (zoo/multitask)."""

from __future__ import annotations

from zoo.multitask import MultitaskConfig
from zoo.registry import register_model


@register_model
def multitask() -> MultitaskConfig:
    """One core shared by several single-task models (PolyViT, Likhosherstov et al. 2022);
    a multitask recipe gives the core and the tasks (``task: multitask``, docs/multitask.md)."""
    return MultitaskConfig()
