"""Modality adapters: text embeddings and masks, ViT patches and position interpolation, the
audio front end (closed-form lengths, SpecAugment in training only), and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.adapters import AudioAdapter, SpecAugment, TextAdapter, VisionAdapter
from encoders.adapters.audio import Conv2dSubsampling, FrequencyWarp, LogMel, normalize_wave
from encoders.positional import interpolate_pos_embed, sinusoidal_table

# ---------------------------------------------------------------------------------------------
# Text


def test_text_adapter_scales_embeddings_and_adds_positions() -> None:
    torch.manual_seed(0)
    text = TextAdapter(20, 8, max_len=16).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 9]])
    tokens, mask = text(ids)
    expected = text.embed(ids) * math.sqrt(8) + sinusoidal_table(16, 8)[:5]
    torch.testing.assert_close(tokens, expected)
    assert mask.tolist() == [[False] * 3 + [True] * 2, [False] * 5]  # padding where ids == pad
    assert torch.equal(text.embed.weight[0], torch.zeros(8))
    # start_pos continues the positions (incremental decoding)
    step, _ = text(ids[:, 3:4], start_pos=3)
    torch.testing.assert_close(step, tokens[:, 3:4])


def test_text_adapter_masks_from_lengths_and_returns_none_without_padding() -> None:
    text = TextAdapter(20, 8)
    ids = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert text(ids)[1] is None
    _, mask = text(ids, torch.tensor([3, 1]))
    assert mask.tolist() == [[False, False, False], [False, True, True]]


@pytest.mark.parametrize(
    "ids, message",
    [
        (torch.tensor([1, 2, 3]), r"expected token ids of shape \(B, N\), got shape \(3,\)"),
        (torch.tensor([[1.0, 2.0]]), "expected integer token ids, got dtype torch.float32"),
        (torch.tensor([[1, 20]]), r"token ids must lie in \[0, 20\), got values in \[1, 20\]"),
        (torch.tensor([[-1, 2]]), r"token ids must lie in \[0, 20\), got values in \[-1, 2\]"),
    ],
    ids=["rank", "dtype", "too_large", "negative"],
)
def test_text_adapter_rejects_bad_ids(ids: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextAdapter(20, 8)(ids)


def test_text_adapter_rejects_an_unknown_position_type() -> None:
    with pytest.raises(ValueError, match="unknown position type 'alibi'"):
        TextAdapter(20, 8, pos="alibi")


# ---------------------------------------------------------------------------------------------
# Vision


def _vision(**kwargs) -> VisionAdapter:
    torch.manual_seed(0)
    return VisionAdapter(img_size=32, patch_size=8, in_chans=3, dim=16, **kwargs).eval()


def test_vision_adapter_makes_patch_tokens_with_cls_and_positions() -> None:
    vis = _vision()
    images = torch.randn(2, 3, 32, 32)
    tokens, mask = vis(images)
    assert tokens.shape == (2, 1 + 16, 16) and mask is None
    patches = vis.patch_embed(images)
    torch.testing.assert_close(tokens[:, 1:], patches + vis.pos_embed[:, 1:])
    torch.testing.assert_close(
        tokens[:, 0], (vis.cls_token + vis.pos_embed[:, :1])[0].expand(2, -1)
    )
    no_cls, _ = _vision(class_token=False)(images)
    assert no_cls.shape == (2, 16, 16)


@pytest.mark.parametrize("size", [(48, 48), (16, 40)])
def test_vision_adapter_interpolates_positions_for_other_image_sizes(size) -> None:
    vis = _vision()
    h, w = size
    tokens, _ = vis(torch.randn(2, 3, h, w))
    assert tokens.shape == (2, 1 + (h // 8) * (w // 8), 16)
    assert torch.isfinite(tokens).all()
    # patches contribute nothing when the patch projection is zero: the tokens are the positions
    with torch.no_grad():
        vis.patch_embed.proj.weight.zero_()
        vis.patch_embed.proj.bias.zero_()
    tokens, _ = vis(torch.randn(1, 3, h, w))
    resized = interpolate_pos_embed(vis.pos_embed, (4, 4), (h // 8, w // 8), num_prefix=1)
    torch.testing.assert_close(tokens[0, 1:], resized[0, 1:])
    torch.testing.assert_close(tokens[0, 0], vis.cls_token[0, 0] + vis.pos_embed[0, 0])


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 32, 32), r"expected images of shape \(B, C, H, W\), got shape \(3, 32, 32\)"),
        ((1, 1, 32, 32), "expected 3 image channels, got 1"),
        ((1, 3, 30, 32), "image size 30x32 is not divisible by the patch size 8"),
    ],
    ids=["rank", "channels", "size"],
)
def test_vision_adapter_rejects_bad_images(shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _vision()(torch.randn(*shape))


def test_vision_adapter_needs_a_patch_that_divides_the_image_size() -> None:
    with pytest.raises(ValueError, match="img_size 30 is not divisible by patch_size 8"):
        VisionAdapter(img_size=30, patch_size=8)


def test_conv_stem_makes_one_token_per_patch_from_local_convolutions() -> None:
    vis = _vision(stem="conv")
    stem = vis.patch_embed.stem
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 8, (2, 2)),  # log2(8) = 3 stride-2 convolutions, widths doubling up to dim 16
        (8, 8, (2, 2)),
        (8, 16, (2, 2)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in stem) == 3
    images = torch.randn(2, 3, 32, 32)
    tokens, _ = vis(images)
    assert tokens.shape == (2, 1 + 16, 16)
    # token (0, 0) sees only the top-left corner of the image (receptive field 15 px)
    changed = images.clone()
    changed[:, :, 24:, 24:] += 1.0
    assert torch.equal(vis.patch_embed(changed)[:, 0], vis.patch_embed(images)[:, 0])
    assert not torch.equal(vis.patch_embed(changed)[:, -1], vis.patch_embed(images)[:, -1])


def test_deeper_conv_stem_adds_stride_one_convolutions_at_each_resolution() -> None:
    vis = _vision(stem="conv", stem_depth=2)
    convs = [m for m in vis.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 8, (2, 2)),
        (8, 8, (1, 1)),
        (8, 8, (2, 2)),
        (8, 8, (1, 1)),
        (8, 16, (2, 2)),
        (16, 16, (1, 1)),
    ]
    tokens, _ = vis(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 1 + 16, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": 6, "img_size": 36, "stem": "conv"}, "power-of-two patch_size, got 6"),
        ({"stem": "hybrid"}, "unknown stem 'hybrid'; expected 'patch' or 'conv'"),
        ({"stem_depth": 2}, "stem_depth 2 needs stem 'conv', got stem 'patch'"),
        ({"stem": "conv", "stem_depth": 0}, "stem_depth must be at least 1, got 0"),
    ],
)
def test_vision_adapter_rejects_bad_stems(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VisionAdapter(**{"img_size": 32, "patch_size": 8, **kwargs})


# ---------------------------------------------------------------------------------------------
# Audio

N_FFT, HOP = 400, 160


def _audio(features: str = "waveform", **kwargs) -> AudioAdapter:
    torch.manual_seed(0)
    return AudioAdapter(16, n_mels=20, features=features, **kwargs).eval()


def _expected_frames(length: int, features: str) -> int:
    """The closed form: STFT frames without centering, then two (k=3, s=2) convolutions."""
    frames = (length - N_FFT) // HOP + 1 if features == "waveform" else length
    for _ in range(2):
        frames = (frames - 3) // 2 + 1
    return frames


@pytest.mark.parametrize(
    "features, lengths",
    [
        ("waveform", [1360, 1361, 1519, 1520, 1679, 1680, 2001, 2333, 3200, 4111, 5000, 8000]),
        ("fbank", list(range(7, 40)) + [57, 64, 99, 100, 101]),
    ],
)
def test_audio_output_lengths_follow_the_closed_form(features: str, lengths: list[int]) -> None:
    adapter = _audio(features, spec_augment=False)
    computed = adapter.output_lengths(torch.tensor(lengths))
    for length, predicted in zip(lengths, computed.tolist()):
        x = torch.randn(1, length) if features == "waveform" else torch.randn(1, length, 20)
        tokens, mask = adapter(x)
        assert tokens.shape[1] == predicted == _expected_frames(length, features), length
        assert mask is None
    # in a padded batch the mask marks exactly the frames past each length
    longest = max(lengths)
    shape = (len(lengths), longest) if features == "waveform" else (len(lengths), longest, 20)
    tokens, mask = adapter(torch.randn(*shape), torch.tensor(lengths))
    assert tokens.shape[1] == _expected_frames(longest, features)
    assert (~mask).sum(1).tolist() == computed.tolist()


def test_log_mel_frame_count_matches_the_transform() -> None:
    mel = LogMel(16000, N_FFT, HOP, 20)
    for length in (400, 401, 559, 560, 1000):
        assert mel(torch.randn(1, length)).shape == (1, mel.num_frames(torch.tensor(length)), 20)
    assert Conv2dSubsampling.output_lengths(torch.tensor([0, 6, 7])).tolist() == [0, 0, 1]


def test_spec_augment_masks_in_training_only() -> None:
    torch.manual_seed(0)
    aug = SpecAugment()
    x = torch.randn(4, 200, 80)
    assert torch.equal(aug.eval()(x), x)
    masked = aug.train()(x)
    assert masked.shape == x.shape and not torch.equal(masked, x)
    assert ((masked == x) | (masked == 0)).all()  # masking only zeroes values


def test_frequency_warp_moves_a_tone_like_a_vocal_tract_change() -> None:
    """Reading the spectrum at 1.1x each frequency shows a 1000 Hz tone where an unwarped
    1000 / 1.1 Hz tone shows; factor 1 and evaluation mode change nothing."""
    logmel = LogMel(16000, 400, 160, 80)
    t = torch.arange(16000) / 16000

    def peak_bins(x: torch.Tensor) -> torch.Tensor:
        return x[0].argmax(-1)  # (T,) the loudest bin of each frame

    tone = logmel(torch.sin(2 * math.pi * 1000 * t)[None])
    warp = FrequencyWarp(0.2, 16000, 80).train()
    moved = warp(tone, torch.tensor([1.1]))
    lower = logmel(torch.sin(2 * math.pi * 1000 / 1.1 * t)[None])
    assert (peak_bins(tone) > peak_bins(moved)).all()
    assert (peak_bins(moved) - peak_bins(lower)).abs().max() <= 1
    torch.testing.assert_close(warp(tone, torch.tensor([1.0])), tone)
    assert not torch.equal(warp(tone.expand(4, -1, -1)), tone.expand(4, -1, -1))  # random
    assert torch.equal(warp.eval()(tone), tone)
    with pytest.raises(ValueError, match="freq_warp"):
        FrequencyWarp(1.5, 16000, 80)


def test_audio_adapter_warps_frequencies_in_training_only() -> None:
    adapter = AudioAdapter(16, freq_warp=0.1, spec_augment=False)
    wave = torch.randn(2, 4000)
    torch.manual_seed(0)
    adapter.train()
    trained = adapter(wave)[0]
    adapter.eval()
    assert not torch.allclose(trained, adapter(wave)[0])
    assert torch.equal(adapter(wave)[0], adapter(wave)[0])
    assert isinstance(AudioAdapter(16).warp, torch.nn.Identity)  # off by default


def test_audio_adapter_applies_spec_augment_in_training_only() -> None:
    adapter = _audio("fbank", spec_augment=True)
    plain = _audio("fbank", spec_augment=False)
    plain.load_state_dict(adapter.state_dict())
    x = torch.randn(2, 120, 20)
    first, _ = adapter(x)
    torch.testing.assert_close(adapter(x)[0], first, atol=0, rtol=0)  # eval is deterministic
    torch.testing.assert_close(plain(x)[0], first, atol=0, rtol=0)  # and unaugmented
    torch.manual_seed(1)
    trained, _ = adapter.train()(x)
    assert not torch.allclose(trained, first)


def test_wave_norm_makes_the_features_independent_of_the_recording_level() -> None:
    torch.manual_seed(0)
    wave = 0.05 * torch.randn(2, 6000)
    wave[1, 4000:] = 0.0  # padding of the shorter utterance
    lengths = torch.tensor([6000, 4000])
    scaled = wave * torch.tensor([[0.02], [7.0]])  # one much quieter, one louder
    normed = normalize_wave(scaled, lengths)
    torch.testing.assert_close(normed[0].pow(2).mean(), torch.tensor(1.0), rtol=1e-4, atol=0)
    torch.testing.assert_close(normed[1, :4000].pow(2).mean(), torch.tensor(1.0), rtol=1e-4, atol=0)
    assert torch.equal(normed[1, 4000:], torch.zeros(2000))
    adapter = AudioAdapter(16, spec_augment=False, wave_norm=True).eval()
    torch.testing.assert_close(adapter(scaled, lengths)[0], adapter(wave, lengths)[0])
    plain = AudioAdapter(16, spec_augment=False).eval()
    plain.load_state_dict(adapter.state_dict())
    assert not torch.allclose(plain(scaled, lengths)[0], plain(wave, lengths)[0], atol=1e-3)


@pytest.mark.parametrize(
    "features, shape, message",
    [
        (
            "waveform",
            (2, 1, 4000),
            r"expected a waveform batch of shape \(B, S\), got \(2, 1, 4000\)",
        ),
        ("fbank", (2, 50), r"expected features of shape \(B, T, 20\), got \(2, 50\)"),
        ("fbank", (2, 50, 40), r"expected features of shape \(B, T, 20\), got \(2, 50, 40\)"),
        ("waveform", (1, 300), "audio too short: .* 300 input steps .* at least 1360 samples"),
        ("waveform", (1, 1359), "audio too short: .* 1359 input steps .* at least 1360 samples"),
        ("fbank", (1, 6, 20), "audio too short: .* 6 input steps .* at least 7 feature frames"),
    ],
    ids=[
        "wave_rank",
        "fbank_rank",
        "fbank_channels",
        "shorter_than_fft",
        "too_short",
        "few_frames",
    ],
)
def test_audio_adapter_rejects_bad_input(features: str, shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _audio(features)(torch.randn(*shape))


def test_audio_adapter_rejects_unknown_features_and_positions() -> None:
    with pytest.raises(ValueError, match="unknown audio features 'mfcc'"):
        AudioAdapter(16, features="mfcc")
    with pytest.raises(ValueError, match="unknown position type 'learned'.*sinusoidal.*none"):
        AudioAdapter(16, pos="learned")


# ---------------------------------------------------------------------------------------------
# Wrong dtypes, empty batches and lengths: one ValueError sentence at the entry point


@pytest.mark.parametrize(
    "images, message",
    [
        (
            torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
            "floating-point images, got dtype "
            r"torch.uint8; convert them with",
        ),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "got dtype torch.int64"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.bool), "got dtype torch.bool"),
        (
            torch.zeros(2, 3, 32, 32, dtype=torch.float16),
            "images are torch.float16 but the model's weights are torch.float32",
        ),
        (torch.zeros(0, 3, 32, 32), r"with no empty axis, got shape \(0, 3, 32, 32\)"),
        (torch.zeros(2, 3, 0, 32), r"with no empty axis, got shape \(2, 3, 0, 32\)"),
    ],
    ids=["uint8", "int64", "bool", "half", "empty_batch", "empty_side"],
)
def test_vision_adapter_rejects_bad_dtypes_and_empty_batches(images, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _vision()(images)


def test_half_images_are_fine_in_a_half_model_and_under_autocast() -> None:
    assert _vision().half()(torch.zeros(1, 3, 32, 32, dtype=torch.float16))[0].dtype == torch.half
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _vision()(torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16))


@pytest.mark.parametrize(
    "ids, lengths, message",
    [
        (torch.zeros(0, 4, dtype=torch.long), None, r"token ids of shape \(B, N\) with no empty"),
        (torch.zeros(2, 0, dtype=torch.long), None, r"got shape \(2, 0\)"),
        (
            torch.ones(2, 3, dtype=torch.long),
            torch.tensor([3, 4]),
            r"lengths must lie in \[0, 3\] \(the padded input holds 3 tokens\), got values in "
            r"\[3, 4\]",
        ),
        (
            torch.ones(2, 3, dtype=torch.long),
            torch.tensor([3.0, 2.0]),
            "expected integer lengths, got dtype torch.float32",
        ),
        (
            torch.ones(2, 3, dtype=torch.long),
            torch.tensor([3]),
            r"expected lengths of shape \(2,\), one per batch row, got \(1,\)",
        ),
    ],
    ids=["empty_batch", "empty_sequence", "lengths_too_long", "float_lengths", "lengths_shape"],
)
def test_text_adapter_rejects_empty_batches_and_bad_lengths(ids, lengths, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextAdapter(20, 8)(ids, lengths)


@pytest.mark.parametrize(
    "features, audio, lengths, message",
    [
        (
            "waveform",
            torch.randn(4000),
            None,
            r"expected a waveform batch of shape \(B, S\), got \(4000,\)",
        ),
        (
            "waveform",
            torch.zeros(2, 4000, dtype=torch.int16),
            None,
            "floating-point waveforms in \\[-1, 1\\], got dtype torch.int16; scale integer PCM",
        ),
        ("waveform", torch.randn(0, 4000), None, r"no empty axis, got shape \(0, 4000\)"),
        (
            "waveform",
            torch.randn(2, 4000),
            torch.tensor([4000, 5000]),
            r"lengths must lie in \[0, 4000\] \(the padded input holds 4000 samples\)",
        ),
        ("waveform", torch.randn(2, 4000), torch.tensor([-1, 4000]), r"got values in \[-1, "),
        (
            "fbank",
            torch.randn(2, 50, 20).half(),
            None,
            "features are torch.float16 but the model's weights are torch.float32",
        ),
    ],
    ids=["1d", "int16", "empty", "lengths_too_long", "negative_length", "half_fbank"],
)
def test_audio_adapter_rejects_bad_dtypes_ranks_and_lengths(
    features: str, audio, lengths, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _audio(features)(audio, lengths)
