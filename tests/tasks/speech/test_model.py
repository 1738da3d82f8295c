"""The speech recogniser (tasks.speech.model): feature lengths by the formula, SpecAugment and
intermediate CTC in training only, CTC ensembles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.speech.decoding import (
    decode_batch,
)
from tasks.speech.model import CTCEnsemble
from tests.tasks.recipes import tiny_model
from tests.tasks.speech.helpers import make_task


def test_features_lengths_and_masks_follow_the_formula():
    task = make_task(train_utterances=8, eval_utterances=8)
    model = tiny_model("speech_recognition", **task.prepare()).eval()
    ds = task.datasets()["train"]
    batch = task.collate([ds[i] for i in range(6)])
    feats = model.adapter.frontend(batch["audio"])
    frames = (batch["audio_lengths"] - 400) // 160 + 1  # 25 ms windows, 10 ms hop, not centred
    assert feats.shape == (6, int(frames.max()), 40)
    expected = frames
    for _ in range(2):  # two stride-2 3x3 convolutions
        expected = (expected - 3) // 2 + 1
    tokens, mask = model.adapter(batch["audio"], batch["audio_lengths"])
    out_lengths = model.output_lengths(batch["audio_lengths"])
    assert torch.equal(out_lengths, expected) and tokens.shape[1] == int(expected.max())
    assert torch.equal(mask, torch.arange(tokens.shape[1])[None] >= expected[:, None])


def test_spec_augment_only_in_training():
    task = make_task(train_utterances=4, eval_utterances=4)
    model = tiny_model("speech_recognition", **task.prepare())
    batch = task.collate([task.datasets()["train"][i] for i in range(4)])
    model.eval()
    x1, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    x2, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    model.train()  # test_asr_transformer has dropout 0: only SpecAugment can change the output
    x3, _ = model.adapter(batch["audio"], batch["audio_lengths"])
    assert torch.equal(x1, x2) and not torch.allclose(x1, x3)


def test_intermediate_ctc_loss_in_training_only():
    torch.manual_seed(0)
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    model = tiny_model("speech_recognition", inter_ctc_layer=1, inter_ctc_weight=0.25,
                             **meta)
    batch = task.collate([task.datasets()["train"][i] for i in range(6)])
    out = model(batch["audio"], batch["audio_lengths"])
    assert out.inter_logits is not None and out.inter_logits.shape == out.logits.shape
    loss, logs = task.loss(model, batch)
    assert set(logs) == {"loss", "ctc", "inter_ctc"} and logs["inter_ctc"] != logs["ctc"]
    assert logs["loss"] == pytest.approx(0.75 * logs["ctc"] + 0.25 * logs["inter_ctc"], rel=1e-5)
    loss.backward()  # the shared head learns from both
    assert model.head[1].weight.grad.abs().sum() > 0
    model.eval()
    assert model(batch["audio"], batch["audio_lengths"]).inter_logits is None
    # the same weights without the intermediate loss: eval outputs agree
    plain = tiny_model("speech_recognition", **meta).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain(batch["audio"], batch["audio_lengths"]).logits,
                          model(batch["audio"], batch["audio_lengths"]).logits)
    for bad in ({"inter_ctc_layer": 2}, {"inter_ctc_layer": -1}, {"inter_ctc_weight": 1.5}):
        with pytest.raises(ValueError, match="inter_ctc_layer must be in \\[0, 1\\]"):
            tiny_model("speech_recognition", **{**meta, **bad})


def test_ctc_ensemble_averages_frame_log_probs():
    torch.manual_seed(0)
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    a, b = (tiny_model("speech_recognition", **meta).eval() for _ in range(2))
    batch = task.collate([task.datasets()["val"][i] for i in range(6)])
    audio, lengths = batch["audio"], batch["audio_lengths"]
    ens = task.ensemble(a, [(Path("b"), b, task.save_extra(Path("b")))]).eval()

    def log_probs(m):
        memory, _ = m.forward_features(audio, lengths)
        return m.forward_head(memory).log_softmax(-1), m.output_lengths(lengths)

    (la, n), (lb, _) = log_probs(a), log_probs(b)
    out, mask = ens.forward_features(audio, lengths)
    out_n = ens.output_lengths(lengths)
    assert torch.equal(out_n, n) and mask.shape == out.shape[:2]
    assert torch.allclose(out, (la + lb) / 2, atol=1e-5)
    assert not torch.allclose(la, lb)  # two different models, so the mean is a third
    # with EOS left out of each member first, decoding's posteriors are the same
    eos = torch.tensor([a.cfg.eos_id])
    masked = [x.index_fill(-1, eos, float("-inf")).log_softmax(-1) for x in (la, lb)]
    mean_masked = (masked[0] + masked[1]).div(2).log_softmax(-1)
    assert torch.allclose(out.index_fill(-1, eos, float("-inf")).log_softmax(-1), mean_masked,
                          atol=1e-5)
    # decoding reads the ensemble as one model; a model averaged with itself is itself
    same = task.ensemble(a, [(Path("a"), a, task.save_extra(Path("a")))])
    (mem, m_mask), m_n = same.forward_features(audio, lengths), same.output_lengths(lengths)
    (mem_a, mask_a), n_a = a.forward_features(audio, lengths), a.output_lengths(lengths)
    for beam in (1, 4):
        assert decode_batch(same, mem, m_mask, same.forward_head(mem), m_n, beam) == \
            decode_batch(a, mem_a, mask_a, a.forward_head(mem_a), n_a, beam)
    loss, _ = task.loss(ens, batch)  # the CTC loss of the averaged posteriors
    assert torch.isfinite(loss)


def test_ctc_ensemble_refuses_members_that_do_not_line_up():
    task = make_task(train_utterances=6, eval_utterances=6)
    meta = task.prepare()
    a = tiny_model("speech_recognition", **meta)
    other = make_task(sections={"tokenizer": {"characters": "0123456789x"}}, train_utterances=6,
                      eval_utterances=6)
    other.prepare()
    with pytest.raises(ValueError, match="in /runs/x does not spell with the same characters"):
        task.ensemble(a, [(Path("/runs/x"), a, other.save_extra(Path("x")))])
    wide = tiny_model("speech_recognition", **{**meta, "vocab_size": 40})
    with pytest.raises(ValueError, match="member 1 has 40 tokens"):
        task.ensemble(a, [(Path("w"), wide, task.save_extra(Path("w")))])
    with pytest.raises(ValueError, match="at least two"):
        CTCEnsemble([a])
