"""Image classification task."""

from tasks.classification.model import ClassifierHead, ImageClassifier, ViTConfig

__all__ = ["ClassifierHead", "ImageClassifier", "ViTConfig"]
