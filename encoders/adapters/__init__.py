"""Modality adapters: raw input -> (tokens (B, N, D), padding mask (B, N) or None)."""

from encoders.adapters.audio import AudioAdapter, Conv2dSubsampling, LogMel, SpecAugment
from encoders.adapters.text import TextAdapter
from encoders.adapters.vision import PatchEmbed, VisionAdapter

__all__ = [
    "AudioAdapter",
    "Conv2dSubsampling",
    "LogMel",
    "PatchEmbed",
    "SpecAugment",
    "TextAdapter",
    "VisionAdapter",
]
