"""One corpus read from several manifests, split by prompt so that no test sentence is heard in
training.

A *prompt group* is what must stay on one side of a split: every recording whose utterance id
names the same prompt (the id without a ``_takeN`` suffix, so ``arctic_a0001_take2`` is a take
of ``arctic_a0001``) or whose normalised transcript is the same, joined transitively. A take that
read an earlier wording of its prompt thus follows the prompt, and two prompts with one text
stay together.

The files are split in the order given. Each file's *new* groups (not met in an earlier file)
are split exactly as a single manifest is: ``test_fraction`` of them held out for test (seeded by
``data_seed``), then ``val_fraction`` of the rest for val (``data_seed + 1``); a group's key in
that draw is its text in the file. Later files' recordings of known groups follow them. A
held-out recording goes to the test split of the file it comes from: ``test`` for the first file,
``test_<name>`` for a later one (``transcripts_b.tsv`` after ``transcripts.tsv`` gives
``test_b``), so the first file's test set is the same, utterance for utterance, as when it is
read alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from tasks.speech.utterances import Utterance

TAKE = re.compile(r"_take\d+$")  # the suffix of an earlier take's utterance id


def prompt_id(utt_id: str) -> str:
    """The prompt an utterance id names: the id without a ``_takeN`` suffix."""
    return TAKE.sub("", utt_id)


def held_out_keys(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """About ``fraction`` of the distinct ``keys``, drawn by ``seed`` from their sorted order;
    at least one and not all of them when ``fraction`` > 0 and there are two or more."""
    keys = sorted(set(keys))
    random.Random(seed).shuffle(keys)
    n = round(len(keys) * fraction)
    if fraction > 0 and len(keys) > 1:
        n = min(max(n, 1), len(keys) - 1)  # a tiny manifest still gets one of each
    return set(keys[:n])


def prompt_groups(utts: Sequence[Utterance]) -> list[str]:
    """The group of each utterance (a representative node, aligned with ``utts``): prompt ids
    and texts joined by union-find."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    for u in utts:
        a, b = find(f"id:{prompt_id(u.id)}"), find(f"text:{u.text}")
        if a != b:
            parent[max(a, b)] = min(a, b)  # deterministic representative
    return [find(f"text:{u.text}") for u in utts]


def held_out_split_names(paths: Sequence[str | Path]) -> list[str]:
    """The test split of each manifest: ``test`` for the first, ``test_<name>`` for the others,
    ``<name>`` the file's stem less the first file's stem as a prefix (``transcripts_b.tsv``
    after ``transcripts.tsv``: ``test_b``), lower-cased, other characters than a-z, 0-9 and _
    replaced by _; a repeated name gets ``_2``, ``_3``...

    Raises:
        ValueError: a file listed twice.
    """
    seen = [str(p) for p in paths]
    twice = sorted({p for p in seen if seen.count(p) > 1})
    if twice:
        raise ValueError(f"data.options.manifest lists {twice[0]} more than once")
    first = Path(paths[0]).stem
    names = ["test"]
    for p in paths[1:]:
        stem = Path(p).stem
        rest = stem[len(first):].lstrip("_-.") if stem.startswith(first) else stem
        name = "test_" + (re.sub(r"[^a-z0-9_]", "_", rest.lower()) or "extra")
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def corpus_splits(
    files: Sequence[Sequence[Utterance]],
    test_names: Sequence[str],
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> dict[str, list[Utterance]]:
    """Train, val and one test split per file (named by ``test_names``) of the manifests'
    utterances ``files``, in the order given; see the module docstring for the rule.

    Returns:
        ``{"train": ..., "val": ..., test_names[0]: ..., ...}``, each in file and row order;
        a test split may be empty.
    """
    flat = [(i, u) for i, utts in enumerate(files) for u in utts]
    groups = prompt_groups([u for _, u in flat])
    side: dict[str, str] = {}  # group -> "train", "val" or "test"
    for i in range(len(files)):
        new: dict[str, str] = {}  # group -> its key in the draw: its (least) text in the file
        for (j, u), g in zip(flat, groups):
            if j == i and g not in side:
                new[g] = min(new.get(g, u.text), u.text)
        test = held_out_keys(list(new.values()), test_fraction, seed)
        rest = [k for k in new.values() if k not in test]
        val = held_out_keys(rest, val_fraction, seed + 1)
        for g, key in new.items():
            side[g] = "test" if key in test else "val" if key in val else "train"
    splits: dict[str, list[Utterance]] = {"train": [], "val": [], **{n: [] for n in test_names}}
    for (i, u), g in zip(flat, groups):
        splits[test_names[i] if side[g] == "test" else side[g]].append(u)
    return splits
