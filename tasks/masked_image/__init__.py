"""Masked image modelling (MAE) on the shared core."""

from tasks.masked_image import task  # noqa: F401  (registers the "masked_image" task)
from tasks.masked_image.model import MAEConfig, MaskedAutoencoder, encoder_state_dict

__all__ = ["MAEConfig", "MaskedAutoencoder", "encoder_state_dict"]
