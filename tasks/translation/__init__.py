"""Machine translation task."""

from tasks.translation.model import Seq2SeqConfig, Seq2SeqTransformer

__all__ = ["Seq2SeqConfig", "Seq2SeqTransformer"]
