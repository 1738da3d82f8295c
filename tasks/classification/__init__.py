"""Image classification task."""

from tasks.classification.model import ClassifierHead, ImageClassifier, ViTConfig
from tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask", "ClassifierHead", "ImageClassifier", "ViTConfig"]
