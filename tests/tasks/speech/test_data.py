"""Speech datasets (tasks.speech.data): manifests, extra training utterances, Kathleen's columns,
characters outside the vocabulary. FSDD's readers: test_fsdd.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.speech.vocab import normalize_text
from tests.tasks.speech.helpers import SR, make_task, write_wav


# -- manifests and skipping bad files ----------------------------------------------------------
def write_manifest(folder: Path, rows: list[tuple[str, str, str]], header="path\ttext\tspeaker"):
    lines = [header] + ["\t".join(r) for r in rows]
    (folder / "m.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_manifest_relative_paths_and_prompt_split(tmp_path):
    rows = []
    for i in range(20):
        write_wav(tmp_path / "wavs" / f"u{i}.wav", 0.3, [8000, SR][i % 2], channels=1 + i % 2)
        rows.append((f"wavs/u{i}.wav", f"Hello, World-{'ab'[i % 2] * (i + 1)}!", "s1"))
    write_manifest(tmp_path, rows)
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2)
    overrides = task.prepare()
    splits = task.datasets()
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert overrides == {"vocab_size": len(task.vocab)}
    assert set(splits["train"].texts).isdisjoint(splits["val"].texts + splits["test"].texts)
    item = splits["train"][0]
    assert item["audio"].shape == (int(0.3 * SR),) and "," not in item["text"]
    batch = next(iter(task.loader(splits["test"], 4)))  # 8 kHz mono and 16 kHz stereo files
    assert batch["audio"].shape == (4, int(0.3 * SR)) and batch["tokens"].shape[0] == 4
    assert normalize_text("Hello, World-a 3!") == "hello world a 3"
    task = make_task("manifest", tmp_path, manifests={"train": "m.tsv"})  # val held out of train
    task.prepare()
    assert {k: len(v) for k, v in task.datasets().items()} == {"train": 18, "val": 2}


def test_extra_train_utterances_join_the_train_split_only(tmp_path):
    rows = []
    for i in range(10):
        write_wav(tmp_path / "wavs" / f"u{i}.wav")
        rows.append((f"wavs/u{i}.wav", f"prompt {'ab' * (i + 1)}", "kate"))
    write_manifest(tmp_path, rows)
    extra = tmp_path / "synth"
    extra.mkdir()
    extra_rows = []
    for i in range(6):
        write_wav(extra / f"s{i}.wav", rate=22050)
        extra_rows.append((f"s{i}.wav", f"caption {'c' * (i + 1)}", "f1"))
    write_manifest(extra, extra_rows + [("s0.wav", rows[0][1], "f1")])  # a prompt of the corpus
    plain = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2)
    plain.prepare()
    base = plain.datasets()
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2,
                     extra_train=str(extra / "m.tsv"))
    task.prepare()
    splits = task.datasets()
    assert splits["val"].texts == base["val"].texts and splits["test"].texts == base["test"].texts
    added = [t for t in splits["train"].texts if t not in base["train"].texts]
    held = set(base["val"].texts + base["test"].texts)
    # every caption, and the corpus prompt again only if it is a training prompt
    assert sorted(added) == sorted(r[1] for r in extra_rows)
    assert len(splits["train"]) == len(base["train"]) + 6 + (rows[0][1] not in held)
    task = make_task("manifest", tmp_path / "m.tsv", test_fraction=0.2,
                     extra_train=[str(extra / "m.tsv")], extra_train_count=3)
    task.prepare()
    assert len(task.datasets()["train"]) == len(base["train"]) + 3
    with pytest.raises(FileNotFoundError, match="manifest .*nowhere.tsv does not exist"):
        make_task("manifest", tmp_path / "m.tsv", extra_train="nowhere.tsv").prepare()


def test_kathleen_columns_and_skip_bad_audio(tmp_path):
    header = "utt_id\tpath\tnum_samples\tduration_s\ttext\tsource_file"
    rows = [(f"arctic_{i}", f"wavs/{i}.wav", "0", "0", f"prompt {'ab' * (i + 1)}", "x")
            for i in range(10)]
    for i in range(9):
        write_wav(tmp_path / "wavs" / f"{i}.wav")
    (tmp_path / "wavs" / "9.wav").write_bytes(b"garbage")
    write_manifest(tmp_path, rows, header)
    (tmp_path / "m.tsv").rename(tmp_path / "transcripts.tsv")
    with pytest.raises(ValueError, match="9.wav"):
        make_task("kathleen_arctic", tmp_path).prepare()
    task = make_task("kathleen_arctic", tmp_path, skip_bad_audio=True)
    task.prepare()
    assert sum(len(d) for d in task.datasets().values()) == 9
    assert task.datasets()["train"].ids[0].startswith("arctic_")


def test_out_of_vocabulary_character_named(tmp_path):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    write_manifest(tmp_path, [("a.wav", "abc", ""), ("b.wav", "abd", "")])
    with pytest.raises(ValueError, match=r"'d'.*m\.tsv:3"):
        make_task("manifest", tmp_path / "m.tsv", {"tokenizer": {"characters": "abc"}}).prepare()
