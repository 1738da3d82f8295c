"""Masked acoustic modelling (Mockingjay, Liu et al. 2020; TERA, Liu et al. 2021) on the shared
core: spans of normalised log-mel frames are set to zero before the speech recogniser's
convolutional subsampling, the core encodes the result, and a linear head predicts the frames
from each subsampled output; the loss is the L1 error on the masked frames only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from encoders import TransformerEncoder
from encoders.attention import lengths_to_padding_mask
from encoders.core import rotary_positions
from tasks.speech.model import SpeechEncoderConfig

SUBSAMPLING = 4  # Conv2dSubsampling: two convolutions of stride 2 over time
POSITIONS = ("sinusoidal", "rotary")


@dataclass
class MaskedSpeechConfig(SpeechEncoderConfig):
    """Masked acoustic model hyperparameters. The encoder (``adapter`` + ``core``) is the
    speech recogniser's (``SpeechEncoderConfig``: the same core, ``n_mels``, ``features``,
    ``sample_rate``...): its keys and shapes equal a ``SpeechRecognizer``'s, so
    ``model.init_from.parts=[adapter,core]`` moves it. SpecAugment is always off here: the
    masking is the objective; with ``feature_norm`` the masked frames are set to 0."""

    task: ClassVar[str] = "masked_speech"
    modality: ClassVar[str] = "speech"

    # share of each utterance's real input frames (10 ms) that are masked, in spans whose
    # lengths are drawn uniformly from mask_span (inclusive); a span of 7 or more hides every
    # input of at least one subsampled frame (the two convolutions see 7 input frames)
    mask_ratio: float = 0.3
    mask_span: tuple[int, int] = (7, 12)

    def __post_init__(self) -> None:
        self.pos, self.core = rotary_positions(self.pos, self.core)
        self.mask_span = tuple(self.mask_span)
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {self.mask_ratio}")
        if len(self.mask_span) != 2 or not 1 <= self.mask_span[0] <= self.mask_span[1]:
            raise ValueError(f"mask_span must be (shortest, longest) frames with 1 <= shortest "
                             f"<= longest, got {self.mask_span}")

    def build(self) -> MaskedSpeechModel:
        return MaskedSpeechModel(self)


class MaskedSpeechOutput(NamedTuple):
    """What ``MaskedSpeechModel.forward`` returns, at the input frame rate (10 ms); N = 4 T'
    frames, T' the subsampled frames (the last 3-6 input frames have no output frame).

    Attributes:
        pred: (B, N, n_mels) predicted normalised log-mel; input frame 4t + k is read from
            output frame t.
        target: (B, N, n_mels) the normalised log-mel before masking.
        mask: (B, N) bool, True at the masked real frames: the loss is theirs.
    """

    pred: Tensor
    target: Tensor
    mask: Tensor


def span_mask(
    lengths: Tensor, num_frames: int, ratio: float, span: tuple[int, int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random time spans covering ``round(ratio * length)`` real frames of each utterance.

    Spans of ``span[0]..span[1]`` frames start uniformly in the utterance and are added until
    the count is reached; the last one is cut so that the count is not exceeded (overlaps count
    once). Drawn on the CPU from ``generator`` (None: the global RNG, which checkpoints save).

    Args:
        lengths: (B,) real frames per utterance.
        num_frames: T, the padded length.
    Returns:
        (B, T) bool on the CPU, True at masked frames, never at padding.
    """
    mask = torch.zeros(len(lengths), num_frames, dtype=torch.bool)
    lo, hi = span
    for b, length in enumerate(lengths.tolist()):
        want = round(ratio * length)
        covered = 0
        while covered < want:
            width = min(int(torch.randint(lo, hi + 1, (), generator=generator)), want - covered)
            width = min(width, length)
            start = int(torch.randint(0, length - width + 1, (), generator=generator))
            mask[b, start : start + width] = True
            covered = int(mask[b].sum())
    return mask


