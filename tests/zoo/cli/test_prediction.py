"""zoo classify, translate and transcribe: predictions of a run, and one sentence for odd input or
odd numbers."""


from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks.speech.vocab import CharVocab
from tests.zoo.cli.helpers import fails
from zoo import create_model, inference, save_pretrained
from zoo.cli import main


def test_classify_prints_top_classes(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    image = tmp_path / "shape.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    capsys.readouterr()
    assert main(["classify", str(run), str(image), "--topk", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count("(p=") == 3, line
    probs = [float(p.split(")")[0]) for p in line.split("(p=")[1:]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3


def test_classify_names_a_corrupt_image(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    fails(["classify", str(run), str(bad)], capsys, "broken.png")


def test_classify_refuses_a_model_of_another_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_pretrained(
        create_model("test_mt_transformer"), tmp_path / "mt", extra={"task": "translation"}
    )
    fails(["classify", str(tmp_path / "mt"), "x.png"], capsys, "translation", "classification")


def test_transcribe_warns_that_the_demo_speech_model_knows_only_tones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import numpy as np
    import soundfile as sf

    run = tmp_path / "speech"
    overrides = ["train.max_steps=1", "schedule.warmup_steps=0",
                 "data.options.train_utterances=8", "data.options.eval_utterances=4"]
    assert main(["train", "configs/demo/speech.yaml", "--out", str(run), *overrides]) == 0
    sf.write(str(tmp_path / "a.wav"), np.zeros(8000, dtype="float32"), 16000)
    caplog.clear()
    assert main(["transcribe", str(run), str(tmp_path / "a.wav"), "--device", "cpu"]) == 0
    assert "learnt the built-in synthetic tones (one per digit), not speech" in caplog.text


def test_classify_refuses_a_model_with_nan_weights(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    path = run / "best" / "model.safetensors"
    save_file({k: v * float("nan") for k, v in load_file(path).items()}, path)
    image = tmp_path / "shape.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    fails(["classify", str(run), str(image)], capsys, f"{path} holds NaN or infinite weights")
    fails(["eval", str(run)], capsys, f"{path} holds NaN or infinite weights")


@pytest.fixture(scope="module")
def mt_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained test translation model with a small vocabulary, saved as a model dir."""
    from tasks.translation import data as D
    from tasks.translation.tokenizer import Tokenizer

    src, tgt = D.synthetic_corpus(0, 300, 10)["train"]
    tokenizer = Tokenizer.train(src + tgt, vocab_size=120)
    directory = tmp_path_factory.mktemp("mt") / "model"
    torch.manual_seed(0)
    model = create_model("test_mt_transformer", vocab_size=len(tokenizer))
    meta = {"tokenizer": "spm.model"}
    save_pretrained(model, directory, extra={"task": "translation", "task_meta": meta})
    tokenizer.save(directory / "spm.model")
    return directory


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), errors="surrogateescape"))


def test_translate_names_the_line_of_stdin_that_is_not_utf8(
    mt_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, b"We see cats.\ncaf\xe9\n")
    fails(["translate", str(mt_model)], capsys,
          "standard input, line 2: not valid UTF-8 (byte 0xe9 at column 4)")


def test_translate_names_a_command_line_sentence_that_is_not_utf8(
    mt_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # how such bytes reach sys.argv
    fails(["translate", str(mt_model), "ok", bad], capsys, "sentence 2 on the command line")


def test_blank_input_gives_an_empty_line_like_empty_input(
    mt_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["translate", str(mt_model), "   ", "", "\t"]) == 0
    assert capsys.readouterr().out == "\n\n\n"
    _stdin(monkeypatch, b"  \n\n")
    assert main(["translate", str(mt_model)]) == 0
    assert capsys.readouterr().out == "\n\n"


def test_translate_api_returns_nothing_for_a_blank_sentence(mt_model: Path) -> None:
    task, model = inference.load_for_prediction(mt_model, "translation", "cpu")
    found = task.translate(model, ["  ", "We see cats."], beam_size=2, nbest=2)
    assert found[0] == [] and len(found[1]) >= 1
    assert task.predict(model, ["   "]) == [""]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam", "0"], "--beam-size must be at least 1, got 0"),
        (["--nbest", "0"], "--nbest must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--beam", "2", "--nbest", "3"],
         "--nbest 3 needs --beam-size 3 or more, got --beam-size 2"),
        (["--nbest", "2"],
         "--nbest 2 needs --beam-size 2 or more (the run's decode.beam_size is 1)"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
    ],
    ids=["beam", "nbest", "batch_size", "nbest_over_beam", "nbest_over_default", "device"],
)
def test_translate_blames_the_flag_at_fault(
    mt_model: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    fails(["translate", str(mt_model), "We see cats.", *flags], capsys, message)


def test_translate_api_names_its_arguments(mt_model: Path) -> None:
    task, model = inference.load_for_prediction(mt_model, "translation", "cpu")
    with pytest.raises(ValueError, match="^beam_size must be at least 1, got 0$"):
        task.translate(model, ["We see cats."], beam_size=0)
    with pytest.raises(ValueError, match="^batch_size must be at least 1, got 0$"):
        task.translate(model, ["We see cats."], batch_size=0)


def test_translate_spells_the_beam_size_both_ways(
    mt_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task, model = inference.load_for_prediction(mt_model, "translation", "cpu")
    sentences = ["We see two cats.", "You buy three birds in the city."]
    expected = task.predict(model, sentences, beam_size=3)
    for flag in ("--beam-size", "--beam"):  # --beam: fairseq's spelling, an alias
        assert main(["translate", str(mt_model), *sentences, flag, "3", "--device", "cpu"]) == 0
        assert capsys.readouterr().out.splitlines() == expected


def test_translate_input_that_is_a_directory_or_a_device(
    mt_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["translate", str(mt_model), "--input", str(tmp_path)], capsys,
          f"text file {tmp_path} is a directory, not a file")
    fails(["translate", str(mt_model), "--input", "/dev/zero"], capsys,
          "text file /dev/zero is a device, not a file")


def test_a_corrupt_sentencepiece_model_is_one_sentence(
    mt_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(mt_model, copy)
    (copy / "spm.model").write_bytes(b"\x0a\x05hello not a model" * 20)
    fails(["translate", str(copy), "We see cats."], capsys,
          f"sentencepiece model {copy / 'spm.model'} is corrupt: it does not parse")


def test_classify_an_image_that_is_a_directory_or_a_device(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["classify", str(run), str(tmp_path)], capsys, f"image {tmp_path} is a directory")
    fails(["classify", str(run), "/dev/zero"], capsys, "image /dev/zero is a device, not a file")


# ---------------------------------------------------------------------------------------------
# zoo transcribe


def _wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def asr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained test speech model saved as a run's best/ with its vocabulary."""
    torch.manual_seed(0)
    vocab = CharVocab("0123456789 ")
    model = create_model("test_asr_transformer", vocab_size=len(vocab))
    meta = {"vocab": vocab.to_dict(), "sample_rate": 16000}
    run = tmp_path_factory.mktemp("asr") / "run"
    save_pretrained(model, run / "best", extra={"task": "speech_recognition", "task_meta": meta})
    return run


def test_transcribe_prints_what_the_task_predicts(
    asr_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = [_wav(tmp_path / "a.wav", 0.5), _wav(tmp_path / "b.wav", 0.3, 8000, 300.0)]
    task, model = inference.load_for_prediction(asr_model, "speech_recognition", "cpu")
    texts = task.predict(model, [str(p) for p in audio], beam_size=4)
    args = ["transcribe", str(asr_model), *map(str, audio), "--device", "cpu", "--beam-size", "4"]
    assert main(args) == 0
    expected = [f"{p}: {t}" for p, t in zip(audio, texts)]
    assert capsys.readouterr().out.strip("\n").split("\n") == expected
    # the model averaged with itself: the same lines
    assert main([*args, "--ensemble", str(asr_model)]) == 0
    assert capsys.readouterr().out.strip("\n").split("\n") == expected
    # a model of another task cannot join; a missing file is named
    save_pretrained(create_model("test_vit", num_classes=3), tmp_path / "vit",
                    extra={"task": "classification"})
    fails([*args, "--ensemble", str(tmp_path / "vit")], capsys,
          f"{tmp_path / 'vit'} holds a classification model", "ensemble")
    fails(["transcribe", str(asr_model), str(tmp_path / "nope.wav")], capsys, "nope.wav")


def test_a_recording_longer_than_the_positions_is_named_and_the_others_transcribed(
    tmp_path, capsys
):
    vocab = CharVocab("0123456789 ")
    model = create_model("test_asr_transformer", vocab_size=len(vocab))
    meta = {"vocab": vocab.to_dict(), "sample_rate": 16000}
    save_pretrained(model, tmp_path / "model", extra={"task": "speech_recognition",
                                                      "task_meta": meta})
    # 170 s at 1 kHz: the model reads at most 163.9 s of 16 kHz audio (4,096 positions)
    long = _wav(tmp_path / "long.wav", 170.0, 1000, freq=100.0)
    short = _wav(tmp_path / "short.wav", 0.5)
    assert main(["transcribe", str(tmp_path / "model"), str(long), str(short)]) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"error: audio file {long} lasts 170.0 s, longer than the 163.9 s this model can read "
        "at once (its positions); cut it into shorter parts"
    ]
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [str(short)]
    task, model = inference.load_for_prediction(tmp_path / "model", "speech_recognition")
    with pytest.raises(ValueError, match=f"^audio file {long} lasts 170.0 s"):
        task.predict(model, [str(short), str(long)])
