"""Audio reading (tasks.speech.audio): resampling, downmixing, bad files named, truncated WAVs, and
fp32 speed perturbation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.speech.audio import AudioError, read_audio, speed_perturb
from tests.tasks.speech.helpers import SR, write_wav


# -- audio reading ------------------------------------------------------------------------------
def test_read_audio_resamples_and_downmixes(tmp_path):
    mono8k = read_audio(write_wav(tmp_path / "a.wav", 0.5, 8000), SR)
    assert mono8k.shape == (8000,) and mono8k.dtype == torch.float32
    assert mono8k.abs().max() == pytest.approx(0.3, abs=0.01)  # a 440 Hz tone survives
    left = 0.4 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100)
    sf.write(str(tmp_path / "b.wav"), np.stack([left, np.zeros_like(left)], 1), 44100)
    stereo = read_audio(tmp_path / "b.wav", SR)
    assert stereo.shape == (1600,) and stereo.abs().max() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("kind", ["empty", "corrupt", "missing"])
def test_bad_audio_named(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        sf.write(str(path), np.zeros(0, np.float32), SR)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00not a wave file" * 20)
    with pytest.raises(AudioError, match=re.escape(str(path))) as err:
        read_audio(path, SR)
    assert "\n" not in str(err.value)


def test_a_wav_shorter_than_its_header_says_is_read_with_a_warning(tmp_path, caplog):
    full = write_wav(tmp_path / "full.wav", 1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 16000])  # the header, then half of the samples
    with caplog.at_level("WARNING", logger="tasks.speech.audio"):
        wave = read_audio(cut, SR)
        read_audio(full, SR)
    assert wave.shape == (8000,)
    assert caplog.messages == [f"audio file {cut} is truncated: its header promises 1.00 s "
                               "(16000 samples), the file holds 0.50 s (8000); using the part "
                               "that exists"]


@pytest.mark.parametrize("what", ["directory", "device"])
def test_audio_that_is_a_directory_or_a_device_is_named(tmp_path, what):
    path = tmp_path if what == "directory" else Path("/dev/zero")
    with pytest.raises(AudioError, match=f"audio file {path} is a {what}, not a file"):
        read_audio(path, SR)


def test_speed_perturbation_keeps_fp32_under_mixed_precision():
    # The training loss runs under bf16 autocast; the resampling must not follow it (bf16 keeps
    # 8 significant bits, an error near 1e-2 of the signal's amplitude).
    audio, lengths = torch.randn(2, 1600), torch.tensor([1600, 1200])
    torch.manual_seed(0)
    plain, _ = speed_perturb(audio, lengths, [0.9, 1.1])
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = speed_perturb(audio, lengths, [0.9, 1.1])
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=1e-6)