class MaskedSpeechModel(nn.Module):
    """``adapter`` (log-mel, normalisation) -> masked spans set to 0 -> ``adapter``
    (subsampling, positions) -> ``core`` -> ``head`` (4 x n_mels per output frame)."""

    def __init__(self, cfg: MaskedSpeechConfig) -> None:
        super().__init__()
        if cfg.pos not in POSITIONS:
            raise ValueError(f"unknown position type '{cfg.pos}'; expected one of {POSITIONS}")
        self.cfg = cfg
        self.adapter = cfg.build_adapter(spec_augment=False)
        self.core = TransformerEncoder.from_config(cfg.core)
        self.head = nn.Linear(cfg.core.dim, SUBSAMPLING * cfg.n_mels)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Sample lengths (B,) -> frame lengths (B,) after the adapter's subsampling."""
        return self.adapter.output_lengths(lengths)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Sample (or feature frame) lengths (B,) -> log-mel frames (B,), closed form."""
        frontend = self.adapter.frontend
        return lengths if frontend is None else frontend.num_frames(lengths)

    def draw_mask(
        self, audio: Tensor, lengths: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The (B, T) frame mask ``forward`` would draw for ``audio`` (B, S) (or features
        (B, T, F)) with ``lengths`` (B,), drawn from ``generator``; on ``audio``'s device."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1])
        frames = self.frame_lengths(lengths.cpu())
        total = int(self.frame_lengths(torch.tensor(audio.shape[1])))
        mask = span_mask(frames, total, self.cfg.mask_ratio, self.cfg.mask_span, generator)
        return mask.to(audio.device)

    def forward_features(
        self, audio: Tensor, lengths: Tensor | None = None, feat_stats: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Audio (B, S) with lengths (B,) -> the core's output (B, T', D) and padding mask
        (B, T'), nothing masked: the encoder as the recogniser runs it."""
        tokens, mask = self.adapter(audio, lengths, feat_stats)
        return self.core(tokens, mask), mask

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, T', D) -> (B, 4 T', n_mels): the frames 4t..4t+3 predicted from output t."""
        return rearrange(self.head(features), "b t (k f) -> b (t k) f", k=SUBSAMPLING)

    def forward(
        self, audio: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None,
        feat_stats: Tensor | None = None,
    ) -> MaskedSpeechOutput:
        """Audio (B, S) (or features (B, T, F)) with lengths (B,), a frame mask (B, T) (None:
        drawn from the global RNG, ``draw_mask``) and ``feat_stats`` (B, 2, n_mels) for
        ``feature_norm="speaker"`` -> predictions, targets and scored frames."""
        target, frames = self.adapter.frames(audio, lengths, feat_stats)  # (B, T, F)
        if mask is None:
            mask = span_mask(frames.cpu(), target.shape[1], self.cfg.mask_ratio,
                             self.cfg.mask_span).to(target.device)
        if mask.shape != target.shape[:2]:
            raise ValueError(f"expected a frame mask of shape {tuple(target.shape[:2])} (B, "
                             f"log-mel frames), got {tuple(mask.shape)}")
        hidden = mask & ~lengths_to_padding_mask(frames, target.shape[1])  # never padding
        tokens, pad = self.adapter.embed(target.masked_fill(hidden.unsqueeze(-1), 0.0), frames)
        pred = self.forward_head(self.core(tokens, pad))
        n = pred.shape[1]  # 4 T' <= T: the last frames have no output frame of their own
        return MaskedSpeechOutput(pred, target[:, :n], hidden[:, :n])


def masked_frame_loss(out: MaskedSpeechOutput) -> tuple[Tensor, Tensor]:
    """The L1 error per log-mel bin averaged over the masked real frames (Mockingjay's and
    TERA's loss), and how many frames that is (a scalar tensor)."""
    per_frame = (out.pred.float() - out.target.float()).abs().mean(-1)  # (B, N)
    mask = out.mask.float()
    count = mask.sum()
    return (per_frame * mask).sum() / count.clamp(min=1), count
