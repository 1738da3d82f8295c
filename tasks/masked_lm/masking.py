"""BERT's input corruption (Devlin et al. 2019): choose 15% of the tokens (or of the words), and
of those replace 80% by [MASK], 10% by a random token and keep 10%; the model predicts the
original token at every chosen position.

The count per sequence is ``floor(p * n + u)`` with ``u ~ U(0, 1)`` (fairseq's rounding), so a
sequence of n units has exactly ``p * n`` chosen units on average, also when n is small; the
units are then drawn without replacement.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = -100  # label of the positions that are not predicted (F.cross_entropy's ignore_index)


def check_probabilities(mask_prob: float, mask_token_prob: float, random_token_prob: float) -> None:
    """Raise ValueError naming the option whose value cannot be a masking probability."""
    if not 0 < mask_prob < 1:
        raise ValueError(
            f"data.options.mask_prob must lie strictly between 0 and 1, got {mask_prob}"
        )
    for key, value in (("mask_token_prob", mask_token_prob),
                       ("random_token_prob", random_token_prob)):
        if not 0 <= value <= 1:
            raise ValueError(f"data.options.{key} must lie in [0, 1], got {value}")
    if mask_token_prob + random_token_prob > 1:
        raise ValueError(
            f"data.options.mask_token_prob + random_token_prob must be at most 1, got "
            f"{mask_token_prob} + {random_token_prob}"
        )


def _unit_starts(maskable: Tensor, starts: Tensor | None) -> Tensor:
    """(B, N) True where a maskable unit begins: every maskable token, or (whole words) a
    maskable word-initial token, or a maskable token after a non-maskable one."""
    if starts is None:
        return maskable
    after_special = torch.ones_like(maskable)
    after_special[:, 1:] = ~maskable[:, :-1]
    return maskable & (starts | after_special)


def choose_positions(
    maskable: Tensor, mask_prob: float, starts: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The positions to predict: ``mask_prob`` of the units of each row, drawn uniformly.

    Args:
        maskable: (B, N) True at tokens that may be chosen (not padding or special tokens).
        mask_prob: the expected share of units chosen.
        starts: (B, N) True at word-initial tokens for whole-word masking (a word is its first
            token and the non-initial tokens after it), or None to choose single tokens.
        generator: the random draws' generator (None: the global one).
    Returns:
        (B, N) bool, True at the chosen positions (every token of a chosen word).
    """
    starts = _unit_starts(maskable, starts)
    unit = starts.long().cumsum(1) - 1  # (B, N) index of each token's unit in its row
    units = starts.sum(1)  # (B,)
    b, n = maskable.shape
    uniform = torch.rand(b, generator=generator)
    count = torch.minimum((mask_prob * units + uniform).floor().long(), units)
    scores = torch.rand(b, n, generator=generator)  # one score per unit slot (units <= N)
    scores[torch.arange(n)[None, :] >= units[:, None]] = 2.0  # slots beyond the row's units
    rank = scores.argsort(1).argsort(1)  # (B, N) rank of each unit's score in its row
    chosen_unit = rank < count[:, None]
    return maskable & chosen_unit.gather(1, unit.clamp(min=0))


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    mask_id: int,
    random_ids: tuple[int, int],
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
    starts: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Corrupt a batch of token ids the BERT way.

    Args:
        ids: (B, N) token ids (int64).
        maskable: (B, N) True where a token may be chosen.
        mask_id: the id of [MASK].
        random_ids: [low, high) of the random replacement ids (the ordinary pieces).
        mask_prob: share of units chosen (0.15).
        mask_token_prob: share of the chosen tokens replaced by [MASK] (0.8).
        random_token_prob: share replaced by a random id (0.1); the rest stay as they are.
        starts: (B, N) word-initial tokens for whole-word masking, or None.
        generator: generator of every draw (None: the global one).
    Returns:
        the corrupted inputs (B, N) and the labels (B, N): the original id at the chosen
        positions, ``IGNORE`` elsewhere.
    """
    chosen = choose_positions(maskable, mask_prob, starts, generator)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    draw = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (draw < mask_token_prob)
    to_random = chosen & (draw >= mask_token_prob) & (draw < mask_token_prob + random_token_prob)
    randoms = torch.randint(*random_ids, ids.shape, generator=generator)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    return torch.where(to_random, randoms, inputs), labels
