"""Looking inside trained models: attention maps, rollout and alignments (``extract``,
``rollout``, and the figures of each family), head importance and ablation
(``importance``), pruning (``prune``) and learned head gates (``gates``).

See docs/interpret.md.
"""

from zoo.interpret.extract import AttentionExtract, attention_modules, masked_heads
from zoo.interpret.gates import add_gate_penalty, gate_values, prune_closed_heads
from zoo.interpret.importance import ablate_heads, head_importance
from zoo.interpret.prune import plan_pruning, prune_heads, random_scorer
from zoo.interpret.rollout import attention_rollout

__all__ = [
    "AttentionExtract",
    "ablate_heads",
    "add_gate_penalty",
    "attention_modules",
    "attention_rollout",
    "gate_values",
    "head_importance",
    "masked_heads",
    "plan_pruning",
    "prune_closed_heads",
    "prune_heads",
    "random_scorer",
]
