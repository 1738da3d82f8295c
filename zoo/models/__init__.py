"""Named variants of each model family; importing this registers them."""

from zoo.models import language, multitask, speech, translation, vision

__all__ = ["language", "multitask", "speech", "translation", "vision"]
