"""Machine translation task."""

from tasks.translation import task  # noqa: F401  (registers the "translation" task)
from tasks.translation.model import Seq2SeqConfig, Seq2SeqTransformer

__all__ = ["Seq2SeqConfig", "Seq2SeqTransformer"]
