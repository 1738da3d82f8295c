"""Parallel text: reading ``{split}.{lang}`` files, the built-in number corpus, the dataset,
token-budget batches and collation."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.files import check_file
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)

Pairs = tuple[list[str], list[str]]
EMPTY_LINES = ("skip", "error")


# -- reading files ------------------------------------------------------------------------------
def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, stripped of surrounding whitespace.

    Lines are split on ``\\n`` only (``str.splitlines`` also splits on characters such as
    U+2028 that may sit inside a sentence, which would break the alignment of parallel files).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not UTF-8; the message names the file and the line number.
    """
    path = check_file(path, "text file")
    return decode_lines(path.read_bytes(), str(path))


def decode_lines(data: bytes, where: str) -> list[str]:
    """The lines of UTF-8 ``data`` (a file's bytes, standard input), split on ``\\n`` and
    stripped, as `read_lines` reads them.

    Raises:
        ValueError: a line is not UTF-8: ``"{where}, line 3: not valid UTF-8 (...)"``.
    """
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":  # the trailing newline ends the last line, it starts none
        raw.pop()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8").strip())
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{where}, line {number}: not valid UTF-8 (byte {line[e.start]:#04x} at column "
                f"{e.start + 1})"
            ) from None
    return lines


def read_parallel(src_path: str | Path, tgt_path: str | Path, empty_lines: str = "skip") -> Pairs:
    """Aligned source and target sentences from two files of the same length.

    Args:
        empty_lines: "skip" drops a pair with an empty side (the count is logged);
            "error" raises naming the file and line.
    Raises:
        ValueError: different line counts, a non-UTF-8 line, or an empty line with "error".
    """
    if empty_lines not in EMPTY_LINES:
        raise ValueError(
            f"data.options.empty_lines must be one of {EMPTY_LINES}, got {empty_lines!r}"
        )
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(
            f"parallel files differ in length: {src_path} has {len(src)} lines, "
            f"{tgt_path} has {len(tgt)}"
        )
    keep = [i for i in range(len(src)) if src[i] and tgt[i]]
    if len(keep) < len(src):
        first = next(i for i in range(len(src)) if not (src[i] and tgt[i]))
        where = src_path if not src[first] else tgt_path
        if empty_lines == "error":
            raise ValueError(
                f"{where}, line {first + 1}: empty line (set data.options.empty_lines: skip "
                f"to drop such pairs)"
            )
        logger.info("%s: skipped %d pairs with an empty side", src_path, len(src) - len(keep))
    return [src[i] for i in keep], [tgt[i] for i in keep]


# -- the built-in corpus: numbers spelled out, English -> German ------------------------------
_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DE_UNITS = "_ ein zwei drei vier fünf sechs sieben acht neun".split()
_DE_TEENS = "zehn elf zwölf dreizehn vierzehn fünfzehn sechzehn siebzehn achtzehn neunzehn".split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()
# (English, German) subject + verb with the German conjugation, plural nouns, places.
_CLAUSES = [
    (f"{s_en} {v_en}", f"{s_de} {v_de[i]}")
    for i, (s_en, s_de) in enumerate([("I", "Ich"), ("We", "Wir"), ("They", "Sie"), ("You", "Du")])
    for v_en, v_de in [
        ("see", ("sehe", "sehen", "sehen", "siehst")),
        ("have", ("habe", "haben", "haben", "hast")),
        ("buy", ("kaufe", "kaufen", "kaufen", "kaufst")),
        ("count", ("zähle", "zählen", "zählen", "zählst")),
    ]
]
_NOUNS = [
    ("cats", "Katzen"), ("dogs", "Hunde"), ("houses", "Häuser"), ("books", "Bücher"),
    ("apples", "Äpfel"), ("birds", "Vögel"), ("cars", "Autos"), ("trees", "Bäume"),
]
_PLACES = [
    ("in the garden", "im Garten"), ("on the street", "auf der Straße"),
    ("at the station", "am Bahnhof"), ("in the city", "in der Stadt"),
]


def number_en(n: int) -> str:
    """1 <= n <= 999 in English words: 321 -> "three hundred twenty-one"."""
    hundreds, rest = divmod(n, 100)
    words = [f"{_EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        words.append(_EN_TENS[rest // 10] + (f"-{_EN_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest:
        words.append(_EN_ONES[rest])
    return " ".join(words)


def number_de(n: int) -> str:
    """1 <= n <= 999 as one German word, units before tens: 321 -> "dreihunderteinundzwanzig"."""
    hundreds, rest = divmod(n, 100)
    word = f"{_DE_UNITS[hundreds]}hundert" if hundreds else ""
    units, tens = rest % 10, rest // 10
    if rest <= 1:
        return word + ("eins" if rest else "")
    if rest < 10:
        return word + _DE_UNITS[units]
    if rest < 20:
        return word + _DE_TEENS[units]
    return word + (f"{_DE_UNITS[units]}und" if units else "") + _DE_TENS[tens]


def _sentence_pair(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(2, 999)  # from 2: the nouns are plural
    (clause_en, clause_de), (noun_en, noun_de), (place_en, place_de) = (
        rng.choice(_CLAUSES), rng.choice(_NOUNS), rng.choice(_PLACES),
    )
    return (
        f"{clause_en} {number_en(n)} {noun_en} {place_en}.",
        f"{clause_de} {number_de(n)} {noun_de} {place_de}.",
    )


def synthetic_corpus(seed: int, num_train: int, num_eval: int) -> dict[str, Pairs]:
    """Deterministic "train", "val" and "test" pairs such as "We buy twenty-one cats in the
    garden." -> "Wir kaufen einundzwanzig Katzen im Garten.". The German number swaps units and
    tens, so the model must learn a reordering. Evaluation sentences never occur in training.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = {}
    for split, size in (("train", num_train), ("val", num_eval), ("test", num_eval)):
        src, tgt = [], []
        while len(src) < size:
            en, de = _sentence_pair(rng)
            if split != "train" and en in seen:
                continue
            seen.add(en)
            src.append(en)
            tgt.append(de)
        splits[split] = (src, tgt)
    return splits


# -- dataset, batching, collation -------------------------------------------------------------
class ParallelDataset(Dataset):
    """Token ids of aligned sentences plus the raw target text (the BLEU reference).

    A sample is ``{"index", "src", "tgt", "ref"}``; ``src`` and ``tgt`` are id lists without
    bos/eos. ``sizes[i]`` is the longer side of pair i in tokens, with eos (source) or bos
    (target input) added: what one row of a padded batch costs.
    """

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]], refs: list[str]) -> None:
        self.src_ids, self.tgt_ids, self.refs = src_ids, tgt_ids, refs
        self.sizes = [max(len(s), len(t)) + 1 for s, t in zip(src_ids, tgt_ids)]

    def __len__(self) -> int:
        return len(self.src_ids)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "src": self.src_ids[i], "tgt": self.tgt_ids[i], "ref": self.refs[i]}


def token_batches(
    sizes: Sequence[int], max_tokens: int, shuffle: bool, seed: int
) -> list[list[int]]:
    """Length-bucketed batches whose padded size ``rows * longest`` stays within ``max_tokens``.

    Samples are sorted by size (ties in a seeded random order when shuffling) and packed
    greedily, so a batch holds sentences of similar length; the batch order is then shuffled.
    A pure function of its arguments. Without shuffling, batches run from short to long.

    Raises:
        ValueError: a single sample is larger than ``max_tokens``.
    """
    if sizes and max(sizes) > max_tokens:
        raise ValueError(
            f"a sentence pair of {max(sizes)} tokens does not fit a batch of {max_tokens} "
            f"tokens; raise the batch size (tokens per batch) or lower "
            "data.options.max_sentence_tokens"
        )
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(sizes), generator=gen) if shuffle else torch.arange(len(sizes))
    by_size = torch.as_tensor(sizes, dtype=torch.long)[order]
    order = order[torch.sort(by_size, stable=True).indices].tolist()
    batches, batch, longest = [], [], 0
    for i in order:  # sizes ascend, so the newest sample is the longest of its batch
        if batch and (len(batch) + 1) * max(longest, sizes[i]) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, sizes[i])
    if batch:
        batches.append(batch)
    if shuffle:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


def _pad(rows: list[list[int]]) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate(samples: list[dict]) -> dict:
    """Samples -> a batch: ``src`` (B, S) with eos, ``src_lengths`` (B,), ``tgt_in`` (B, T)
    bos + target, ``tgt_out`` (B, T) target + eos, ``index`` (B,), ``ref`` list of raw targets.
    Padding is ``PAD_ID``."""
    src = [s["src"] + [EOS_ID] for s in samples]
    return {
        "src": _pad(src),
        "src_lengths": torch.tensor([len(s) for s in src]),
        "tgt_in": _pad([[BOS_ID] + s["tgt"] for s in samples]),
        "tgt_out": _pad([s["tgt"] + [EOS_ID] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "ref": [s["ref"] for s in samples],
    }
