"""Masked language modelling (BERT) on the shared text core."""

from tasks.masked_lm import task  # noqa: F401  (registers the "masked_lm" task)
from tasks.masked_lm.model import BertConfig, MaskedLanguageModel, translation_encoder_state

__all__ = ["BertConfig", "MaskedLanguageModel", "translation_encoder_state"]
