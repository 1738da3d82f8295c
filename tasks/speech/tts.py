"""Synthetic read speech from text with the eSpeak NG formant synthesiser, for pretraining a
recogniser before a small real corpus. eSpeak NG comes as a library with its voice data in the
``espeakng-loader`` package (``pip install -e ".[tts]"``); it is driven here through ctypes.

``synthesize_corpus`` writes ``wavs/*.wav`` and a ``transcripts.tsv`` manifest (``path``,
``text``, ``speaker`` = voice), which the ``manifest`` dataset reads. Each utterance gets a voice
variant, speaking rate, pitch and word gap drawn from a seeded generator, so one command gives
the same corpus again.
"""

from __future__ import annotations

import csv
import ctypes
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from tasks.speech.vocab import read_sentences

ENGLISH = " 'abcdefghijklmnopqrstuvwxyz"
# eSpeak NG's voice variants (espeak-ng-data/voices/!v): female and male formant voices and the
# Klatt synthesiser's, so the corpus is not one voice
VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "klatt4", "m1", "m2", "m3", "m4",
    "m5", "Annie", "belinda", "linda", "anika", "aunty", "grandma", "john", "max",
)

_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: samples handed to the callback, Synth blocks
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors instead of exiting the process
_RATE, _PITCH, _WORDGAP = 1, 3, 7  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Espeak:
    """The eSpeak NG library, loaded once per process (it keeps global state).

    Raises:
        ImportError: ``espeakng-loader`` is not installed.
        OSError: its library does not load or start.
    """

    _instance: Espeak | None = None

    def __new__(cls) -> Espeak:
        if cls._instance is None:
            tts = super().__new__(cls)
            tts._start()  # kept only once it has started, so a failure is raised again next time
            cls._instance = tts
        return cls._instance

    def _start(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ImportError("speech synthesis needs eSpeak NG: pip install espeakng-loader "
                              "(the project's 'tts' extra)") from None
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.variants = sorted(p.name for p in (Path(data.decode()) / "voices" / "!v").iterdir())
        self.sample_rate = self._lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, data, _DONT_EXIT)
        if self.sample_rate <= 0:
            raise OSError(f"eSpeak NG did not start (data at {data.decode()})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library uses it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # go on

    def say(
        self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, word_gap: int = 0
    ) -> np.ndarray:
        """Int16 samples at ``sample_rate`` of ``text`` read by ``voice`` (a language such as
        ``en-us``, optionally ``+variant``) at ``rate`` words per minute, ``pitch`` 0-100 (50
        is the voice's own) and ``word_gap`` extra pauses between words in units of 10 ms.

        Raises:
            ValueError: an unknown voice, or text that gives no audio.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice}'")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_WORDGAP, word_gap)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        data = text.encode() + b"\0"
        self._chunks = []
        self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if not self._chunks:
            raise ValueError(f"eSpeak NG gave no audio for {text!r}")
        return np.concatenate(self._chunks)


def synthesize_corpus(
    texts: Sequence[str | Path],
    out: str | Path,
    count: int | None = None,
    seed: int = 0,
    language: str = "en-us",
    variants: Sequence[str] = VARIANTS,
    rate: tuple[int, int] = (140, 200),
    pitch: tuple[int, int] = (25, 75),
    word_gap: tuple[int, int] = (0, 2),
    alphabet: str = ENGLISH,
) -> dict[str, float]:
    """Read ``count`` sentences of the ``texts`` files (the first ``count`` of a seeded shuffle;
    all when None) aloud into ``out/wavs`` and write ``out/transcripts.tsv``.

    Returns:
        ``utterances``, ``hours`` of audio, ``left_out`` lines (outside ``alphabet``).
    Raises:
        ValueError: no usable sentence, a bad text file or voice, ``count`` < 1.
    """
    sentences, dropped = read_sentences(texts, alphabet)
    if not sentences:
        raise ValueError(f"no line of {', '.join(map(str, texts))} uses only the characters "
                         f"{alphabet!r}")
    if count is not None and count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    rng.shuffle(sentences)
    sentences = sentences[:count]
    tts = Espeak()
    unknown = sorted(set(variants) - set(tts.variants))
    if unknown:
        raise ValueError(f"eSpeak NG has no voice variant {unknown[0]!r} (the variants are "
                         "the files of its espeak-ng-data/voices/!v)")
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    width = len(str(len(sentences) - 1))
    rows, samples = [], 0
    for i, text in enumerate(sentences):
        variant = rng.choice(variants)
        wave = tts.say(text, f"{language}+{variant}", rng.randint(*rate), rng.randint(*pitch),
                       rng.randint(*word_gap))
        name = f"wavs/{i:0{width}d}.wav"
        sf.write(out / name, wave, tts.sample_rate, subtype="PCM_16")
        rows.append((name, text, variant))
        samples += len(wave)
    with open(out / "transcripts.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(("path", "text", "speaker"))
        writer.writerows(rows)
    return {"utterances": len(rows), "hours": samples / tts.sample_rate / 3600,
            "left_out": dropped}
