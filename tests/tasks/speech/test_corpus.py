"""Several manifests read as one speech corpus and split by prompt (tasks/speech/corpus.py): a
prompt's takes stay on its side, no text is in two splits, and the first file's held-out prompts
are those it gets when read alone. WAV files are written by the tests themselves."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from tasks.speech.corpus import held_out_split_names, prompt_groups, prompt_id
from tasks.speech.data import (
    Utterance,
    build_splits,
    manifest_utterances,
    read_manifest,
    split_held_out,
)
from tasks.speech.options import SpeechData

SR = 16000
HEADER = "utt_id\tpath\tnum_samples\tduration_s\ttext\tsource_file"
FILES = ["transcripts.tsv", "transcripts_b.tsv", "transcripts_takes.tsv"]
KATHLEEN = Path(__file__).resolve().parents[4] / "shared" / "data" / "kathleen_arctic"


def data_section(root: Path, val_fraction: float = 0.1, **options) -> SimpleNamespace:
    """A recipe's ``data`` section as build_splits reads it."""
    return SimpleNamespace(dataset="kathleen_arctic", root=str(root), val_fraction=val_fraction,
                           max_samples=None, options=SpeechData(**options))


def write_corpus(root: Path) -> dict[str, list[tuple[str, str]]]:
    """A miniature Kathleen folder: 40 a-prompts, 30 b-prompts (two of them one sentence) and
    earlier takes of every third prompt, two of them an earlier wording. Returns each file's
    (utt id, text) rows."""
    a = [(f"arctic_a{i:04d}", f"a sentence number {i} reads {'x' * (i % 7)}") for i in range(40)]
    b = [(f"arctic_b{i:04d}", f"b line {i} says {'y' * (i % 5)}") for i in range(30)]
    b[29] = ("arctic_b0029", b[28][1])  # two prompts of one text
    takes = [(f"{u}_take{k}", t) for u, t in a[::3] + b[::3] for k in (2, 3)]
    takes[0] = (takes[0][0], "an earlier wording of prompt zero")
    takes[-1] = (takes[-1][0], "an earlier wording of the last b prompt")
    rows = {"transcripts.tsv": a, "transcripts_b.tsv": b, "transcripts_takes.tsv": takes}
    wave = (0.1 * np.sin(np.arange(800) / 3)).astype(np.float32)
    (root / "wavs").mkdir(parents=True)
    for name, items in rows.items():
        lines = [HEADER]
        for utt, text in items:
            sf.write(str(root / "wavs" / f"{utt}.wav"), wave, SR)
            lines.append(f"{utt}\twavs/{utt}.wav\t800\t0.05\t{text}\tdata/{utt}.wav")
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, list[tuple[str, str]]]]:
    root = tmp_path_factory.mktemp("kathleen")
    return root, write_corpus(root)


def sides(splits: dict) -> dict[str, str]:
    """Utterance id -> its side: train, val or held out (any test split)."""
    return {i: "held" if k.startswith("test") else k for k, ds in splits.items() for i in ds.ids}


