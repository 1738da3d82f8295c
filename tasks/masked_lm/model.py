"""Masked language model (BERT, Devlin et al. 2019) on the shared core: the text adapter, the
core, and BERT's prediction head over the tied token embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from encoders import TextAdapter, TransformerEncoder
from encoders.core import CoreConfig, core_size, rotary_positions
from encoders.layers import NORM_EPS

HEADS = ("bert", "linear")


@dataclass
class BertConfig:
    """Masked language model hyperparameters.

    The adapter (token embeddings x sqrt(D) + positions) and the core are those of the
    translation encoder (``Seq2SeqConfig``'s ``src_adapter`` and ``core``), so a model trained
    here initialises a translation encoder of the same core size and vocabulary.
    """

    task: ClassVar[str] = "masked_lm"
    modality: ClassVar[str] = "text"

    vocab_size: int = 8000
    core: CoreConfig = field(default_factory=lambda: core_size("mini", dropout=0.1))
    pos: str = "sinusoidal"  # "sinusoidal", "learned" or "rotary" (= core.rotary)
    max_len: int = 1024
    pad_id: int = 0
    mask_id: int = 4  # the "[MASK]" piece: the first id after pad, bos, eos, unk
    # "bert": dense + GELU + LayerNorm, then the tied decoder with a bias (BERT's head);
    # "linear": the tied decoder with a bias on the core's output
    head: str = "bert"

    def __post_init__(self) -> None:
        self.pos, self.core = rotary_positions(self.pos, self.core)
        if self.head not in HEADS:
            raise ValueError(f"unknown masked LM head '{self.head}'; expected one of {HEADS}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(
                f"mask_id {self.mask_id} is outside the vocabulary of {self.vocab_size} ids"
            )

    def build(self) -> MaskedLanguageModel:
        return MaskedLanguageModel(self)


class MLMHead(nn.Module):
    """Token states -> vocabulary logits through the (tied) embedding matrix.

    Args:
        dim: width D.
        embed: the token embedding (V, D) whose weight the decoder shares.
        transform: BERT's dense + GELU + LayerNorm before the decoder.
    """

    def __init__(self, dim: int, embed: nn.Embedding, transform: bool) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim) if transform else nn.Identity()
        self.act = nn.GELU() if transform else nn.Identity()
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS) if transform else nn.Identity()
        self.decoder = nn.Linear(dim, embed.num_embeddings)
        self.decoder.weight = embed.weight  # tied (Press and Wolf 2017), as BERT
        nn.init.zeros_(self.decoder.bias)
        if transform:
            nn.init.trunc_normal_(self.dense.weight, std=0.02)
            nn.init.zeros_(self.dense.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) states -> (..., V) logits."""
        return self.decoder(self.norm(self.act(self.dense(x))))


class MaskedLanguageModel(nn.Module):
    """``adapter`` (token ids -> embeddings + positions) -> ``core`` -> ``head`` (logits)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pos = "none" if cfg.core.rotary else cfg.pos
        self.adapter = TextAdapter(
            cfg.vocab_size, cfg.core.dim, cfg.max_len, cfg.pad_id, pos, cfg.core.dropout
        )
        self.core = TransformerEncoder.from_config(cfg.core)
        self.head = MLMHead(cfg.core.dim, self.adapter.embed, transform=cfg.head == "bert")

    def forward_features(
        self, ids: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, N) token ids -> the core's output tokens (B, N, D) and their padding mask
        (B, N), True at padding (or None)."""
        tokens, mask = self.adapter(ids, lengths)
        return self.core(tokens, mask), mask

    def forward_head(self, features: Tensor) -> Tensor:
        """(..., D) token states -> (..., V) logits."""
        return self.head(features)

    def forward(self, ids: Tensor, select: Tensor | None = None) -> Tensor:
        """Logits of the tokens: (B, N) ids -> (B, N, V); with ``select`` (B, N) bool, only
        those positions: (M, V), M = select.sum() (the loss needs the masked ones only)."""
        features, _ = self.forward_features(ids)
        if select is not None:
            features = features[select]
        return self.forward_head(features)


def translation_encoder_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The weights of a masked LM that a ``Seq2SeqTransformer`` encoder of the same core size and
    vocabulary takes: ``core.*`` as they are and ``adapter.*`` as ``src_adapter.*`` (its token
    embedding is shared with the target side and the output projection there, so all three
    start from it). Load with ``load_state_dict(..., strict=False)``."""
    out = {}
    for key, value in state.items():
        if key.startswith("core."):
            out[key] = value
        elif key.startswith("adapter."):
            out["src_" + key] = value
    return out
