"""Named variants of each model family; importing this registers them."""

from zoo.models import speech, translation, vision

__all__ = ["speech", "translation", "vision"]
