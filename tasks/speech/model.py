"""Speech recognition: audio adapter + shared encoder core (transformer or conformer) + CTC head,
with an optional attention decoder for joint CTC/attention training (Watanabe et al. 2017)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from encoders import AudioAdapter, TextAdapter, TransformerDecoder, TransformerEncoder
from encoders.adapters.audio import stft_sizes
from encoders.core import CoreConfig, kept_heads, rotary_positions
from encoders.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)

POSITIONS = ("sinusoidal", "rotary")


@dataclass
class SpeechEncoderConfig:
    """The settings of a speech encoder, the audio adapter and the shared ``core``, that every
    speech model family shares (``ASRConfig``, the masked acoustic model's config), so that an
    encoder moves between them with ``model.init_from.parts=[adapter,core]``."""

    core: CoreConfig = field(
        default_factory=lambda: CoreConfig(dim=144, depth=12, num_heads=4, dropout=0.1)
    )
    pos: str = "sinusoidal"  # "sinusoidal" (added to frames) or "rotary" (= core.rotary)
    n_mels: int = 80
    sample_rate: int = 16000
    features: str = "waveform"  # "waveform" or "fbank" (precomputed log-mel)
    freq_warp: float = 0.0  # vocal tract length perturbation in training, e.g. 0.1
    wave_norm: bool = False  # scale each waveform to unit RMS first (level invariance)
    # log-mel normalisation per bin: per utterance, "utterance" (mean and variance, CMVN) or
    # "mean" (mean only, CMN); "speaker" (mean and variance of the speaker's frames in the
    # split, tasks/speech/speakers.py); or "none"
    feature_norm: str = "utterance"

    def build_adapter(self, spec_augment: bool) -> AudioAdapter:
        """The audio adapter of these settings: 25 ms windows, 10 ms hop, the core's width and
        dropout, positions unless the core is rotary."""
        return AudioAdapter(
            self.core.dim, self.n_mels, self.sample_rate, *stft_sizes(self.sample_rate),
            self.features,
            spec_augment, pos="none" if self.core.rotary else "sinusoidal",
            dropout=self.core.dropout, freq_warp=self.freq_warp, wave_norm=self.wave_norm,
            feature_norm=self.feature_norm,
        )


@dataclass
class ASRConfig(SpeechEncoderConfig):
    """Speech recogniser hyperparameters: the audio adapter, CTC head and optional attention
    decoder around a shared ``core`` (``SpeechEncoderConfig``). Token 0 is the CTC blank (and
    the decoder's padding); token ``eos_id`` starts and ends decoder sequences."""

    task: ClassVar[str] = "speech_recognition"
    modality: ClassVar[str] = "speech"

    vocab_size: int = 32
    spec_augment: bool = True
    decoder_depth: int = 0  # > 0 adds an attention decoder
    # after pruning (zoo prune): per decoder layer, the (self, cross) attention heads it kept
    decoder_heads: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None = None
    # > 0: in training, the CTC head also reads this block's output (1 = the first block), and
    # the CTC loss becomes (1 - w) * final + w * intermediate (InterCTC, Lee & Watanabe 2021)
    inter_ctc_layer: int = 0
    inter_ctc_weight: float = 0.3
    blank_id: int = 0
    eos_id: int = 1

    def __post_init__(self) -> None:
        self.pos, self.core = rotary_positions(self.pos, self.core)
        self.decoder_heads = kept_heads(self.decoder_heads, self.decoder_depth,
                                        self.core.num_heads, "decoder_heads", pairs=True)

    def build(self) -> SpeechRecognizer:
        return SpeechRecognizer(self)


class SpeechOutput(NamedTuple):
    """What a speech model returns: CTC logits (B, T, V), their lengths (B,), the attention
    decoder's logits (B, U, V) when target inputs were given and a decoder exists, and in
    training the intermediate CTC logits when ``inter_ctc_layer`` is set."""

    logits: Tensor
    lengths: Tensor
    decoder_logits: Tensor | None = None
    inter_logits: Tensor | None = None  # (B, T', V) of block inter_ctc_layer, training only


class SpeechRecognizer(nn.Module):
    """``adapter`` (log-mel, subsampling) -> ``core`` -> ``head`` (CTC); optional ``decoder``."""

    def __init__(self, cfg: ASRConfig) -> None:
        super().__init__()
        if cfg.pos not in POSITIONS:  # anything else would silently mean sinusoidal
            raise ValueError(f"unknown position type '{cfg.pos}'; expected one of {POSITIONS}")
        depth = cfg.core.depth
        if not 0 <= cfg.inter_ctc_layer < depth or not 0 <= cfg.inter_ctc_weight <= 1:
            raise ValueError(f"inter_ctc_layer must be in [0, {depth - 1}] (a block below "
                             f"the last; 0: off) and inter_ctc_weight in [0, 1], got "
                             f"{cfg.inter_ctc_layer} and {cfg.inter_ctc_weight}")
        self.cfg = cfg
        dim, dropout = cfg.core.dim, cfg.core.dropout
        pos = "none" if cfg.core.rotary else "sinusoidal"
        self.adapter = cfg.build_adapter(cfg.spec_augment)
        self.core = TransformerEncoder.from_config(cfg.core)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, cfg.vocab_size))
        self.decoder = None
        if cfg.decoder_depth > 0:
            self.tgt_adapter = TextAdapter(
                cfg.vocab_size, dim, pad_id=cfg.blank_id, dropout=dropout, pos=pos
            )
            # a plain decoder with the core's settings, without stochastic depth
            dec_core = dataclasses.replace(cfg.core, drop_path=0.0, conformer=False)
            self.decoder = TransformerDecoder.from_config(
                dec_core, cfg.decoder_depth, cfg.decoder_heads
            )
            self.decoder_head = nn.Linear(dim, cfg.vocab_size, bias=False)
            self.decoder_head.weight = self.tgt_adapter.embed.weight  # tied

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Sample lengths (B,) -> frame lengths (B,) after the adapter's subsampling."""
        return self.adapter.output_lengths(lengths)

    def forward_features(
        self, audio: Tensor, lengths: Tensor | None = None, feat_stats: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Audio (B, S) or features (B, T, F) with lengths (B,) -> the core's output frames
        (B, T', D) and their padding mask (B, T'), True at padding. ``feat_stats`` (B, 2, F):
        each utterance's speaker's log-mel statistics, read when ``feature_norm="speaker"``."""
        return self._encode(audio, lengths, feat_stats=feat_stats)[:2]

    def _encode(
        self, audio: Tensor, lengths: Tensor | None, inter_layer: int = 0,
        feat_stats: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """``forward_features``, the frame lengths (B,), and block ``inter_layer``'s
        normalised output (1 = the first block; 0: None)."""
        self.adapter.check_input(audio)  # a wrong rank or dtype, before its shape is read
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        tokens, mask = self.adapter(audio, lengths, feat_stats)
        out_lengths = self.adapter.output_lengths(lengths)
        if inter_layer == 0:
            return self.core(tokens, mask), mask, out_lengths, None
        memory, (hidden,) = self.core.forward_intermediates(tokens, mask, [inter_layer - 1],
                                                            norm=True)
        return memory, mask, out_lengths, hidden

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, T', D) -> (B, T', V) CTC logits."""
        return self.head(features)

    def decode(
        self, tgt_in: Tensor, memory: Tensor, memory_mask: Tensor | None, cache=None
    ) -> Tensor:
        """Attention decoder: (B, U) target inputs (EOS first) -> (B, U, V) logits."""
        if self.decoder is None:
            raise ValueError("this speech model has no attention decoder (decoder_depth=0)")
        start = cache.offset if cache is not None else 0
        x, _ = self.tgt_adapter(tgt_in, start_pos=start)
        return self.decoder_head(self.decoder(x, memory, memory_mask, cache=cache))

    def forward(
        self, audio: Tensor, lengths: Tensor | None = None, tgt_in: Tensor | None = None,
        feat_stats: Tensor | None = None,
    ) -> SpeechOutput:
        """CTC logits for audio (B, S) with sample lengths (B,); decoder logits too when target
        inputs (B, U) are given and the model has a decoder (``feat_stats``: see
        ``forward_features``)."""
        inter_layer = self.cfg.inter_ctc_layer if self.training else 0
        memory, mask, out_lengths, hidden = self._encode(audio, lengths, inter_layer, feat_stats)
        inter = self.forward_head(hidden) if hidden is not None else None
        dec = None
        if tgt_in is not None and self.decoder is not None:
            dec = self.decode(tgt_in, memory, mask)
        return SpeechOutput(self.forward_head(memory), out_lengths, dec, inter)


class CTCEnsemble(nn.Module):
    """Several speech models of one vocabulary and frame rate read as one CTC model: each
    frame's log-probabilities are the mean of the members' (a normalised geometric mean of
    their posteriors), so greedy and beam search, the LM included, run once on the average.

    It answers the calls the speech task makes of a model: ``forward_features`` gives the
    averaged log-probabilities (B, T', V) with the first member's mask and lengths, and
    ``forward_head`` passes them on. The members' attention decoders, if any, are not used.

    Raises:
        ValueError: fewer than two members, or members whose vocabulary size, sample rate or
            subsampled lengths differ (named by position, 0 being the first).
    """

    decoder = None

    def __init__(self, members: list[SpeechRecognizer]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(members)}")
        first = members[0].cfg
        probe = torch.arange(400, 80_000, 997)  # sample counts
        for i, m in enumerate(members[1:], 1):
            if (m.cfg.vocab_size, m.cfg.sample_rate) != (first.vocab_size, first.sample_rate):
                raise ValueError(
                    f"ensemble member {i} has {m.cfg.vocab_size} tokens at {m.cfg.sample_rate} "
                    f"Hz, member 0 {first.vocab_size} tokens at {first.sample_rate} Hz")
            if not torch.equal(m.adapter.output_lengths(probe),
                               members[0].adapter.output_lengths(probe)):
                raise ValueError(f"ensemble member {i} subsamples the audio differently from "
                                 "member 0, so their frames do not line up")
        self.members = nn.ModuleList(members)
        self.cfg = first
        self.adapter = members[0].adapter  # for output_lengths; its weights are member 0's

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Sample lengths (B,) -> frame lengths (B,), the same for every member."""
        return self.adapter.output_lengths(lengths)

    def forward_features(
        self, audio: Tensor, lengths: Tensor | None = None, feat_stats: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Audio (B, S) -> mean CTC log-probabilities (B, T', V) and the mask (B, T')."""
        total, mask = None, None
        for m in self.members:
            memory, mask = m.forward_features(audio, lengths, feat_stats)
            log_probs = m.forward_head(memory).float().log_softmax(-1)
            total = log_probs if total is None else total + log_probs
        # decoding leaves out EOS and renormalises each frame; that removes the same constant
        # as leaving it out of each member first would, so the members keep all V tokens here
        return total / len(self.members), mask

    def forward_head(self, features: Tensor) -> Tensor:
        """The averaged log-probabilities are already the CTC scores."""
        return features

    def forward(self, audio: Tensor, lengths: Tensor | None = None, tgt_in: Tensor | None = None,
                feat_stats: Tensor | None = None) -> SpeechOutput:
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        memory, _ = self.forward_features(audio, lengths, feat_stats)
        return SpeechOutput(memory, self.output_lengths(lengths))


def _positions(module: nn.Module) -> int | None:
    """How many positions a position module covers (None: not one)."""
    if isinstance(module, SinusoidalPositionalEmbedding):
        return module.table.shape[0]
    if isinstance(module, LearnedPositionalEmbedding):
        return module.weight.shape[0]
    if isinstance(module, RotaryEmbedding):
        return module.cos.shape[0]
    return None


def max_samples(model: nn.Module) -> int | None:
    """The longest waveform (samples) whose frames fit the positions of ``model``'s encoder
    (adapter and core; every member of an ensemble), or None when nothing bounds them."""
    counts = [
        n for name, m in model.named_modules()
        if "decoder" not in name and "tgt_adapter" not in name and (n := _positions(m))
    ]  # fmt: skip
    if not counts:
        return None
    frames = min(counts)
    lo, hi = 0, 1 << 40  # output_lengths is monotonic: the largest input that still fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(model.adapter.output_lengths(torch.tensor([mid]))[0]) <= frames:
            lo = mid
        else:
            hi = mid - 1
    return lo
