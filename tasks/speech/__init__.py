"""Speech recognition task."""

from tasks.speech.model import ASRConfig, SpeechOutput, SpeechRecognizer

__all__ = ["ASRConfig", "SpeechOutput", "SpeechRecognizer"]
