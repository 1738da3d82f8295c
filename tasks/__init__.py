"""Task packages: each combines an adapter, the shared core and a head, plus its data, loss,
metrics and decoding. Imports ``encoders`` only, never ``zoo``."""

from tasks import masked_image, masked_lm, masked_speech  # noqa: F401  (MLM, MAE, masked speech)
from tasks.classification import ImageClassifier, ViTConfig
from tasks.language_modeling import GPT, GPTConfig
from tasks.speech import ASRConfig, SpeechOutput, SpeechRecognizer
from tasks.translation import Seq2SeqConfig, Seq2SeqTransformer

__all__ = [
    "ASRConfig",
    "GPT",
    "GPTConfig",
    "ImageClassifier",
    "Seq2SeqConfig",
    "Seq2SeqTransformer",
    "SpeechOutput",
    "SpeechRecognizer",
    "ViTConfig",
]
