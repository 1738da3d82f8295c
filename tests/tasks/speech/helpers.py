"""What the speech task tests share: a task from data options, WAV files written by the tests, a
short training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tasks.base import get_task
from tests.tasks.recipes import make_recipe

SR = 16000


def make_task(dataset: str = "synthetic", root: Path | str | None = None,
              sections: dict | None = None, **options):
    """The task of a recipe with these ``data.options`` and other ``sections`` (augment...)."""
    data = {"dataset": dataset, "root": str(root) if root else None, "options": options}
    recipe = make_recipe("speech_recognition", data, **(sections or {}),
                         train={"max_steps": 1, "label_smoothing": 0.1})
    return get_task("speech_recognition")(recipe)


def write_wav(path: Path, seconds: float = 0.3, rate: int = SR, channels: int = 1,
              freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(str(path), np.stack([wave] * channels, 1) if channels > 1 else wave, rate)
    return path


def quick_train(task, model, steps: int, lr: float) -> None:
    ds = task.datasets()["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    batches = [b for e in range(100) for b in task.batches(ds, 16, True, e)][:steps]
    model.train()
    for b in batches:
        loss, _ = task.loss(model, task.collate([ds[i] for i in b]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
