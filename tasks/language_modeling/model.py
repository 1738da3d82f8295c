"""A decoder-only language model (GPT: Radford et al. 2018, 2019) on the shared core.

The core is the same ``TransformerEncoder`` every family uses, run with a causal mask, so a
``gpt_mini`` core has the ``core.*`` keys and shapes of ``vit_mini_patch4_28``'s. The output layer
is tied to the token embedding (Press and Wolf 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from encoders import KVCache, TextAdapter, TransformerEncoder
from encoders.core import CoreConfig, rotary_positions


@dataclass
class GPTConfig:
    """Decoder-only Transformer hyperparameters.

    ``vocab_size`` and the special ids come from the task's vocabulary (ids 0-3 are pad, bos,
    eos, unk in both the character and the sentencepiece vocabularies).
    """

    task: ClassVar[str] = "language_modeling"
    modality: ClassVar[str] = "text"

    vocab_size: int = 256
    core: CoreConfig = field(default_factory=lambda: CoreConfig(dim=128, depth=6, num_heads=4))
    # learned positions, as GPT-2 and nanoGPT; "sinusoidal" or "rotary" (= core.rotary) also work
    pos: str = "learned"
    max_len: int = 256  # the context: the most positions the model attends over
    # GPT-2's embeddings (std 0.02, unscaled); True multiplies them by sqrt(D) as in Vaswani et
    # al., which with the tied head makes a fresh model confidently predict its input token
    embed_scale: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        self.pos, self.core = rotary_positions(self.pos, self.core)
        if self.core.conformer:
            raise ValueError("a GPT core cannot be a Conformer: its convolution sees the future")

    def build(self) -> GPT:
        return GPT(self)


class GPT(nn.Module):
    """``adapter`` (token embeddings + positions) -> ``core`` (causal) -> ``head`` (tied).

    The head's weight is the embedding table (GPT-2: std 0.02, no sqrt(D) scale by default).
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.core.dim
        adapter_pos = "none" if cfg.core.rotary else cfg.pos
        self.adapter = TextAdapter(
            cfg.vocab_size, dim, cfg.max_len, cfg.pad_id, adapter_pos, cfg.core.dropout,
            embed_scale=cfg.embed_scale,
        )  # fmt: skip
        self.core = TransformerEncoder.from_config(cfg.core)
        self.head = nn.Linear(dim, cfg.vocab_size, bias=False)
        self.head.weight = self.adapter.embed.weight  # tied output layer
        self._scale_residual_init()

    def _scale_residual_init(self) -> None:
        # GPT-2 (Radford et al. 2019): the projections that write into the residual stream
        # start 1/sqrt(2 * depth) smaller, so the stream's variance does not grow with depth.
        std = 0.02 / math.sqrt(2 * self.cfg.core.depth)
        for block in self.core.blocks:
            for proj in (block.attn.proj, block.mlp.fc2):
                nn.init.trunc_normal_(proj.weight, std=std)  # as the core draws its weights

    def new_cache(self) -> list[KVCache]:
        """Empty per-layer caches for ``forward_features(..., cache=...)``."""
        return self.core.new_cache()

    def forward_features(
        self, ids: Tensor, lengths: Tensor | None = None, cache: list[KVCache] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Causal features of token ids.

        Args:
            ids: (B, N) token ids (right padding, if any, with ``pad_id``); with a cache, the
                positions after the cached ones.
            lengths: (B,) true lengths, else padding is where ids == pad_id.
            cache: per-layer KV caches (``new_cache()``), extended in place; no padding then.
        Returns:
            the core's output tokens (B, N, D) and the padding mask (B, N), True at padding,
            or None.
        """
        start = len(cache[0]) if cache else 0
        if start + ids.shape[1] > self.cfg.max_len:
            raise ValueError(
                f"{start + ids.shape[1]} tokens exceed the model's context of "
                f"{self.cfg.max_len} positions (max_len)"
            )
        tokens, mask = self.adapter(ids, lengths, start_pos=start)
        if cache is not None and mask is not None:
            raise ValueError("incremental decoding with a KV cache takes no padding")
        return self.core(tokens, mask, causal=True, cache=cache), mask

    def forward_head(self, tokens: Tensor) -> Tensor:
        """(B, N, D) features -> (B, N, V) next-token logits."""
        return self.head(tokens)

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, N) token ids -> (B, N, V) logits; position i predicts token i + 1."""
        tokens, _ = self.forward_features(ids, lengths)
        return self.forward_head(tokens)
