"""Speaker-level feature normalisation (``feature_norm=speaker``, tasks/speech/speakers.py):
statistics per speaker and split, carried by the items into the adapter."""

from __future__ import annotations

import pytest
import torch

from encoders.adapters.audio import AudioAdapter, normalize_frames, speaker_stats
from tasks.speech.speakers import SpeakerNormalized, log_mel_frontend
from tasks.speech.utterances import Utterance
from tests.tasks.recipes import make_recipe, tiny_model
from tests.tasks.speech.helpers import SR, quick_train

SPEAKER = {"feature_norm": "speaker", "n_mels": 40}


def test_speaker_stats_normalise_by_the_speakers_frames() -> None:
    g = torch.Generator().manual_seed(0)
    utts = [torch.randn(n, 5, generator=g) * 3 - 7 for n in (4, 9)]
    stats = speaker_stats(utts)
    joined = torch.cat(utts)
    assert torch.allclose(stats[0], joined.mean(0))
    assert torch.allclose(stats[1], joined.std(0, unbiased=False))
    x = utts[0].unsqueeze(0)
    y = normalize_frames(x, None, "speaker", stats.unsqueeze(0))
    assert torch.allclose(y, (x - stats[0]) / stats[1])
    # unlike utterance CMVN, one utterance keeps its own offset from the speaker's mean
    assert not torch.allclose(y.mean(1), torch.zeros(5), atol=1e-2)
    # no statistics: each utterance normalises itself
    assert torch.equal(normalize_frames(x, None, "speaker"), normalize_frames(x, None, "utterance"))
    with pytest.raises(ValueError, match=r"statistics of shape \(1, 2, 5\), got \(1, 2, 4\)"):
        normalize_frames(x, None, "speaker", torch.ones(1, 2, 4))
    with pytest.raises(ValueError, match="at least one utterance"):
        speaker_stats([])


def test_a_speakers_recording_level_cancels() -> None:
    """A voice recorded 4x louder: the log-mel shifts by log 16 in every bin, so do its
    statistics, and the normalised frames stay the same (up to log-mel's 1e-6 floor)."""
    torch.manual_seed(0)
    waves = [0.05 * torch.randn(n) for n in (6000, 8000, 5000)]
    frontend = log_mel_frontend(SR, 40)
    adapter = AudioAdapter(16, 40, spec_augment=False, feature_norm="speaker").eval()
    seen = []
    adapter.subsample.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    for gain in (1.0, 4.0):
        stats = speaker_stats([frontend(gain * w) for w in waves])
        adapter((gain * waves[0]).unsqueeze(0), None, stats.unsqueeze(0))
    quiet, loud = seen
    assert torch.allclose(quiet, loud, atol=1e-3)
    assert quiet.abs().max() > 0.5  # not trivially zero


class Fake(torch.utils.data.Dataset):
    """Two speakers, the second 10x louder; ``lengths`` as the real datasets have it."""

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.utterances = [Utterance(f"u{i}", "1", ("x",), 4000, "ab"[i % 2]) for i in range(6)]
        self.audio = [(1 + 9 * (i % 2)) * 0.01 * torch.randn(4000) for i in range(6)]
        self.lengths = [4000] * 6

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i):
        return {"audio": self.audio[i], "text": "1", "id": f"u{i}"}


def test_items_carry_their_speakers_statistics() -> None:
    ds = SpeakerNormalized(Fake(), log_mel_frontend(SR, 40))
    assert set(ds.stats) == {"a", "b"} and ds.lengths == [4000] * 6 and len(ds) == 6
    assert torch.equal(ds[0]["feat_stats"], ds[2]["feat_stats"])
    assert torch.equal(ds[1]["feat_stats"], ds.stats["b"]) and ds[1]["id"] == "u1"
    # louder by 10 (other noise): every bin's mean about log 100 = 4.6 higher
    gap = ds.stats["b"][0] - ds.stats["a"][0]
    assert abs(gap.mean() - 4.605) < 0.05 and (gap - 4.605).abs().max() < 0.4


