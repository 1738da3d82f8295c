"""Packaging for transformer-zoo: one attention core, three modalities."""

from __future__ import annotations

from setuptools import find_packages, setup

# torch is pinned to a window on purpose: a CPU-only torch 2.13.0 wheel sits in the local
# wheel directory that pip checks first, and torchvision/torchaudio crash against it (hence
# the lower bound); an unbounded torch pulls 2.15 over the network (hence the upper bound).
# torchvision 0.29.x and torchaudio 2.11.x are the releases built against torch 2.14.
INSTALL_REQUIRES = [
    "torch>=2.14.1,<2.15",
    "torchvision>=0.29.2,<0.30",
    "torchaudio>=2.11.0,<2.12",
    "timm>=1.0.31,<1.1",
    "numpy",
    "pyyaml",
    "safetensors",
    "sentencepiece",
    "sacrebleu",
    "soundfile",
    "tqdm",
    "einops",
    "jiwer",
]

# int8 inference (zoo.quantize): torchao's PT2E flow; 0.18 is the release tested with torch 2.14
QUANT = ["torchao>=0.18,<0.19"]

# speech synthesis for pretraining corpora (tasks.speech.tts): eSpeak NG's library and voices
TTS = ["espeakng-loader>=0.2.4,<0.3"]

# a word list for the speech LM (decode.lm_lexicon: wordfreq:<language>)
LEXICON = ["wordfreq>=3.1,<4"]

EXTRAS_REQUIRE = {
    "plot": ["matplotlib"],
    "tensorboard": ["tensorboard"],
    "quant": QUANT,
    "tts": TTS,
    "lexicon": LEXICON,
    "dev": ["pytest", "ruff", "matplotlib", *QUANT, *TTS, *LEXICON],
}

setup(
    name="transformer-zoo",
    version="0.1.0",
    description="A multimodal Transformer model zoo: one attention core for text, images, speech.",
    python_requires=">=3.10",
    packages=find_packages(include=["encoders*", "tasks*", "zoo*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["zoo = zoo.cli:main"]},
)
