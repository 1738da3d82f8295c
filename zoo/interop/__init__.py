"""Importers of other libraries' weights into zoo models (timm ViT first)."""

from zoo.interop.timm import (
    create_from_timm_checkpoint,
    from_timm,
    load_timm_checkpoint,
    load_weights_from_timm,
    timm_config,
    timm_to_zoo_state_dict,
)

__all__ = [
    "create_from_timm_checkpoint",
    "from_timm",
    "load_timm_checkpoint",
    "load_weights_from_timm",
    "timm_config",
    "timm_to_zoo_state_dict",
]
