"""Speech recogniser variants: Transformer-CTC (Dong et al. 2018, Speech-Transformer encoder) and
Conformer-CTC (Gulati et al. 2020, "Conformer")."""

from __future__ import annotations

from encoders.core import CoreConfig, core_size
from tasks.speech import ASRConfig
from zoo.registry import register_model


@register_model
def asr_transformer_ctc_mini() -> ASRConfig:
    """Transformer encoder + CTC on the shared "mini" core (width 128, 6 layers, 4 heads); its
    core moves to and from ``vit_mini_patch4_28`` and ``mt_transformer_mini``."""
    return ASRConfig(core=core_size("mini", dropout=0.1))


@register_model
def asr_transformer_ctc_tiny() -> ASRConfig:
    """Transformer encoder + CTC: width 144, 6 layers, 4 heads."""
    return ASRConfig(core=CoreConfig(dim=144, depth=6, num_heads=4, dropout=0.1))


@register_model
def asr_transformer_ctc_small() -> ASRConfig:
    """Transformer encoder + CTC: width 256, 12 layers, 4 heads."""
    return ASRConfig(core=CoreConfig(dim=256, depth=12, num_heads=4, dropout=0.1))


@register_model
def asr_conformer_ctc_tiny() -> ASRConfig:
    """Conformer + CTC: width 144, 6 blocks, 4 heads, kernel 15."""
    core = CoreConfig(dim=144, depth=6, num_heads=4, dropout=0.1, conformer=True, conv_kernel=15)
    return ASRConfig(core=core)


@register_model
def asr_conformer_ctc_small() -> ASRConfig:
    """Conformer-S (Gulati et al. 2020) + CTC: width 144, 16 blocks, 4 heads, kernel 31."""
    core = CoreConfig(dim=144, depth=16, num_heads=4, dropout=0.1, conformer=True, conv_kernel=31)
    return ASRConfig(core=core)


@register_model
def test_asr_transformer() -> ASRConfig:
    """Tiny speech model for tests and smoke runs; its core is the "test" size."""
    return ASRConfig(core=core_size("test"), n_mels=40)
