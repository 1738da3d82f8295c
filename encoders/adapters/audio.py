"""Audio adapter: waveform or log-mel features -> (training only: frequency warping) ->
normalised frames -> SpecAugment (training only) -> conv subsampling x4 -> frame tokens with
positions."""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor, nn

from encoders.adapters.checks import check_float, check_lengths, check_not_empty
from encoders.attention import lengths_to_padding_mask
from encoders.positional import SinusoidalPositionalEmbedding

FEATURES = ("waveform", "fbank")
POSITIONS = ("sinusoidal", "none")
FEATURE_NORMS = ("utterance", "mean", "speaker", "none")  # see normalize_frames


def stft_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop_length) in samples of the speech front end's 25 ms windows and 10 ms hop."""
    return sample_rate * 25 // 1000, sample_rate * 10 // 1000


class LogMel(nn.Module):
    """Log mel filterbank (torchaudio). Frames are not centred, so a frame only ever sees samples
    of its own utterance and padding cannot change real frames."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        # Built on the CPU even under a meta-device context (parameter counting): torchaudio
        # checks the filterbank's values while building it. It holds buffers only.
        with torch.device("cpu"):
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=n_fft,
                hop_length=hop_length,
                n_mels=n_mels,
                center=False,
                power=2.0,
            )

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Closed form of the frame count: floor((S - n_fft) / hop) + 1, at least 0."""
        return ((num_samples - self.n_fft).div(self.hop_length, rounding_mode="floor") + 1).clamp(
            min=0
        )

    def forward(self, wave: Tensor) -> Tensor:
        """(B, S) waveform -> (B, T, n_mels) log-mel."""
        with torch.autocast(wave.device.type, enabled=False):  # the FFT wants fp32
            spec = self.mel(wave.float())  # (B, n_mels, T)
        return torch.log(spec + 1e-6).transpose(1, 2)


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) with torchaudio, a different mask per
    utterance; identity outside training."""

    def __init__(
        self,
        freq_mask: int = 27,
        time_mask: int = 40,
        num_masks: int = 2,
        max_time_ratio: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_masks = num_masks
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        # p bounds a time mask to a fraction of the utterance, so short clips keep their content
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True, p=max_time_ratio)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, F) -> (B, T, F), masked in training mode."""
        if not self.training:
            return x
        spec = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T): iid masks need a channel axis
        for _ in range(self.num_masks):
            spec = self.time(self.freq(spec))
        return spec.squeeze(1).transpose(1, 2)


