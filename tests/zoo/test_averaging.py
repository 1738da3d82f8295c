"""Checkpoint averaging: floating tensors averaged in their dtype, counters from the last file,
files that do not match named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoo.averaging import average_checkpoints
from zoo.errors import CheckpointError


def test_average_checkpoints(tmp_path: Path) -> None:
    paths = [tmp_path / f"step_{i}.safetensors" for i in range(3)]
    for i, path in enumerate(paths):
        w = torch.full((2, 2), float(i + 1), dtype=torch.bfloat16)
        save_file({"w": w, "count": torch.tensor([i])}, path)
    avg = average_checkpoints(paths)
    assert avg["w"].dtype == torch.bfloat16 and torch.equal(
        avg["w"], torch.full((2, 2), 2.0).bfloat16()
    )
    assert avg["count"].item() == 2
    save_file({"w": torch.zeros(2, 2), "other": torch.zeros(1)}, paths[2])
    with pytest.raises(CheckpointError, match=rf"{paths[2]} does not match .*'count' is missing"):
        average_checkpoints(paths)
