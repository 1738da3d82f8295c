"""The FSDD readers (tasks.speech.fsdd): the official split, speakers held out, connected digit
strings, and the task's splits built on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.speech.fsdd import connected_digits, fsdd_clips, fsdd_pools
from tests.tasks.speech.helpers import SR, make_task


def test_fsdd_official_split(fsdd_root):
    task = make_task("fsdd", fsdd_root)
    assert task.prepare() == {"vocab_size": 12}
    splits = task.datasets()
    assert len(splits["test"]) == 3 * 10 * 5  # recordings 0-4 of every speaker
    assert all(u.id.endswith("_5") for u in splits["train"].utterances)
    item = splits["test"][0]
    assert item["text"] in "0123456789" and len(item["text"]) == 1
    assert len(item["audio"]) == splits["test"].lengths[0]  # 8 kHz -> 16 kHz length known


def test_fsdd_connected_speaker_split(fsdd_root):
    clips = fsdd_clips(fsdd_root, SR, skip_bad=False)
    pools = fsdd_pools(clips, ["cid"], val_fraction=0.1, seed=0)
    assert {c.speaker for c in pools["test"]} == {"cid"}
    assert "cid" not in {c.speaker for c in pools["train"] + pools["val"]}
    utts = connected_digits(pools["train"], 20, seed=3, sample_rate=SR)
    assert utts == connected_digits(pools["train"], 20, seed=3, sample_rate=SR)
    for u in utts:
        assert 2 <= len(u.text) <= 7 and len(u.clips) == len(u.text)
        assert u.text == "".join(Path(p).name[0] for p in u.clips)
        assert len({Path(p).name.split("_")[1] for p in u.clips}) == 1  # one speaker

    task = make_task("fsdd_connected", fsdd_root, test_speakers=["cid"], train_utterances=30,
                     eval_utterances=8)
    task.prepare()
    splits = task.datasets()
    assert {u.speaker for u in splits["test"].utterances} == {"cid"}
    item = splits["train"][0]
    assert len(item["audio"]) == splits["train"].lengths[0]
    with pytest.raises(ValueError, match="zed"):
        make_task("fsdd_connected", fsdd_root, test_speakers=["zed"]).prepare()
