"""Synthetic read speech from text, for pretraining a recogniser before a small real corpus.

Two synthesisers: eSpeak NG's formant voices, a library with its voice data in the
``espeakng-loader`` package (``pip install -e ".[tts]"``), driven here through ctypes; and,
optionally, CMU Flite's statistical-parametric voices (the ``flite`` program, Debian/Ubuntu
package ``flite``), which were trained on recorded speech and sound less machine-like.

``synthesize_corpus`` writes ``wavs/*.wav`` and a ``transcripts.tsv`` manifest (``path``,
``text``, ``speaker`` = voice), which the ``manifest`` dataset reads. Each utterance gets a voice,
speaking rate, pitch and word gap drawn from a seeded generator, so one command gives the same
corpus again.
"""

from __future__ import annotations

import csv
import ctypes
import random
import shutil
import subprocess
import tempfile
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
# Flite's English voices at 16 kHz: US female (slt), US male (rms), Scottish male (awb), all
# clustergen voices trained on CMU ARCTIC recordings, and a US male diphone voice (kal16)
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
FLITE_RATE = 175  # words per minute at duration_stretch 1, the reference for ``rate``
# the voices' own median pitch in Hz (measured on a caption each, autocorrelation over voiced
# frames), which ``pitch`` 50 keeps
_FLITE_F0 = {"slt": 175.0, "rms": 105.0, "awb": 133.0, "kal16": 85.0}

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


class Flite:
    """CMU Flite through its command-line program (one process per sentence, so slower than
    eSpeak NG, which runs in-process).

    Raises:
        OSError: the ``flite`` program is not on the PATH.
    """

    sample_rate = 16000

    def __init__(self, program: str = "flite") -> None:
        path = shutil.which(program)
        if path is None:
            raise OSError(f"speech synthesis with Flite needs its program '{program}' on the "
                          "PATH (Debian/Ubuntu: apt-get install flite)")
        self.program = path
        listed = subprocess.run([path, "-lv"], capture_output=True, text=True, check=False)
        self.voices = [v for v in listed.stdout.split(":", 1)[-1].split() if v in _FLITE_F0]

    def check(self, voice: str) -> None:
        """Raise ValueError naming ``voice`` when it is not one of ``voices``."""
        if voice not in self.voices:
            raise ValueError(f"Flite has no voice {voice!r} here (its voices: "
                             f"{', '.join(self.voices) or 'none'})")

    def say(
        self, text: str, voice: str = "slt", rate: int = FLITE_RATE, pitch: int = 50
    ) -> np.ndarray:
        """Int16 samples at 16 kHz of ``text`` read by ``voice`` at ``rate`` words per minute
        (as a duration stretch of ``FLITE_RATE / rate``) and ``pitch`` 0-100, 50 being the
        voice's own mean pitch and each 50 either side a factor of 2**0.5 (the rms voice keeps
        its own pitch whatever is asked).

        Raises:
            ValueError: a voice not in ``voices``, or text that gives no audio.
        """
        self.check(voice)
        f0 = _FLITE_F0[voice] * 2 ** ((pitch - 50) / 100)
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "say.wav"
            done = subprocess.run(
                [self.program, "-voice", voice, "--setf", f"duration_stretch={FLITE_RATE / rate}",
                 "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(wav)],
                capture_output=True, text=True, check=False)
            if done.returncode != 0 or not wav.exists():
                raise ValueError(f"Flite failed on {text!r}: {done.stderr.strip()}")
            wave, rate_read = sf.read(wav, dtype="int16")
        if rate_read != self.sample_rate or wave.ndim != 1 or len(wave) == 0:
            raise ValueError(f"Flite gave no 16 kHz mono audio for {text!r} with voice {voice}")
        return wave


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
    flite_voices: Sequence[str] = (),
    flite_share: float = 0.5,
) -> dict[str, float]:
    """Read ``count`` sentences of the ``texts`` files (the first ``count`` of a seeded shuffle;
    all when None) aloud into ``out/wavs`` and write ``out/transcripts.tsv``.

    With ``flite_voices``, a ``flite_share`` of the sentences (drawn) is read by one of those
    Flite voices instead of an eSpeak ``variant`` (Flite has no word gap); their speaker column
    is ``flite-<voice>``. Without them no draw is spent on the choice, so a seed gives the same
    eSpeak-only corpus whatever ``flite_share`` says.

    Returns:
        ``utterances``, ``hours`` of audio, ``left_out`` lines (outside ``alphabet``).
    Raises:
        ValueError: no usable sentence, a bad text file or voice, ``count`` < 1, a
            ``flite_share`` outside [0, 1].
        OSError: ``flite_voices`` without the ``flite`` program.
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
    if not 0.0 <= flite_share <= 1.0:
        raise ValueError(f"flite_share must be within [0, 1], got {flite_share}")
    voices = _Voices(variants, flite_voices, flite_share, language, rate, pitch, word_gap)
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    width = len(str(len(sentences) - 1))
    rows, seconds = [], 0.0
    for i, text in enumerate(sentences):
        wave, sample_rate, speaker = voices.say(text, rng)
        name = f"wavs/{i:0{width}d}.wav"
        sf.write(out / name, wave, sample_rate, subtype="PCM_16")
        rows.append((name, text, speaker))
        seconds += len(wave) / sample_rate
    _write_manifest(out / "transcripts.tsv", rows)
    return {"utterances": len(rows), "hours": seconds / 3600, "left_out": dropped}


class _Voices:
    """The voices a corpus is read with, checked before anything is written: eSpeak NG's
    ``variants`` and, for a ``flite_share`` of the sentences, Flite's ``flite_voices``."""

    def __init__(self, variants: Sequence[str], flite_voices: Sequence[str], flite_share: float,
                 language: str, rate: tuple[int, int], pitch: tuple[int, int],
                 word_gap: tuple[int, int]) -> None:
        self.espeak = Espeak()
        unknown = sorted(set(variants) - set(self.espeak.variants))
        if unknown:
            raise ValueError(f"eSpeak NG has no voice variant {unknown[0]!r} (the variants are "
                             "the files of its espeak-ng-data/voices/!v)")
        self.flite = Flite() if flite_voices else None
        for voice in flite_voices:
            self.flite.check(voice)
        self.variants, self.flite_voices, self.flite_share = variants, flite_voices, flite_share
        self.language, self.rate, self.pitch, self.word_gap = language, rate, pitch, word_gap

    def say(self, text: str, rng: random.Random) -> tuple[np.ndarray, int, str]:
        """``text`` read by a voice drawn from ``rng``: the wave, its sample rate, the speaker.
        Without Flite voices no draw is spent on the choice of synthesiser."""
        if self.flite is not None and rng.random() < self.flite_share:
            voice = rng.choice(self.flite_voices)
            wave = self.flite.say(text, voice, rng.randint(*self.rate), rng.randint(*self.pitch))
            return wave, self.flite.sample_rate, f"flite-{voice}"
        speaker = rng.choice(self.variants)
        wave = self.espeak.say(text, f"{self.language}+{speaker}", rng.randint(*self.rate),
                               rng.randint(*self.pitch), rng.randint(*self.word_gap))
        return wave, self.espeak.sample_rate, speaker


def _write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A ``path, text, speaker`` TSV with a header, as the ``manifest`` dataset reads it."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(("path", "text", "speaker"))
        writer.writerows(rows)
