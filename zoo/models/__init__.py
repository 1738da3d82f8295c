"""Named variants of each model family; importing this registers them."""

from zoo.models import multitask, speech, translation, vision

__all__ = ["multitask", "speech", "translation", "vision"]
