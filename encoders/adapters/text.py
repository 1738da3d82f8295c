"""Text adapter: token ids -> scaled embeddings + positions."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from encoders.adapters.checks import check_lengths, check_not_empty
from encoders.attention import lengths_to_padding_mask
from encoders.positional import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding

POSITIONS = ("sinusoidal", "learned", "none")


class TextAdapter(nn.Module):
    """Token embeddings multiplied by sqrt(D) (Vaswani et al. 2017) plus positions.

    Args:
        vocab_size: number of token ids.
        dim: width D.
        max_len: longest sequence the positions cover.
        pad_id: id of the padding token; its positions form the padding mask.
        pos: "sinusoidal", "learned" or "none" (e.g. when the core uses rotary positions).
        dropout: dropout on the summed embeddings.
        embed_scale: multiply by sqrt(D); False adds the embeddings as they are, drawn with
            std 0.02 (GPT-2). Tied to an output layer, scaled embeddings make a fresh model
            predict its input token with confidence, which a language model must unlearn first.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int = 1024,
        pad_id: int = 0,
        pos: str = "sinusoidal",
        dropout: float = 0.0,
        embed_scale: bool = True,
    ) -> None:
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"unknown position type '{pos}'; expected one of {POSITIONS}")
        self.vocab_size, self.dim, self.pad_id = vocab_size, dim, pad_id
        self.scale = math.sqrt(dim) if embed_scale else 1.0
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        # scaled: std D^-1/2, so that embeddings have unit variance after the sqrt(D) scale
        nn.init.normal_(self.embed.weight, std=dim**-0.5 if embed_scale else 0.02)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        if pos == "sinusoidal":
            self.pos_embed = SinusoidalPositionalEmbedding(dim, max_len)
        elif pos == "learned":
            self.pos_embed = LearnedPositionalEmbedding(dim, max_len)
        else:
            self.pos_embed = None
        self.drop = nn.Dropout(dropout)

    def check_input(self, ids: Tensor) -> None:
        """Refuse token ids that are not a non-empty integer (B, N) batch within the
        vocabulary (a ``ValueError`` naming the problem)."""
        if ids.ndim != 2:
            raise ValueError(f"expected token ids of shape (B, N), got shape {tuple(ids.shape)}")
        check_not_empty(ids, "token ids", "(B, N)")
        if ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected integer token ids, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.vocab_size}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )

    def forward(
        self, ids: Tensor, lengths: Tensor | None = None, *, start_pos: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """Embed token ids.

        Args:
            ids: (B, N) token ids.
            lengths: (B,) true lengths; if None, padding is where ids == pad_id.
            start_pos: position of the first token (for incremental decoding).
        Returns:
            tokens (B, N, D) and padding mask (B, N) (True at padding), or None if no padding.
        """
        self.check_input(ids)
        if lengths is not None:
            check_lengths(lengths, ids.shape[0], ids.shape[1], "tokens")
        x = self.embed(ids) * self.scale
        if self.pos_embed is not None:
            x = self.pos_embed(x, start_pos)
        if lengths is not None:
            mask = lengths_to_padding_mask(lengths, ids.shape[1])
        else:
            mask = ids == self.pad_id
        return self.drop(x), (mask if bool(mask.any()) else None)
