"""Several tasks, one core (PolyViT, Likhosherstov et al. 2022): a multitask recipe trains one
shared core with each task's own adapter, head and decoder, sampling one task per optimizer
step. See docs/multitask.md.

- `zoo.multitask.model`: ``MultitaskModel`` (``core`` + ``tasks.<name>``) and its config.
- `zoo.multitask.sections`: the recipe's task sections, checked.
- `zoo.multitask.sampling`: which task trains at each step, a pure function of (seed, step).
- `zoo.multitask.data`: the tasks' data side by side and each task's stream of batches.
- `zoo.multitask.task`: ``MultiTask``, the Task contract over the sections (registered as
  task "multitask").
- `zoo.multitask.runs`: a multitask run's single tasks for ``zoo eval/classify/translate/
  transcribe --task`` and ``zoo extract``.
"""

from zoo.multitask.model import MultitaskConfig, MultitaskModel
from zoo.multitask.task import MultiTask

__all__ = ["MultiTask", "MultitaskConfig", "MultitaskModel"]