def _hz_to_mel(hz: Tensor) -> Tensor:
    """The HTK mel scale of torchaudio's default filterbank."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


class FrequencyWarp(nn.Module):
    """Vocal tract length perturbation (Jaitly & Hinton 2013) on log-mel frames: each
    utterance's spectrum is read at its frequencies scaled by a factor drawn uniformly from
    [1 - max_warp, 1 + max_warp], so the formants move as for a shorter or longer vocal tract
    while pitch and timing stay (speed perturbation changes all three). Bins are interpolated
    linearly between the mel filters' centres; those read beyond the top bin repeat it.
    Identity outside training.

    Args:
        max_warp: largest relative change of frequency (0.1: factors 0.9-1.1); 0 turns it off.
        sample_rate, n_mels: of the HTK-scale filterbank from 0 Hz to the Nyquist frequency.
    """

    def __init__(self, max_warp: float, sample_rate: int, n_mels: int) -> None:
        super().__init__()
        if not 0.0 <= max_warp < 1.0:
            raise ValueError(f"freq_warp must be in [0, 1), got {max_warp}")
        self.max_warp = max_warp
        # host constants even when the model is built under torch.device("meta") (the registry's
        # size check): float() of a meta tensor raises
        top = _hz_to_mel(torch.tensor(sample_rate / 2.0, device="cpu"))
        self.mel_step = float(top) / (n_mels + 1)
        centres_mel = torch.arange(1, n_mels + 1, dtype=torch.float64, device="cpu") * self.mel_step
        # The filters' centres in Hz: a CPU attribute, not a buffer, so that warping computes
        # its read positions in float64 on the host without copying anything back per batch.
        self.centres = 700.0 * (10 ** (centres_mel / 2595.0) - 1)

    def forward(self, x: Tensor, factor: Tensor | None = None) -> Tensor:
        """(B, T, F) -> (B, T, F), warped in training mode, by ``factor`` (B,) when given."""
        if not self.training or self.max_warp == 0:
            return x
        b, t, f = x.shape
        if factor is None:
            factor = 1.0 + (2 * torch.rand(b, dtype=torch.float64) - 1) * self.max_warp
        factor = factor.to(torch.float64).cpu().unsqueeze(1)  # (B, 1)
        read_at = _hz_to_mel(self.centres * factor) / self.mel_step - 1  # (B, F) bins
        read_at = read_at.clamp(0, f - 1).float().to(x.device)
        lo = read_at.floor().long()
        hi = (lo + 1).clamp(max=f - 1)
        frac = (read_at - lo).unsqueeze(1).to(x.dtype)  # (B, 1, F)
        index = torch.cat([lo, hi], dim=1).unsqueeze(1).expand(b, t, 2 * f)
        below, above = x.gather(2, index).split(f, dim=2)
        return below + (above - below) * frac


class Conv2dSubsampling(nn.Module):
    """Two 3x3 convolutions with stride 2 over (time, frequency): T -> ~T/4 frames of width D."""

    def __init__(self, n_mels: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, dim, 3, stride=2), nn.ReLU(), nn.Conv2d(dim, dim, 3, stride=2), nn.ReLU()
        )
        freq = ((n_mels - 1) // 2 - 1) // 2  # frequency bins left after the two convs
        self.out = nn.Linear(dim * freq, dim)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        """Frames after subsampling: L -> floor((L - 3) / 2) + 1, applied twice."""
        for _ in range(2):
            lengths = (lengths - 3).div(2, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, F) -> (B, T', D)."""
        h = self.conv(x.unsqueeze(1))  # (B, D, T', F')
        b, c, t, f = h.shape
        return self.out(h.transpose(1, 2).reshape(b, t, c * f))  # (B, T', D*F') -> (B, T', D)


