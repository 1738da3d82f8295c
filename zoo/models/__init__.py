"""Named variants of each model family; importing this registers them."""

import zoo.models.masked  # noqa: F401  (BERT, MAE and masked speech pre-training)
from zoo.models import language, multitask, speech, translation, vision

__all__ = ["language", "multitask", "speech", "translation", "vision"]
