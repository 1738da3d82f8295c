"""Reading audio files: soundfile (libsndfile) decodes, channels are averaged to mono and
torchaudio resamples to the model's rate. ``torchaudio.load`` is not used: it now needs
TorchCodec. Every failure is one ``AudioError`` sentence that names the file."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from encoders.attention import lengths_to_padding_mask
from tasks.files import check_file

log = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file is missing, unreadable, corrupt or empty."""


def probe_audio(path: str | Path) -> tuple[int, int]:
    """Frames and sample rate of a file from its header (no decoding).

    Raises:
        AudioError: the file is missing, not a readable audio file, or holds no samples.
    """
    path = _check(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"audio file {path} cannot be read ({_reason(e)})") from None
    if info.frames <= 0:
        raise AudioError(f"audio file {path} is empty (zero samples)")
    return int(info.frames), int(info.samplerate)


def resampled_length(frames: int, orig_rate: int, new_rate: int) -> int:
    """Length after ``torchaudio.functional.resample``: ceil(frames * new / orig)."""
    return -(-frames * new_rate // orig_rate)


def resample(wave: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """(..., S) at ``orig_rate`` -> (..., S') at ``new_rate`` (band-limited sinc, torchaudio)."""
    if orig_rate == new_rate:
        return wave
    return AF.resample(wave, orig_rate, new_rate)


def read_audio(path: str | Path, sample_rate: int) -> Tensor:
    """Decode a file to a mono float32 waveform (S,) in [-1, 1] at ``sample_rate``.

    Any rate and channel count is accepted: channels are averaged, then the signal resampled.

    Raises:
        AudioError: missing, unreadable or corrupt file, zero samples, or non-finite samples.
    """
    path = _check(path)
    try:
        with sf.SoundFile(str(path)) as f:
            data, rate = f.read(dtype="float32", always_2d=True), f.samplerate  # (S, C)
            _warn_if_truncated(path, f.extra_info, len(data), rate)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"audio file {path} cannot be read ({_reason(e)})") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"audio file {path} is empty (zero samples)")
    wave = torch.from_numpy(data).mean(dim=1)  # (S, C) -> (S,): stereo downmix
    if not bool(torch.isfinite(wave).all()):
        raise AudioError(f"audio file {path} holds NaN or infinite samples")
    return resample(wave, int(rate), sample_rate).contiguous()


def speed_perturb(
    audio: Tensor, lengths: Tensor, factors: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """Speed perturbation (Ko et al. 2015): each utterance is played ``f`` times faster, ``f``
    drawn from ``factors`` with the global torch RNG (which the engine saves for resume).
    Tempo and pitch both change, as with a tape sped up.

    Args:
        audio: (B, S) padded waveforms; lengths: (B,) samples.
    Returns:
        the new (B, S') padded waveforms and their (B,) lengths.
    """
    choice = torch.randint(len(factors), (audio.shape[0],)).tolist()
    waves = []
    for row, n, k in zip(audio, lengths.tolist(), choice):
        ratio = Fraction(factors[k]).limit_denominator(20)  # 1.1 -> 11/10: a short sinc kernel
        wave = row[:n]
        if ratio != 1:  # resampling from num to den keeps the rate but scales the duration
            # in fp32 also under mixed precision: a bf16 convolution rounds the waveform to 8
            # significant bits and, on the CPU, takes several times longer
            with torch.autocast(audio.device.type, enabled=False):
                wave = AF.resample(wave.float(), ratio.numerator, ratio.denominator)
            wave = wave.to(row.dtype)
        waves.append(wave)
    new_lengths = torch.tensor([len(w) for w in waves], device=lengths.device)
    out = audio.new_zeros(len(waves), int(new_lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return out, new_lengths


def add_noise(
    audio: Tensor, lengths: Tensor, snr_db: Sequence[float], prob: float = 1.0
) -> Tensor:
    """Additive white noise: with probability ``prob`` an utterance gets Gaussian noise at a
    signal-to-noise ratio drawn uniformly from ``[snr_db[0], snr_db[1]]`` dB, the signal's power
    taken over its real samples (pauses included). Padding stays zero. Draws use the global torch
    RNG, which the engine saves for resume.

    Args:
        audio: (B, S) padded waveforms; lengths: (B,) samples.
    Returns:
        (B, S) waveforms.
    """
    lo, hi = float(snr_db[0]), float(snr_db[1])
    real = ~lengths_to_padding_mask(lengths, audio.shape[1])  # (B, S) True at real samples
    x = audio.float()
    power = (x.square() * real).sum(1) / lengths.clamp(min=1)  # (B,)
    snr = lo + (hi - lo) * torch.rand(len(x)).to(x.device)
    on = (torch.rand(len(x)) < prob).to(x.device)
    scale = (power / 10 ** (snr / 10)).sqrt() * on  # noise standard deviation
    noise = torch.randn(x.shape).to(x.device) * scale[:, None] * real
    return (x + noise).to(audio.dtype)


# libsndfile's header log, when the audio chunk a header promises runs past the file's end:
# "data : 32000 (should be 15978)" (WAV; "SSND" in AIFF)
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_warned: set[str] = set()  # each truncated file is named once per process


def _warn_if_truncated(path: Path, header_log: str, frames: int, rate: int) -> None:
    """Warn, naming the file, when its header promises more audio than the file holds:
    libsndfile then reads the part that exists without a word."""
    found = _SHORT_CHUNK.search(header_log or "")
    if found is None or str(path) in _warned:
        return
    promised, present = int(found.group(1)), int(found.group(2))
    if promised <= present or present <= 0:
        return
    _warned.add(str(path))
    claimed = frames * promised // present
    log.warning(
        "audio file %s is truncated: its header promises %.2f s (%d samples), the file holds "
        "%.2f s (%d); using the part that exists", path, claimed / rate, claimed, frames / rate,
        frames,
    )


def _check(path: str | Path) -> Path:
    try:
        return check_file(path, "audio file")
    except (OSError, ValueError) as e:  # missing, a directory, a device: one AudioError
        raise AudioError(str(e)) from None


def _reason(err: BaseException) -> str:
    # libsndfile's own message repeats the path; its error_string is the reason alone
    text = getattr(err, "error_string", None) or str(err).strip() or type(err).__name__
    return text.splitlines()[0].rstrip(".")
