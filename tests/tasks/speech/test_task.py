"""The speech recognition task (tasks.speech.task): pure bucketed batches, augmentation in training
only, the joint CTC/attention loss, a smoke run that learns tone digits, options named."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.speech.audio import add_noise, speed_perturb
from tasks.speech.decoding import (
    decode_batch,
)
from tasks.speech.tones import ToneDigits
from tests.tasks.recipes import tiny_model
from tests.tasks.speech.helpers import make_task, quick_train


# -- batching, features, lengths -----------------------------------------------------------------
def test_bucketed_batches_are_pure_and_cover_everything():
    task = make_task(train_utterances=300, eval_utterances=50)
    task.prepare()
    ds = task.datasets()["train"]
    a, b = task.batches(ds, 16, True, 7), task.batches(ds, 16, True, 7)
    assert a == b and a != task.batches(ds, 16, True, 8)
    assert sorted(i for batch in a for i in batch) == list(range(len(ds)))
    ordered = task.batches(ds, 16, False, 0)
    flat = [ds.lengths[i] for batch in ordered for i in batch]
    assert flat == sorted(flat)


# -- loss, decoder, saving, CLI -----------------------------------------------------------------
def test_joint_ctc_attention_loss_and_rescoring():
    task = make_task(sections={"loss": {"ctc_weight": 0.4}}, train_utterances=6,
                     eval_utterances=6)
    model = tiny_model("speech_recognition", decoder_depth=1, **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(6)])
    loss, logs = task.loss(model, batch)
    assert set(logs) == {"loss", "ctc", "att"}
    assert logs["loss"] == pytest.approx(0.4 * logs["ctc"] + 0.6 * logs["att"], rel=1e-5)
    loss.backward()
    assert model.decoder_head.weight.grad is not None
    model.eval()
    memory, mask = model.forward_features(batch["audio"], batch["audio_lengths"])
    lengths = model.output_lengths(batch["audio_lengths"])
    hyps = decode_batch(model, memory, mask, model.forward_head(memory), lengths, beam_size=3)
    assert len(hyps) == 6 and all(min(h, default=2) >= 2 for h in hyps)


def _adapter_inputs(arg: int, **augment) -> tuple[dict, list[torch.Tensor]]:
    """A batch of 4 training utterances and the adapter's input ``arg`` (0: audio, 1: lengths)
    as seen by ``task.loss`` in training mode, then in eval mode."""
    task = make_task(sections={"augment": augment}, train_utterances=4, eval_utterances=4)
    model = tiny_model("speech_recognition", **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(4)])
    seen = []
    model.adapter.register_forward_pre_hook(lambda m, args: seen.append(args[arg].clone()))
    task.loss(model.train(), batch)
    task.loss(model.eval(), batch)
    return batch, seen


def test_speed_perturbation_in_training_only():
    audio, lengths = torch.randn(3, 1100), torch.tensor([1100, 770, 330])
    torch.manual_seed(0)
    out, new = speed_perturb(audio, lengths, [1.1])  # 11/10 faster: ceil(n * 10 / 11) samples
    assert new.tolist() == [1000, 700, 300] and out.shape == (3, 1000)
    batch, seen = _adapter_inputs(1, speed_perturb=[0.9, 1.1])
    assert not torch.equal(seen[0], batch["audio_lengths"])
    assert torch.equal(seen[1], batch["audio_lengths"])


def test_noise_at_the_drawn_snr_in_training_only():
    t = torch.arange(4000) / 8000
    audio = torch.stack([torch.sin(2 * torch.pi * 440 * t)] * 3)  # power 0.5
    lengths = torch.tensor([4000, 3000, 1000])
    audio[1, 3000:] = 0
    audio[2, 1000:] = 0
    torch.manual_seed(0)
    out = add_noise(audio, lengths, [20.0, 20.0])
    noise = out - audio
    for row, n in zip(noise, lengths.tolist()):
        assert not row[n:].any()  # padding stays padding
        snr = 10 * torch.log10(torch.tensor(0.5) / row[:n].square().mean())
        assert abs(float(snr) - 20.0) < 0.5
    assert torch.equal(add_noise(audio, lengths, [20.0, 20.0], prob=0.0), audio)
    spread = [add_noise(audio[:1], lengths[:1], [0.0, 30.0]) - audio[:1] for _ in range(20)]
    snrs = [float(10 * torch.log10(0.5 / d.square().mean())) for d in spread]
    assert min(snrs) > -0.5 and max(snrs) < 30.5 and max(snrs) - min(snrs) > 10

    batch, seen = _adapter_inputs(0, noise_snr=[10, 10])
    assert not torch.allclose(seen[0], batch["audio"])
    assert torch.equal(seen[1], batch["audio"])
    with pytest.raises(ValueError, match="noise_snr must be \\[low, high\\]"):
        make_task(sections={"augment": {"noise_snr": [30, 10]}})


def test_smoke_learns_tone_digits_then_reports_and_transcribes(tmp_path):
    torch.manual_seed(0)
    task = make_task(train_utterances=600, eval_utterances=64, digits=[1, 3])
    # SpecAugment's default masks (up to 2 x 27 bins) hide most of a 40-bin spectrogram and
    # slow the escape from CTC's all-blank plateau several-fold; tones need no augmentation.
    model = tiny_model("speech_recognition", spec_augment=False, **task.prepare())
    loader = task.loader(task.datasets()["val"], 32)
    before = task.evaluate(model, loader)
    quick_train(task, model, steps=120, lr=3e-3)
    after = task.evaluate(model, loader)
    assert set(after) == {"cer", "wer", "accuracy", "loss"}
    assert after["cer"] < 20 < before["cer"] and after["loss"] < before["loss"]  # percent
    # the report lists every evaluated utterance: its id, reference and hypothesis
    report = task.write_report(tmp_path / "report", "val")
    rows = (tmp_path / "report" / "transcripts_val.tsv").read_text("utf-8").splitlines()
    assert rows[0] == "id\treference\thypothesis" and len(rows) == 1 + 64
    table = [row.split("\t") for row in rows[1:]]
    utterances = [loader.dataset[i] for i in range(len(loader.dataset))]
    assert sorted((r[0], r[1]) for r in table) == sorted((u["id"], u["text"]) for u in utterances)
    wrong = sum(r[1] != r[2] for r in table)
    assert wrong == round((1 - after["accuracy"] / 100) * 64)
    path = tmp_path / "report" / "transcripts_val.tsv"
    assert report == [f"transcripts ({wrong} of 64 wrong): {path}"]

    # what the task saves beside the model, loaded into a fresh task, transcribes a stereo
    # 8 kHz file of 2-3 digits; the model averaged with itself gives the same text
    fresh = make_task(train_utterances=600, eval_utterances=64, digits=[1, 3])
    fresh.load_extra(tmp_path, task.save_extra(tmp_path))
    ds = ToneDigits(40, seed=5, sample_rate=8000)
    i = next(k for k, t in enumerate(ds.texts) if 2 <= len(t) <= 3)
    sf.write(str(tmp_path / "x.wav"), np.stack([ds[i]["audio"].numpy()] * 2, 1), 8000)
    model.eval()
    assert fresh.predict(model, [str(tmp_path / "x.wav")], beam_size=4) == [ds.texts[i]]
    same = fresh.ensemble(model, [(tmp_path, model, task.save_extra(tmp_path))])
    assert fresh.predict(same, [str(tmp_path / "x.wav")], beam_size=4) == [ds.texts[i]]
