"""Causal language modelling: a decoder-only model on the shared core."""

from tasks.language_modeling import task  # noqa: F401  (registers the "language_modeling" task)
from tasks.language_modeling.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
