"""Named variants of each model family; importing this registers them."""

from zoo.models import language, speech, translation, vision

__all__ = ["language", "speech", "translation", "vision"]
