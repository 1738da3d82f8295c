"""transformer-zoo: build, train and transfer attention models across text, images and speech."""

from zoo import models  # noqa: F401  (registers the variants)
from zoo.checkpoint import load_pretrained, save_pretrained
from zoo.registry import create_model, get_config, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "get_config",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
    "save_pretrained",
]
