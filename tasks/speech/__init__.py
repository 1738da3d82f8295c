"""Speech recognition task."""

from tasks.speech import task  # noqa: F401  (registers "speech_recognition")
from tasks.speech.model import ASRConfig, SpeechOutput, SpeechRecognizer
from tasks.speech.task import SpeechRecognitionTask

__all__ = ["ASRConfig", "SpeechOutput", "SpeechRecognitionTask", "SpeechRecognizer"]
