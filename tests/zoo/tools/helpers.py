"""What the speech synthesis tests share: a small text file to read aloud."""

from __future__ import annotations

from pathlib import Path

# A repeated line (kept), a line with an accent and a digit (left out) and a blank line.
TEXTS = (
    "A dog runs across the field.\n"
    "Two children play in the snow.\n"
    "a dog runs across the field\n"  # the first line again once normalised: kept
    "The café opens at 9.\n"  # an accent and a digit: left out
    "\n"
    "Women's shoes, red and blue.\n"
    "A man rides a bicycle down the street.\n"
)


def write_texts(path: Path) -> Path:
    path.write_text(TEXTS, encoding="utf-8")
    return path
