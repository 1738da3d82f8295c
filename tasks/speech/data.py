"""Speech datasets: TSV manifests, the Free Spoken Digit Dataset (single and connected digits,
read in ``tasks.speech.fsdd``) and a built-in tone-digit set. Every dataset yields
``{"audio": (S,) float32 at the target rate, "text": normalised transcript, "id": str}`` and
exposes ``lengths`` (samples per utterance, known without decoding) for duration bucketing.

Splits are deterministic functions of a data seed (``data.options.data_seed``, default 0,
separate from the training seed so that runs with different training seeds share one test set).
The settings are those of ``tasks.speech.options.SpeechData``.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.files import check_file
from tasks.speech.audio import read_audio
from tasks.speech.corpus import corpus_splits, held_out_keys, held_out_split_names
from tasks.speech.fsdd import connected_digits, fsdd_clips, fsdd_pools, single_digits
from tasks.speech.options import DATASETS, SpeechData
from tasks.speech.tones import ToneDigits
from tasks.speech.utterances import Utterance, probe_all
from tasks.speech.vocab import normalize_text

log = logging.getLogger(__name__)

class AudioDataset(Dataset):
    """Utterances read from audio files, resampled to ``sample_rate``.

    Args:
        utterances: what to read.
        sample_rate: the model's rate; files of any rate are resampled.
        cache: keep decoded clips in memory (FSDD and the ARCTIC set fit easily).
    """

    def __init__(self, utterances: Sequence[Utterance], sample_rate: int, cache: bool = True):
        self.utterances = list(utterances)
        self.sample_rate = sample_rate
        self.lengths = [u.num_samples for u in self.utterances]
        self.texts = [u.text for u in self.utterances]
        self.ids = [u.id for u in self.utterances]
        self._cache: dict[str, Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.utterances)

    def _clip(self, path: str) -> Tensor:
        if self._cache is None:
            return read_audio(path, self.sample_rate)
        if path not in self._cache:
            self._cache[path] = read_audio(path, self.sample_rate)
        return self._cache[path]

    def __getitem__(self, i: int) -> dict[str, Any]:
        u = self.utterances[i]
        parts = [self._clip(p) for p in u.clips]
        if u.gaps:
            silences = [torch.zeros(n) for n in u.gaps]
            parts = [x for pair in zip(silences, parts) for x in pair] + [silences[-1]]
        audio = parts[0] if len(parts) == 1 else torch.cat(parts)
        return {"audio": audio, "text": u.text, "id": u.id}


# ---------------------------------------------------------------------------------------------
# Manifests


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a TSV manifest with a header: ``path`` and ``text`` required, ``speaker`` and
    ``utt_id`` (or ``id``) optional, other columns ignored. Relative paths are resolved against
    the manifest's folder; transcripts are normalised.

    Raises:
        FileNotFoundError: no manifest at ``path``.
        ValueError: a missing column, a short row or an empty transcript (names the line).
    """
    path = check_file(path, "manifest")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"path", "text"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"manifest {path} lacks column(s) {sorted(missing)} in its header row "
                f"(found {reader.fieldnames})"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["path"] is None or row["text"] is None:
                raise ValueError(f"manifest {path} line {line} has fewer columns than its header")
            text = normalize_text(row["text"])
            if not text:
                raise ValueError(f"manifest {path} line {line} has an empty transcript")
            rows.append({
                "id": row.get("utt_id") or row.get("id") or f"{path.name}:{line}",
                "path": str(path.parent / row["path"].strip()),
                "text": text,
                "speaker": (row.get("speaker") or "").strip(),
            })
    return rows


def manifest_utterances(
    rows: list[dict[str, str]], sample_rate: int, skip_bad: bool
) -> list[Utterance]:
    """Utterances of manifest rows, with their lengths probed (bad files raise or are skipped)."""
    lengths, _ = probe_all([r["path"] for r in rows], sample_rate, skip_bad)
    return [
        Utterance(r["id"], r["text"], (r["path"],), lengths[r["path"]], r["speaker"])
        for r in rows
        if r["path"] in lengths
    ]


