"""A character n-gram language model for CTC beam search (shallow fusion).

``CharNgramLM`` is an interpolated Kneser-Ney model (Chen & Goodman 1999: absolute discounting
with one discount per order from the count-of-counts, lower orders built from continuation
counts) over a fixed alphabet plus an end-of-sentence symbol. It is estimated in memory from
normalised sentences: the recipe's training transcripts and, optionally, more text
(``data.options.lm_texts``).

``LMFusion`` scores label-id prefixes for the beam search: ``weight * log P_lm + bonus`` per
character, the usual shallow-fusion score with a length bonus against the LM's preference for
short outputs (Hannun et al. 2014).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from tasks.speech.vocab import CharVocab

END = "\n"  # end of sentence; never a transcript character (whitespace is normalised to " ")
START = "\t"  # the history before a sentence's first character


class CharNgramLM:
    """Interpolated Kneser-Ney character n-gram model.

    Args:
        texts: normalised sentences; characters outside ``alphabet`` are an error.
        alphabet: the characters the model predicts (besides the end of sentence).
        order: n of the n-gram (history of n - 1 characters), at least 1.
    """

    def __init__(self, texts: Iterable[str], alphabet: str, order: int = 6) -> None:
        if order < 1:
            raise ValueError(f"the n-gram order must be at least 1, got {order}")
        self.order = order
        self.alphabet = alphabet
        symbols = set(alphabet) | {END}
        # counts[k][history of k chars][next char]
        counts: list[dict[str, dict[str, int]]] = [
            defaultdict(lambda: defaultdict(int)) for _ in range(order)
        ]
        sentences = 0
        for text in texts:
            bad = set(text) - symbols
            if bad:
                raise ValueError(f"LM text {text!r} has characters outside the vocabulary: "
                                 f"{''.join(sorted(bad))!r}")
            padded = START * (order - 1) + text + END
            for i in range(order - 1, len(padded)):
                for k in range(order):
                    counts[k][padded[i - k : i]][padded[i]] += 1
            sentences += 1
        if not sentences:
            raise ValueError("the language model got no text to learn from")
        # Lower orders count distinct left contexts (continuation counts), not occurrences.
        tables: list[dict[str, dict[str, int]]] = [
            defaultdict(lambda: defaultdict(int)) for _ in range(order - 1)
        ]
        for k in range(1, order):
            for history, following in counts[k].items():
                for char in following:
                    tables[k - 1][history[1:]][char] += 1
        tables.append(counts[order - 1])
        self._discount = []
        self._tables: list[dict[str, tuple[dict[str, int], int, int]]] = []
        for table in tables:
            n1 = sum(1 for f in table.values() for c in f.values() if c == 1)
            n2 = sum(1 for f in table.values() for c in f.values() if c == 2)
            self._discount.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
            # per history: (counts, their total, how many distinct characters follow)
            self._tables.append({h: (dict(f), sum(f.values()), len(f)) for h, f in table.items()})
        self._uniform = 1.0 / (len(symbols))
        self._cache: dict[tuple[str, str], float] = {}

    def log_prob(self, history: str, char: str) -> float:
        """log P(char | history); ``char`` is a character of the alphabet or ``END``. The
        history is the text so far (only its last ``order - 1`` characters matter)."""
        width = self.order - 1
        history = (START * width + history[-width:])[-width:] if width else ""
        key = (history, char)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        prob = self._uniform
        for k in range(self.order):  # from the empty history up to the full one
            entry = self._tables[k].get(history[width - k :] if k else "")
            if entry is None:
                continue
            following, total, distinct = entry
            d = self._discount[k]
            prob = (max(following.get(char, 0) - d, 0.0) + d * distinct * prob) / total
        value = math.log(prob) if prob > 0 else float("-inf")
        self._cache[key] = value
        return value

    def score(self, text: str) -> float:
        """log P(text, then the end of sentence)."""
        return sum(self.log_prob(text[:i], c) for i, c in enumerate(text)) + self.log_prob(
            text, END
        )


class LMFusion:
    """Shallow-fusion scores of label-id prefixes: ``weight * log P_lm + bonus * length``.

    Args:
        lm: the character model.
        vocab: maps label ids to characters.
        weight: the LM's weight (0 leaves only the length bonus).
        bonus: added per output character.
    """

    def __init__(self, lm: CharNgramLM, vocab: CharVocab, weight: float, bonus: float) -> None:
        self.lm, self.vocab, self.weight, self.bonus = lm, vocab, weight, bonus

    def _history(self, prefix: Sequence[int]) -> str:
        """The characters of the prefix's last ``order - 1`` labels: all the LM looks at."""
        width = self.lm.order - 1
        return self.vocab.decode(prefix[max(len(prefix) - width, 0) :]) if width else ""

    def step(self, prefix: Sequence[int], label: int) -> float:
        """The score of appending ``label`` to ``prefix``."""
        char = self.vocab.chars[label - 2]  # ids 0 and 1 are blank and end of sentence
        return self.weight * self.lm.log_prob(self._history(prefix), char) + self.bonus

    def end(self, prefix: Sequence[int]) -> float:
        """The score of ending the sentence after ``prefix``."""
        return self.weight * self.lm.log_prob(self._history(prefix), END)

    def total(self, prefix: Sequence[int]) -> float:
        """The whole hypothesis' score: every character, then the end of sentence."""
        return sum(self.step(prefix[:i], c) for i, c in enumerate(prefix)) + self.end(prefix)
