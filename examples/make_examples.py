"""Write the example inputs that README's commands use: two images of the built-in shapes,
two recordings of the built-in tone digits and three sentences of the built-in translation
corpus. They come from the same generators as the data the demo models learn (``zoo demo``),
so those models' predictions on them mean something. Run from the repository root::

    python examples/make_examples.py

The files are committed; ``tests/test_readme.py`` checks that this script makes them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf
from PIL import Image

from tasks.classification.synthetic import SYNTHETIC_CLASSES, make_synthetic
from tasks.speech.tones import ToneDigits
from tasks.translation.data import synthetic_corpus

HERE = Path(__file__).resolve().parent
SEED = 2024
IMAGES = ("ring", "plus")  # classes of the built-in shapes
DIGITS = 2  # recordings of 2-3 tone digits


def write_images(folder: Path) -> list[Path]:
    images, labels = make_synthetic(40, image_size=32, seed=SEED)
    paths = []
    for name in IMAGES:
        i = labels.tolist().index(SYNTHETIC_CLASSES.index(name))
        path = folder / f"{name}.png"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def write_recordings(folder: Path) -> list[Path]:
    tones = ToneDigits(DIGITS, seed=SEED, sample_rate=16000, digits=(2, 3))
    paths = []
    for i, text in enumerate(tones.texts):
        path = folder / f"digits_{text}.wav"
        sf.write(path, tones[i]["audio"].numpy(), tones.sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def write_sentences(folder: Path) -> Path:
    english, _ = synthetic_corpus(SEED, num_train=0, num_eval=3)["val"]
    path = folder / "sentences.en"
    path.write_text("".join(line + "\n" for line in english), encoding="utf-8")
    return path


def main(folder: Path = HERE) -> list[Path]:
    """Write every example into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [*write_images(folder), *write_recordings(folder), write_sentences(folder)]


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