def split_held_out(
    utts: list[Utterance], fraction: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Hold out about ``fraction`` of the distinct transcripts (prompts), chosen by ``seed``;
    every recording of a held-out prompt leaves the training side."""
    held = held_out_keys([u.text for u in utts], fraction, seed)
    return [u for u in utts if u.text not in held], [u for u in utts if u.text in held]


# ---------------------------------------------------------------------------------------------
# Putting splits together

DIGITS = "0123456789"


def dataset_alphabet(dataset: str) -> str | None:
    """The characters a dataset is made of when it defines them (digits), else None (then the
    vocabulary comes from the training transcripts)."""
    return DIGITS if dataset in ("synthetic", "fsdd", "fsdd_connected") else None


def build_splits(data: Any, sample_rate: int) -> dict[str, Dataset]:
    """The splits of a recipe's ``data`` section (its ``options`` a `SpeechData`, None for the
    defaults): ``train``, ``val`` and, where the data has one, ``test``. ``data.max_samples``
    caps every split.

    Raises:
        ValueError: an unknown dataset, a missing root, an empty split, bad audio or manifests.
    """
    opts: SpeechData = SpeechData() if data.options is None else data.options
    seed, skip, cache = opts.data_seed, opts.skip_bad_audio, opts.cache_audio
    if data.dataset == "synthetic":
        n_train, n_eval = opts.train_utterances, opts.eval_utterances or 200
        splits: dict[str, Any] = {
            k: ToneDigits(_cap_count(n, data.max_samples), seed + i, sample_rate,
                          tuple(opts.digits or (1, 5)))
            for i, (k, n) in enumerate([("train", n_train), ("val", n_eval)])
        }
    else:
        if data.root is None:
            raise ValueError(f"dataset '{data.dataset}' needs data.root (the folder of the data)")
        if data.dataset in ("fsdd", "fsdd_connected"):
            utts = _fsdd_splits(data, opts, sample_rate, skip)
        elif data.dataset in ("manifest", "kathleen_arctic"):
            utts = _manifest_splits(data, opts, sample_rate, skip)
        else:
            raise ValueError(f"unknown speech dataset '{data.dataset}'; expected one of {DATASETS}")
        splits = {k: AudioDataset(cap(v, data.max_samples), sample_rate, cache)
                  for k, v in utts.items() if v or not k.startswith("test")}
    for name, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(f"the {name} split of dataset '{data.dataset}' is empty "
                             "(check data.root, data.val_fraction and data.options)")
    return splits


def _cap_count(n: int, max_samples: int | None) -> int:
    return n if max_samples is None else min(n, max_samples)


def _fsdd_splits(data: Any, opts: SpeechData, sample_rate: int, skip: bool) -> dict[str, list]:
    seed = opts.data_seed
    clips = fsdd_clips(data.root, sample_rate, skip)
    pools = fsdd_pools(clips, list(opts.test_speakers), data.val_fraction, seed)
    if data.dataset == "fsdd":
        return {k: single_digits(v) for k, v in pools.items()}
    n_train, n_eval = opts.train_utterances, opts.eval_utterances or 300
    return {
        k: connected_digits(v, n_train if k == "train" else n_eval, seed + i, sample_rate,
                            tuple(opts.digits or (2, 7)))
        for i, (k, v) in enumerate(pools.items())
    }


def _manifest_splits(
    data: Any, opts: SpeechData, sample_rate: int, skip: bool
) -> dict[str, list]:
    seed, root = opts.data_seed, Path(data.root)
    read = lambda name: manifest_utterances(read_manifest(root / name), sample_rate, skip)
    if opts.manifests is not None:  # split files; val is held out of train when not given
        split = {k: read(v) for k, v in opts.manifests.items()}
        if "val" not in split:
            split["train"], split["val"] = split_held_out(split["train"], data.val_fraction, seed)
    elif opts.test_speakers:
        utts = [u for name in _manifest_files(root, opts.manifest) for u in read(name)]
        utts, test = speaker_split(utts, list(opts.test_speakers))
        train, val = split_held_out(utts, data.val_fraction, seed + 1)
        split = {"train": train, "val": val, "test": test}
    else:  # one corpus of one or more files, split by prompt (tasks/speech/corpus.py)
        names = _manifest_files(root, opts.manifest)
        split = corpus_splits([read(n) for n in names], held_out_split_names(names),
                              opts.test_fraction, data.val_fraction, seed)
    for name, utts in split.items():
        minutes = sum(u.num_samples for u in utts) / sample_rate / 60
        log.info("%s split: %d utterances, %.1f min", name, len(utts), minutes)
    if opts.extra_train:
        split["train"] = split["train"] + extra_train(
            opts.extra_train, opts.extra_train_count, split, sample_rate, seed, skip)
    return split


def _manifest_files(root: Path, manifest: str | tuple[str, ...]) -> list[str]:
    """The manifests to read, relative to ``root`` ("" when ``root`` is the manifest itself).

    Raises:
        ValueError: a list of manifests with a file for ``data.root``.
    """
    if not root.is_file():
        return [manifest] if isinstance(manifest, str) else list(manifest)
    if not isinstance(manifest, str):
        raise ValueError(f"data.root {root} is a file, so data.options.manifest must not list "
                         "files; make data.root their folder")
    return [""]


def extra_train(
    files: str | Sequence[str], count: int | None, split: dict[str, list[Utterance]],
    sample_rate: int, seed: int, skip_bad: bool,
) -> list[Utterance]:
    """``count`` utterances (a seeded draw; all when None) of the manifest ``files`` for the
    train split, leaving out any whose transcript is a val or test (``test_*``) prompt.

    Raises:
        ValueError: ``count`` < 1, or no utterance left.
    """
    files = [files] if isinstance(files, str) else list(files)
    if count is not None and count < 1:
        raise ValueError(f"data.options.extra_train_count must be at least 1, got {count}")
    held = {u.text for k, utts in split.items() if k != "train" for u in utts}
    rows = [r for f in files for r in read_manifest(f) if r["text"] not in held]
    if not rows:
        raise ValueError(f"data.options.extra_train {files} has no utterance outside the val "
                         "and test prompts")
    if count is not None and count < len(rows):
        rows = random.Random(seed).sample(rows, count)
    return manifest_utterances(rows, sample_rate, skip_bad)


def cap(utts: list[Any], max_samples: int | None) -> list[Any]:
    """The first ``max_samples`` items (all when None)."""
    return utts if max_samples is None else utts[:max_samples]


def speaker_split(
    utts: list[Utterance], test_speakers: Sequence[str]
) -> tuple[list[Utterance], list[Utterance]]:
    """(utterances of other speakers, utterances of ``test_speakers``).

    Raises:
        ValueError: a test speaker with no utterance.
    """
    found = {u.speaker for u in utts}
    unknown = sorted(set(test_speakers) - found)
    if unknown:
        raise ValueError(f"test speaker(s) {unknown} not in the data (speakers: {sorted(found)})")
    test = set(test_speakers)
    return [u for u in utts if u.speaker not in test], [u for u in utts if u.speaker in test]