def test_the_manifests_are_read_as_one_corpus(corpus):
    root, rows = corpus
    splits = build_splits(data_section(root, test_fraction=0.2, manifest=FILES), SR)
    assert list(splits) == ["train", "val", "test", "test_b", "test_takes"]
    ids = [i for ds in splits.values() for i in ds.ids]
    assert sorted(ids) == sorted(u for items in rows.values() for u, _ in items)
    # a held-out utterance lies in the test split of the file it comes from
    assert all(i.startswith("arctic_a") and "_take" not in i for i in splits["test"].ids)
    assert all(i.startswith("arctic_b") and "_take" not in i for i in splits["test_b"].ids)
    assert all("_take" in i for i in splits["test_takes"].ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_takes_follow_their_prompt_and_no_text_is_in_two_splits(corpus, seed):
    root, _ = corpus
    splits = build_splits(
        data_section(root, val_fraction=0.2, test_fraction=0.2, manifest=FILES, data_seed=seed),
        SR)
    side = sides(splits)
    for utt in side:  # every take, the earlier wordings included, on its prompt's side
        assert side[utt] == side[prompt_id(utt)], utt
    texts: dict[str, set[str]] = {"train": set(), "val": set(), "held": set()}
    for name, ds in splits.items():
        texts["held" if name.startswith("test") else name] |= set(ds.texts)
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["held"]
    assert not texts["val"] & texts["held"]
    assert side["arctic_b0028"] == side["arctic_b0029"]  # one sentence, two prompt ids


def test_the_first_file_splits_as_when_read_alone(corpus):
    root, _ = corpus
    options = {"test_fraction": 0.2, "data_seed": 3}
    alone = build_splits(data_section(root, **options), SR)
    together = build_splits(data_section(root, manifest=FILES, **options), SR)
    assert together["test"].ids == alone["test"].ids
    for name in ("train", "val"):
        assert [i for i in together[name].ids if i.startswith("arctic_a") and "_take" not in i] \
            == alone[name].ids
    # and the single file splits as the code before the corpus did: test, then val (seed + 1)
    utts = manifest_utterances(read_manifest(root / FILES[0]), SR, False)
    rest, test = split_held_out(utts, 0.2, 3)
    train, val = split_held_out(rest, 0.1, 4)
    assert [[u.id for u in s] for s in (train, val, test)] == \
        [alone[k].ids for k in ("train", "val", "test")]


def test_without_a_test_fraction_there_is_no_test_split(corpus):
    root, _ = corpus
    assert list(build_splits(data_section(root, manifest=FILES), SR)) == ["train", "val"]


def test_prompt_groups_join_ids_and_texts():
    utts = [Utterance(i, t, ("x.wav",), 1) for i, t in [
        ("p1", "one"), ("p2", "two"), ("p1_take2", "one earlier"), ("p3", "two"),
        ("p4", "four"), ("p4_take7", "one earlier")]]
    groups = prompt_groups(utts)
    # p1 and its take by id; the take's wording joins p4; p2 and p3 by their text
    assert len(set(groups)) == 2 and groups[0] == groups[2] == groups[4] == groups[5]
    assert groups[1] == groups[3]


def test_held_out_split_names():
    assert held_out_split_names(FILES) == ["test", "test_b", "test_takes"]
    assert held_out_split_names(["a/train.tsv", "dev-Other.tsv", "b/dev-other.tsv", "train.tsv"]) \
        == ["test", "test_dev_other", "test_dev_other_2", "test_extra"]
    with pytest.raises(ValueError, match="lists x.tsv more than once"):
        held_out_split_names(["x.tsv", "y.tsv", "x.tsv"])


def test_bad_manifest_lists_are_named(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(ValueError, match="manifest must name at least one file"):
        SpeechData(manifest=[])
    with pytest.raises(ValueError, match="data.root .*transcripts.tsv is a file"):
        build_splits(data_section(root / FILES[0], manifest=FILES), SR)
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        build_splits(data_section(root, manifest=[FILES[0], "nowhere.tsv"]), SR)


@pytest.mark.skipif(not KATHLEEN.is_dir(), reason="needs ../shared/data/kathleen_arctic")
def test_kathleen_74_minutes_keep_the_a_set_test_prompts():
    splits = build_splits(data_section(KATHLEEN, test_fraction=0.1, manifest=FILES), SR)
    counts = {k: len(v) for k, v in splits.items()}
    assert counts == {"train": 1194, "val": 132, "test": 53, "test_b": 48, "test_takes": 40}
    # the test utterances of the single-manifest recipe (their ids' digest taken before the
    # corpus code existed)
    digest = hashlib.sha256(" ".join(sorted(splits["test"].ids)).encode()).hexdigest()
    assert digest.startswith("48aef1aa7ca81719")
    side = sides(splits)
    assert all(side[u] == side[prompt_id(u)] for u in side)
    train = set(splits["train"].texts)
    assert all(train.isdisjoint(ds.texts) for k, ds in splits.items() if k != "train")
