"""Speech recogniser variants: Transformer-CTC (Dong et al. 2018, Speech-Transformer encoder) and
Conformer-CTC (Gulati et al. 2020, "Conformer")."""

from __future__ import annotations

from tasks.speech import ASRConfig
from zoo.registry import register_model


@register_model
def asr_transformer_ctc_tiny() -> ASRConfig:
    """Transformer encoder + CTC: width 144, 6 layers, 4 heads."""
    return ASRConfig(dim=144, depth=6, num_heads=4)


@register_model
def asr_transformer_ctc_small() -> ASRConfig:
    """Transformer encoder + CTC: width 256, 12 layers, 4 heads."""
    return ASRConfig(dim=256, depth=12, num_heads=4)


@register_model
def asr_conformer_ctc_tiny() -> ASRConfig:
    """Conformer + CTC: width 144, 6 blocks, 4 heads, kernel 15."""
    return ASRConfig(dim=144, depth=6, num_heads=4, conformer=True, conv_kernel=15)


@register_model
def asr_conformer_ctc_small() -> ASRConfig:
    """Conformer-S (Gulati et al. 2020) + CTC: width 144, 16 blocks, 4 heads, kernel 31."""
    return ASRConfig(dim=144, depth=16, num_heads=4, conformer=True, conv_kernel=31)


@register_model
def test_asr_transformer() -> ASRConfig:
    """Tiny speech model for tests and smoke runs; its core matches ``test_vit``'s."""
    return ASRConfig(dim=64, depth=2, num_heads=4, n_mels=40, dropout=0.0)
