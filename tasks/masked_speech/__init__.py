"""Masked acoustic modelling (Mockingjay / TERA) on the shared speech encoder."""

from tasks.masked_speech import task  # noqa: F401  (registers the "masked_speech" task)
from tasks.masked_speech.model import (
    MaskedSpeechConfig,
    MaskedSpeechModel,
    MaskedSpeechOutput,
    masked_frame_loss,
    span_mask,
)

__all__ = [
    "MaskedSpeechConfig",
    "MaskedSpeechModel",
    "MaskedSpeechOutput",
    "masked_frame_loss",
    "span_mask",
]