def test_statistics_from_a_few_utterances_per_speaker() -> None:
    frontend = log_mel_frontend(SR, 40)
    full = SpeakerNormalized(Fake(), frontend)
    one = SpeakerNormalized(Fake(), frontend, limit=1, seed=3)
    again = SpeakerNormalized(Fake(), frontend, limit=1, seed=3)
    data = Fake()
    for spk, idx in (("a", [0, 2, 4]), ("b", [1, 3, 5])):
        assert torch.equal(one.stats[spk], again.stats[spk])  # the seed fixes the draw
        singles = [speaker_stats([frontend(data[i]["audio"])]) for i in idx]
        assert any(torch.equal(one.stats[spk], s) for s in singles)  # one utterance's own
        assert not torch.equal(one.stats[spk], full.stats[spk])
    # more than a speaker has: all of them
    assert torch.equal(SpeakerNormalized(Fake(), frontend, limit=50).stats["a"], full.stats["a"])


def test_training_and_evaluation_read_the_statistics(fsdd_root) -> None:
    from tasks.base import get_task

    data = {"dataset": "fsdd", "root": str(fsdd_root), "options": {"test_speakers": ["cid"]}}
    recipe = make_recipe("speech_recognition", data, {"overrides": SPEAKER},
                         train={"max_steps": 1})
    task = get_task("speech_recognition")(recipe)
    task.prepare()
    splits = task.datasets()
    assert set(splits["train"].stats) == {"ann", "bob"} and set(splits["test"].stats) == {"cid"}
    batch = task.collate([splits["test"][i] for i in range(3)])
    assert batch["feat_stats"].shape == (3, 2, 40)
    model = tiny_model("speech_recognition", feature_norm="speaker", vocab_size=len(task.vocab))
    seen = []
    model.adapter.subsample.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    quick_train(task, model, 2, 1e-3)
    loader = torch.utils.data.DataLoader(splits["test"], batch_size=8, collate_fn=task.collate)
    assert set(task.evaluate(model, loader)) >= {"cer", "wer"}
    # the test speaker's frames were normalised by cid's statistics, not their own
    stats = splits["test"].stats["cid"]
    frames = seen[-1][0]
    assert not torch.allclose(frames.mean(0), torch.zeros(40), atol=1e-2)
    assert frames.shape[-1] == stats.shape[-1]
    # a model that normalises per utterance is refused by a speaker-normalising recipe
    with pytest.raises(ValueError, match="feature_norm is 'utterance' but the recipe sets"):
        task.evaluate(tiny_model("speech_recognition", vocab_size=len(task.vocab)), loader)
    # and statistics for other front-end settings
    with pytest.raises(ValueError, match=r"\(40, False, 'waveform'\).*has \(40, True"):
        task.evaluate(tiny_model("speech_recognition", feature_norm="speaker", wave_norm=True,
                                 vocab_size=len(task.vocab)), loader)


def test_predict_treats_the_files_of_one_call_as_one_speaker(fsdd_root) -> None:
    from tasks.base import get_task

    data = {"dataset": "fsdd", "root": str(fsdd_root)}
    recipe = make_recipe("speech_recognition", data, {"overrides": SPEAKER})
    task = get_task("speech_recognition")(recipe)
    task.prepare()
    model = tiny_model("speech_recognition", feature_norm="speaker", vocab_size=len(task.vocab))
    files = [str(fsdd_root / "recordings" / f"{d}_ann_0.wav") for d in (0, 5, 9)]
    seen = []
    model.adapter.subsample.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    assert len(task.predict(model, files[:1])) == 1
    alone = seen[-1][0]  # one file: its own statistics, zero mean per bin
    assert torch.allclose(alone.mean(0), torch.zeros(40), atol=1e-2)
    assert len(task.predict(model, files)) == 3
    together = seen[-1]  # three digits' tones share one set of statistics: offsets remain
    assert together.shape[0] == 3
    assert together[0].mean(0).abs().max() > 0.1


def test_the_recipe_limits_the_utterances_behind_the_statistics(fsdd_root) -> None:
    from tasks.base import get_task

    def test_stats(**options):
        data = {"dataset": "fsdd", "root": str(fsdd_root),
                "options": {"test_speakers": ["cid"], **options}}
        task = get_task("speech_recognition")(
            make_recipe("speech_recognition", data, {"overrides": SPEAKER}))
        task.prepare()
        return task.datasets()["test"].stats["cid"]

    few, full = test_stats(speaker_stats_utterances=2), test_stats()
    assert few.shape == full.shape == (2, 40) and not torch.allclose(few, full)
