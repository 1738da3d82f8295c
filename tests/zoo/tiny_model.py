"""A tiny model with a tied embedding and head, a norm and a buffer, for tests of saving and
loading that need no registered model (its name ``test_tiny`` is not registered)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class TinyConfig:
    vocab_size: int = 11
    dim: int = 8
    tie_head: bool = True


class TinyLM(nn.Module):
    """An embedding tied to the output Linear, a norm and a buffer: enough to exercise saving."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg, self.model_name = cfg, "test_tiny"
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        if cfg.tie_head:
            self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.full((1,), 2.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)) * self.scale)


def tiny_model(seed: int = 0, **kwargs: object) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(**kwargs))


IDS = torch.tensor([[1, 2, 3, 10]])
