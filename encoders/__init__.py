"""The shared attention core of the zoo and its modality adapters.

Depends on torch and torchaudio only; never imports ``tasks`` or ``zoo``.
"""

from encoders.adapters import AudioAdapter, TextAdapter, VisionAdapter
from encoders.attention import (
    KVCache,
    MultiHeadAttention,
    build_attention_mask,
    lengths_to_padding_mask,
)
from encoders.core import (
    CORE_SIZES,
    CoreConfig,
    DecoderCache,
    TransformerDecoder,
    TransformerEncoder,
    core_size,
)
from encoders.layers import (
    ConformerLayer,
    ConvModule,
    DecoderLayer,
    DropPath,
    EncoderLayer,
    FeedForward,
    LayerScale,
)
from encoders.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    sinusoidal_table,
)

__all__ = [
    "CORE_SIZES",
    "AudioAdapter",
    "ConformerLayer",
    "ConvModule",
    "CoreConfig",
    "DecoderCache",
    "DecoderLayer",
    "DropPath",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LayerScale",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "SinusoidalPositionalEmbedding",
    "TextAdapter",
    "TransformerDecoder",
    "TransformerEncoder",
    "VisionAdapter",
    "build_attention_mask",
    "core_size",
    "lengths_to_padding_mask",
    "sinusoidal_table",
]
