"""transformer-zoo: build, train and transfer attention models across text, images and speech.

The public API is loaded on first use (PEP 562 ``__getattr__``): ``import zoo`` imports no
torch, so the ``zoo`` command, which lives in this package, starts in a fraction of a second.
The first touch of ``zoo.create_model`` (or any name below) imports its module and registers
the model variants (``zoo.models``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "create_model": "zoo.pretrained",
    "get_config": "zoo.registry",
    "list_models": "zoo.registry",
    "load_pretrained": "zoo.pretrained",
    "model_info": "zoo.registry",
    "register_model": "zoo.registry",
    "save_pretrained": "zoo.saved_model",
}

__all__ = [
    "create_model",
    "get_config",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
    "save_pretrained",
]

if TYPE_CHECKING:
    from zoo.pretrained import create_model, load_pretrained
    from zoo.registry import get_config, list_models, model_info, register_model
    from zoo.saved_model import save_pretrained


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    importlib.import_module("zoo.models")  # the variants that the names refer to
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
