"""A character n-gram language model for CTC beam search (shallow fusion).

``CharNgramLM`` is an interpolated Kneser-Ney model (Chen & Goodman 1999: absolute discounting
with one discount per order from the count-of-counts, lower orders built from continuation
counts) over a fixed alphabet plus an end-of-sentence symbol. It is estimated in memory from
normalised sentences: the recipe's training transcripts and, optionally, more text
(``decode.lm_texts``).

``WordLexicon`` is a word list with frequencies (a unigram word model) spelled out character by
character: after the part of a word written so far, the next letter's probability is the share of
the lexicon's mass among the words that continue that way, and the word's end gets the mass of
the word itself. Mixed into the n-gram's prediction (``LMFusion``'s ``mix``), it steers the search
towards real words: it knows how far more words are spelt than the n-gram's texts hold, and the
n-gram brings the context. Word lists come from a file (``read_word_counts``) or from the
``wordfreq`` package (``wordfreq_counts``).

``LMFusion`` scores label-id prefixes for the beam search: ``weight * log P_lm + bonus`` per
character, the usual shallow-fusion score with a length bonus against the LM's preference for
short outputs (Hannun et al. 2014).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tasks.speech.vocab import CharVocab, normalize_text, read_text_file

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


class WordLexicon:
    """A unigram word model read letter by letter, for the beam search's words in progress.

    Args:
        counts: word -> count or frequency (any positive scale); words are normalised like
            transcripts, and those with characters outside ``alphabet`` (or a space) are left out.
        alphabet: the transcript characters.
        size: keep the ``size`` most frequent words (None: all).
    Raises:
        ValueError: no usable word, a count that is not positive, ``size`` < 1.
    """

    def __init__(self, counts: Mapping[str, float], alphabet: str,
                 size: int | None = None) -> None:
        if size is not None and size < 1:
            raise ValueError(f"the lexicon size must be at least 1, got {size}")
        letters = set(alphabet) - {" "}
        merged: dict[str, float] = defaultdict(float)
        for word, count in counts.items():
            if not count > 0:
                raise ValueError(f"word {word!r} of the lexicon has count {count}; counts must "
                                 "be positive")
            norm = normalize_text(word)
            if norm and set(norm) <= letters:
                merged[norm] += float(count)
        if not merged:
            raise ValueError("the lexicon has no word made of the vocabulary's characters")
        words = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
        total = sum(c for _, c in words)
        self.words = {w: c / total for w, c in words}
        # the mass of every prefix: the words that start with it
        self._mass: dict[str, float] = defaultdict(float)
        for word, p in self.words.items():
            for i in range(len(word) + 1):
                self._mass[word[:i]] += p
        self._mass = dict(self._mass)

    def __len__(self) -> int:
        return len(self.words)

    def has_prefix(self, partial: str) -> bool:
        """Whether some word of the lexicon starts with ``partial``."""
        return partial in self._mass

    def next_prob(self, partial: str, char: str) -> float:
        """P(next letter ``char`` | the word so far is ``partial``); 0 off the lexicon."""
        mass = self._mass.get(partial, 0.0)
        return self._mass.get(partial + char, 0.0) / mass if mass else 0.0

    def end_prob(self, partial: str) -> float:
        """P(the word ends here | the word so far is ``partial``)."""
        mass = self._mass.get(partial, 0.0)
        return self.words.get(partial, 0.0) / mass if mass else 0.0


def read_word_counts(path: str | Path) -> dict[str, float]:
    """A word list file: UTF-8, one word per line, optionally followed by its count (whitespace
    between; a word without a count counts 1).

    Raises:
        ValueError: the file cannot be read, is not UTF-8, or has a line that is not
            ``word [count]`` (named with its line number).
    """
    counts: dict[str, float] = defaultdict(float)
    for number, line in enumerate(read_text_file(path, "lexicon file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) > 2:
                raise ValueError
            count = float(fields[1]) if len(fields) == 2 else 1.0
            if not count > 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"lexicon file {path}, line {number}: expected 'word [count]' "
                             f"with a positive count, got {line.strip()!r}") from None
        counts[fields[0]] += count
    return dict(counts)


def wordfreq_counts(language: str = "en") -> dict[str, float]:
    """Word frequencies of the ``wordfreq`` package's large list for ``language`` (words seen
    at least once in 100 million across Wikipedia, subtitles, books, news and the web).

    Raises:
        ImportError: wordfreq is not installed (the ``lexicon`` extra).
        ValueError: wordfreq has no large list for ``language``.
    """
    try:
        import wordfreq
    except ImportError:
        raise ImportError('the word lexicon needs the wordfreq package: pip install -e ".[lexicon]"'
                          ) from None
    if language not in wordfreq.available_languages(wordlist="large"):
        raise ValueError(f"wordfreq has no large word list for language {language!r}")
    return dict(wordfreq.get_frequency_dict(language, wordlist="large"))


class LMFusion:
    """Shallow-fusion scores of label-id prefixes: ``weight * log P_lm + bonus`` per character.

    With a ``lexicon``, P_lm is ``mix * P_lexicon + (1 - mix) * P_ngram``: inside a word the
    lexicon predicts the next letter from the word so far, and where a word can end it shares
    the word's end probability between a space and the end of the sentence as the n-gram does.
    A word leaving the lexicon pays once, at the letter that leaves it (the n-gram's share
    only), and the n-gram alone predicts the rest of it: such words stay possible.

    Args:
        lm: the character model.
        vocab: maps label ids to characters.
        weight: the LM's weight (0 leaves only the length bonus).
        bonus: added per output character.
        lexicon: a word model mixed into the n-gram's predictions (None: the n-gram alone).
        mix: the lexicon's share, in [0, 1).
    """

    def __init__(self, lm: CharNgramLM, vocab: CharVocab, weight: float, bonus: float,
                 lexicon: WordLexicon | None = None, mix: float = 0.0) -> None:
        if not 0.0 <= mix < 1.0:
            raise ValueError(f"the lexicon's share of the LM must be in [0, 1), got {mix}")
        self.lm, self.vocab, self.weight, self.bonus = lm, vocab, weight, bonus
        self.lexicon, self.mix = lexicon, mix
        self._cache: dict[tuple[str, str, str], float] = {}

    def _history(self, prefix: Sequence[int]) -> str:
        """The characters of the prefix's last ``order - 1`` labels: all the LM looks at."""
        width = self.lm.order - 1
        return self.vocab.decode(prefix[max(len(prefix) - width, 0) :]) if width else ""

    def _partial_word(self, prefix: Sequence[int]) -> str:
        """The characters after the prefix's last space."""
        space = self.vocab.index.get(" ")
        start = len(prefix)
        while start and prefix[start - 1] != space:
            start -= 1
        return self.vocab.decode(prefix[start:])

    def log_prob(self, prefix: Sequence[int], char: str) -> float:
        """log P(``char`` | the prefix): the n-gram's, or its mixture with the lexicon's."""
        history = self._history(prefix)
        if self.lexicon is None or self.mix == 0.0:
            return self.lm.log_prob(history, char)
        partial = self._partial_word(prefix)
        key = (history, partial, char)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if not self.lexicon.has_prefix(partial):
            return self.lm.log_prob(history, char)  # a word off the lexicon: the n-gram alone
        ngram = math.exp(self.lm.log_prob(history, char))
        if char == " " or char == END:
            if partial:  # the n-gram's odds of a space against the sentence's end
                boundary = sum(math.exp(self.lm.log_prob(history, c)) for c in (" ", END))
                lexical = self.lexicon.end_prob(partial) * ngram / boundary
            else:
                lexical = 0.0  # no empty words
        else:
            lexical = self.lexicon.next_prob(partial, char)
        value = math.log(self.mix * lexical + (1.0 - self.mix) * ngram)
        self._cache[key] = value
        return value

    def step(self, prefix: Sequence[int], label: int) -> float:
        """The score of appending ``label`` to ``prefix``."""
        char = self.vocab.chars[label - 2]  # ids 0 and 1 are blank and end of sentence
        return self.weight * self.log_prob(prefix, char) + self.bonus

    def end(self, prefix: Sequence[int]) -> float:
        """The score of ending the sentence after ``prefix``."""
        return self.weight * self.log_prob(prefix, END)

    def total(self, prefix: Sequence[int]) -> float:
        """The whole hypothesis' score: every character, then the end of sentence."""
        return sum(self.step(prefix[:i], c) for i, c in enumerate(prefix)) + self.end(prefix)
