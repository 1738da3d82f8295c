"""Speech figures: log-mel and CTC posteriorgram, encoder self-attention, decoder alignment."""

from __future__ import annotations

import pytest
import torch

from tasks.speech.vocab import CharVocab
from tests.tasks.speech.helpers import make_task, write_wav
from tests.zoo.interpret.test_figures import bar_labels, capture_figures, is_png
from zoo import create_model
from zoo.interpret.speech import labels, listen, speech_figures


def _setup(tmp_path, **overrides):
    task = make_task()
    task.load_extra(tmp_path, {"vocab": CharVocab("0123456789").to_dict()})
    torch.manual_seed(0)
    model = create_model("test_asr_transformer", vocab_size=12, **overrides).eval()
    return task, model, write_wav(tmp_path / "tone.wav", seconds=0.6)


def test_listen_records_posteriors_self_and_cross_attention(tmp_path) -> None:
    _, model, wav = _setup(tmp_path, decoder_depth=2)
    heard = listen(model, wav, layer=1)
    frames = int(model.output_lengths(torch.tensor([9600]))[0])
    assert heard.posteriors.shape == (frames, 12) and heard.logmel.shape[1] == 40
    torch.testing.assert_close(heard.posteriors.sum(-1), torch.ones(frames))
    assert heard.self_attention.shape == (4, frames, frames)
    assert len(heard.cross_attention) == 2
    assert heard.cross_attention[0].shape == (4, len(heard.hypothesis) + 1, frames)
    assert heard.seconds == pytest.approx(0.6, abs=0.03)


def test_speech_figures_label_time_labels_and_characters(tmp_path, monkeypatch) -> None:
    figures = capture_figures(monkeypatch)
    task, model, wav = _setup(tmp_path, decoder_depth=1)
    paths = speech_figures(task, model, [wav], tmp_path / "out", layer=0)
    assert [p.name for p in paths] == ["tone_ctc.png", "tone_self_layer0.png", "tone_cross.png"]
    assert all(is_png(p) for p in paths)
    ctc, attention, cross = figures
    spectrogram, posteriorgram = ctc.axes[:2]
    assert spectrogram.get_ylabel() == "mel bin" and posteriorgram.get_ylabel() == "label"
    assert posteriorgram.get_xlabel() == "time (s)"
    names = [t.get_text() for t in posteriorgram.get_yticklabels()]
    assert names == ["<b>", "</s>", *"0123456789"] == labels(task, model)
    assert bar_labels(ctc) == ["log energy", "posterior probability"]
    assert attention.axes[0].get_title() == "encoder layer 0, mean of heads"
    assert attention.axes[0].get_xlabel() == "key time (s)"
    assert cross.axes[0].get_ylabel() == "output character"
    assert [t.get_text() for t in cross.axes[0].get_yticklabels()][-1] == "</s>"


def test_without_a_decoder_there_is_no_alignment_figure(tmp_path) -> None:
    task, model, wav = _setup(tmp_path)
    paths = speech_figures(task, model, [wav], tmp_path / "out")
    assert [p.name for p in paths] == ["tone_ctc.png", "tone_self_layer1.png"]
    with pytest.raises(ValueError, match="--layer 5 is out of range: the encoder has 2 layers"):
        speech_figures(task, model, [wav], tmp_path / "out", layer=5)
