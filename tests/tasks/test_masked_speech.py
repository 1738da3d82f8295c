"""Masked acoustic modelling: span masks, the loss on masked real frames only, learning on
synthetic speech, a deterministic evaluation, and an encoder whose names and shapes are the
speech recogniser's."""

from __future__ import annotations

import pytest
import torch

from encoders.core import CoreConfig
from tasks.base import get_task
from tasks.masked_speech import MaskedSpeechConfig, masked_frame_loss, span_mask
from tasks.speech import ASRConfig
from tests.tasks.recipes import make_recipe, tiny_model
from tests.tasks.speech.helpers import quick_train


def _task(**options):
    data = {"dataset": "synthetic",
            "options": {"train_utterances": 96, "eval_utterances": 32, "digits": [1, 3],
                        **options}}
    recipe = make_recipe("masked_speech", data, train={"max_steps": 1})
    return get_task("masked_speech")(recipe)


def _model(task):
    torch.manual_seed(0)
    return tiny_model("masked_speech", **task.prepare())


@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.5])
def test_span_mask_covers_the_ratio_of_real_frames_and_never_padding(ratio: float) -> None:
    lengths = torch.tensor([300, 120, 57, 9])
    gen = torch.Generator().manual_seed(0)
    mask = span_mask(lengths, 300, ratio, (7, 12), gen)
    assert mask.shape == (4, 300) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [round(ratio * n) for n in lengths.tolist()]
    for row, n in zip(mask, lengths.tolist()):
        assert not row[n:].any()
    # spans, not scattered frames: few runs in the long utterance
    starts = (mask[0, 1:] & ~mask[0, :-1]).sum() + mask[0, 0]
    assert starts <= round(ratio * 300) / 7 + 1


def test_the_model_masks_real_frames_only_and_aligns_targets() -> None:
    model = tiny_model("masked_speech").eval()
    audio, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    every = torch.ones(2, int(model.frame_lengths(torch.tensor(8000))), dtype=torch.bool)
    out = model(audio, lengths, every)
    frames = model.frame_lengths(lengths)  # 48 and 29 log-mel frames
    n = 4 * int(model.output_lengths(lengths).max())
    assert out.pred.shape == out.target.shape == (2, n, 40) and out.mask.shape == (2, n)
    assert out.mask.sum(1).tolist() == [min(n, int(f)) for f in frames]  # padding never
    target, _ = model.adapter.frames(audio, lengths)
    torch.testing.assert_close(out.target, target[:, :n])  # frame 4t + k <- output t, slot k


def test_loss_counts_only_masked_real_frames() -> None:
    model = tiny_model("masked_speech").eval()
    audio, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    out = model(audio, lengths, model.draw_mask(audio, lengths, torch.Generator().manual_seed(0)))
    loss, count = masked_frame_loss(out)
    assert count == out.mask.sum() > 0
    moved = out.pred + 5.0 * (~out.mask).unsqueeze(-1)  # change every unscored prediction
    torch.testing.assert_close(masked_frame_loss(out._replace(pred=moved))[0], loss)
    want = (out.pred - out.target).abs().mean(-1)[out.mask].mean()
    torch.testing.assert_close(loss, want)
    assert masked_frame_loss(out._replace(pred=out.pred + 1.0))[0] != loss


def test_loss_decreases_on_synthetic_speech_and_evaluation_is_deterministic() -> None:
    task = _task()
    model = _model(task)
    loader = task.loader(task.datasets()["val"], 32)
    before = task.evaluate(model, loader)
    assert set(before) == {"loss"} and task.evaluate(model, loader) == before
    torch.manual_seed(0)
    quick_train(task, model, steps=30, lr=3e-3)
    after = task.evaluate(model, loader)
    assert after["loss"] < 0.93 * before["loss"]  # 0.94 -> 0.81 when written
    assert task.write_report(None, "val") == []


@pytest.mark.parametrize("core", [
    CoreConfig(dim=16, depth=2, num_heads=2),
    CoreConfig(dim=144, depth=6, num_heads=4, conformer=True, conv_kernel=15),  # the tiny one
])
def test_the_encoder_has_the_speech_recognizer_names_and_shapes(core: CoreConfig) -> None:
    masked = MaskedSpeechConfig(core=core, n_mels=40).build().state_dict()
    asr = ASRConfig(core=core, n_mels=40).build().state_dict()

    def encoder(state: dict) -> dict:
        return {k: tuple(v.shape) for k, v in state.items() if k.startswith(("adapter.", "core."))}

    assert encoder(masked) == encoder(asr)
    assert {k for k in masked if not k.startswith(("adapter.", "core."))} == {
        "head.weight", "head.bias"
    }


def test_bad_settings_are_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match="mask_ratio must lie strictly between 0 and 1"):
        MaskedSpeechConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_span must be"):
        MaskedSpeechConfig(mask_span=(12, 7))
    model = tiny_model("masked_speech")
    with pytest.raises(ValueError, match="expected a frame mask of shape"):
        model(torch.randn(1, 8000), None, torch.zeros(1, 3, dtype=torch.bool))


def test_speaker_normalisation_must_agree_between_recipe_and_model() -> None:
    data = {"dataset": "synthetic", "options": {"train_utterances": 8, "eval_utterances": 4}}
    recipe = make_recipe("masked_speech", data, {"overrides": {"feature_norm": "speaker",
                                                               "n_mels": 40}})
    task = get_task("masked_speech")(recipe)
    task.prepare()
    assert "feat_stats" in task.datasets()["train"][0]
    batch = task.collate([task.datasets()["train"][i] for i in range(4)])
    loss, _ = task.loss(tiny_model("masked_speech", feature_norm="speaker").train(), batch)
    assert torch.isfinite(loss)
    task._checked = False
    with pytest.raises(ValueError, match="feature_norm is 'utterance' but the recipe sets"):
        task.loss(tiny_model("masked_speech").train(), batch)