def normalize_frames(
    x: Tensor, mask: Tensor | None, norm: str = "utterance", stats: Tensor | None = None
) -> Tensor:
    """Normalisation of (B, T, F) log-mel frames, per bin over the real frames (padding
    ignored): ``"utterance"`` subtracts the mean and divides by the standard deviation
    (CMVN), ``"mean"`` only subtracts the mean (CMN: Kaldi's ``apply-cmvn`` and ESPnet's
    ``UtteranceMVN`` by default), so that bins with almost no energy (above the band of 8 kHz
    audio played at 16 kHz) are not scaled up to unit variance; ``"none"`` returns ``x``.
    ``"speaker"`` uses ``stats`` (B, 2, F), each utterance's speaker's mean and standard
    deviation per bin over all of that speaker's frames (``speaker_stats``; Kaldi's per-speaker
    CMVN), so that one short utterance's own spectrum (a single word's vowel) is not
    normalised away with the voice; without ``stats`` it is ``"utterance"``."""
    if norm not in FEATURE_NORMS:
        raise ValueError(f"unknown feature_norm '{norm}'; expected one of {FEATURE_NORMS}")
    if norm == "none":
        return x
    if norm == "speaker" and stats is not None:
        if stats.ndim != 3 or stats.shape[0] != x.shape[0] or stats.shape[1:] != (2, x.shape[2]):
            raise ValueError(f"expected speaker statistics of shape ({x.shape[0]}, 2, "
                             f"{x.shape[2]}), got {tuple(stats.shape)}")
        stats = stats.to(x.dtype)
        return (x - stats[:, :1]) / stats[:, 1:].clamp(min=1e-3)
    if mask is None:
        centred = x - x.mean(1, keepdim=True)
        if norm == "mean":
            return centred
        var = x.var(1, unbiased=False, keepdim=True)
    else:
        keep = (~mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        count = keep.sum(1, keepdim=True).clamp(min=1)
        centred = x - (x * keep).sum(1, keepdim=True) / count
        if norm == "mean":
            return centred
        var = ((centred * keep) ** 2).sum(1, keepdim=True) / count
    return centred / torch.sqrt(var + 1e-5)


def speaker_stats(frames: list[Tensor]) -> Tensor:
    """(2, F): the mean and standard deviation per bin of one speaker's log-mel frames, each
    item (T_i, F) one utterance's frames; every frame counts once, so a long utterance
    weighs more than a short one."""
    if not frames:
        raise ValueError("speaker statistics need at least one utterance")
    x = torch.cat([f.float() for f in frames])
    return torch.stack([x.mean(0), x.std(0, unbiased=False)])


def normalize_wave(x: Tensor, lengths: Tensor) -> Tensor:
    """Scale each waveform of (B, S) to unit RMS over its first ``lengths`` samples; padding
    (zeros) stays zero and silence stays silence."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        real = ~lengths_to_padding_mask(lengths, x.shape[1])  # (B, S) True at real samples
        power = (x.square() * real).sum(1) / lengths.clamp(min=1)
        return x * torch.rsqrt(power + 1e-12).unsqueeze(1)


class AudioAdapter(nn.Module):
    """Speech front end: (waveform or log-mel, lengths) -> (frames (B, T', D), padding mask).

    Args:
        dim: width D.
        n_mels: mel bins.
        sample_rate: expected sample rate of waveforms (resample before, in the data pipeline).
        n_fft: FFT/window size in samples (25 ms at 16 kHz).
        hop_length: hop in samples (10 ms at 16 kHz).
        features: "waveform" (compute log-mel here) or "fbank" (input is already (B, T, n_mels)).
        spec_augment: apply SpecAugment in training mode.
        freq_warp: largest vocal tract length perturbation in training (``FrequencyWarp``;
            0 = off).
        pos: "sinusoidal" or "none" (e.g. with a rotary core).
        dropout: dropout on the output frames.
        wave_norm: scale each waveform to unit RMS over its real samples before the log-mel, so
            that a recording's level does not change the features (log-mel's 1e-6 floor
            otherwise makes a quiet voice look unlike a loud one).
        feature_norm: normalisation of the log-mel frames (``normalize_frames``): per
            utterance, "utterance" (mean and variance per bin) or "mean" (mean only); per
            speaker, "speaker" (statistics given to ``forward``); or "none".
    """

    def __init__(
        self,
        dim: int,
        n_mels: int = 80,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        features: str = "waveform",
        spec_augment: bool = True,
        pos: str = "sinusoidal",
        dropout: float = 0.0,
        freq_warp: float = 0.0,
        wave_norm: bool = False,
        feature_norm: str = "utterance",
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"unknown audio features '{features}'; expected one of {FEATURES}")
        if pos not in POSITIONS:
            raise ValueError(f"unknown position type '{pos}'; expected one of {POSITIONS}")
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(
                f"unknown feature_norm '{feature_norm}'; expected one of {FEATURE_NORMS}"
            )
        self.feature_norm = feature_norm
        self.dim, self.n_mels, self.features = dim, n_mels, features
        self.wave_norm = wave_norm
        self.frontend = (
            LogMel(sample_rate, n_fft, hop_length, n_mels) if features == "waveform" else None
        )
        # Park et al. mask up to 27 of 80 mel bins; keep that fraction for other resolutions.
        freq_mask = max(1, round(27 * n_mels / 80))
        self.specaug = SpecAugment(freq_mask) if spec_augment else nn.Identity()
        self.warp = FrequencyWarp(freq_warp, sample_rate, n_mels) if freq_warp else nn.Identity()
        self.subsample = Conv2dSubsampling(n_mels, dim)
        self.pos_embed = SinusoidalPositionalEmbedding(dim) if pos == "sinusoidal" else None
        self.drop = nn.Dropout(dropout)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Input lengths (samples or frames) (B,) -> output frame counts (B,), closed form."""
        if self.frontend is not None:
            lengths = self.frontend.num_frames(lengths)
        return Conv2dSubsampling.output_lengths(lengths)

    def check_input(self, x: Tensor) -> None:
        """Refuse input of the wrong rank, with an empty axis or not floating point (a
        ``ValueError``), before anything reads ``x.shape``."""
        if self.frontend is None:
            if x.ndim != 3 or x.shape[-1] != self.n_mels:
                raise ValueError(
                    f"expected features of shape (B, T, {self.n_mels}), got {tuple(x.shape)}"
                )
            check_not_empty(x, "features", f"(B, T, {self.n_mels})")
            weight = self.subsample.conv[0].weight
            check_float(x, "features", weight, "compute them as floats (log-mel)")
            return
        if x.ndim != 2:
            raise ValueError(f"expected a waveform batch of shape (B, S), got {tuple(x.shape)}")
        check_not_empty(x, "waveforms", "(B, S)")
        if not x.is_floating_point():  # the log-mel casts any float dtype to float32
            raise ValueError(
                f"expected floating-point waveforms in [-1, 1], got dtype "
                f"{x.dtype}; scale integer PCM first (int16: x / 32768)"
            )

    def _check(self, x: Tensor, lengths: Tensor) -> None:
        # Checked before the STFT, which fails with an opaque error on clips shorter than n_fft.
        if int(self.output_lengths(lengths).min()) < 1:
            need, unit = 7, "feature frames"  # 7 frames -> 3 -> 1 through the two convolutions
            if self.frontend is not None:
                need, unit = self.frontend.n_fft + 6 * self.frontend.hop_length, "samples"
            raise ValueError(
                f"audio too short: an utterance of {int(lengths.min())} input steps leaves no "
                f"frame after subsampling (need at least {need} {unit})"
            )

    def _features(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.frontend is None:
            return x, lengths
        if self.wave_norm:
            x = normalize_wave(x, lengths)
        return self.frontend(x), self.frontend.num_frames(lengths)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, feat_stats: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Args:
            x: waveforms (B, S) or log-mel features (B, T, n_mels).
            lengths: (B,) samples (or frames) per utterance; None means all full length.
            feat_stats: (B, 2, n_mels) each utterance's speaker's log-mel mean and standard
                deviation, for ``feature_norm="speaker"`` (ignored otherwise; None there
                normalises each utterance by its own statistics).
        Returns:
            frames (B, T', D) and padding mask (B, T') True at padding (None if no padding).
        """
        feats, frame_lengths = self.frames(x, lengths, feat_stats)
        return self.embed(self.specaug(feats), frame_lengths)

    def frames(
        self, x: Tensor, lengths: Tensor | None = None, feat_stats: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The first half of ``forward`` (same arguments): checked input -> log-mel ->
        frequency warping (training only) -> normalised frames (B, T, n_mels), and their
        lengths (B,). No SpecAugment; masked pre-training masks these frames itself."""
        self.check_input(x)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        unit = "samples" if self.frontend is not None else "frames"
        check_lengths(lengths, x.shape[0], x.shape[1], unit)
        self._check(x, lengths)
        feats, frame_lengths = self._features(x, lengths)
        mask = lengths_to_padding_mask(frame_lengths, feats.shape[1])
        feats = normalize_frames(self.warp(feats), mask, self.feature_norm, feat_stats)
        return feats, frame_lengths

    def embed(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        """The second half of ``forward``: normalised frames (B, T, n_mels) with lengths (B,)
        -> subsampled tokens with positions (B, T', D) and padding mask (B, T') or None."""
        out_lengths = Conv2dSubsampling.output_lengths(frame_lengths)
        h = self.subsample(feats) * math.sqrt(self.dim)  # ESPnet-style scale before positions
        if self.pos_embed is not None:
            h = self.pos_embed(h)
        out_mask = lengths_to_padding_mask(out_lengths, h.shape[1])
        return self.drop(h), (out_mask if bool(out_mask.any()) else None)
