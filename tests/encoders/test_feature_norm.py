"""The audio adapter's per-utterance log-mel normalisation (``feature_norm``): CMVN by default,
mean only, or none; padding never enters the statistics."""

from __future__ import annotations

import pytest
import torch

from encoders.adapters.audio import AudioAdapter, FrequencyWarp, normalize_frames
from encoders.attention import lengths_to_padding_mask
from tasks.speech.model import ASRConfig


def frames(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel-like frames (2, 12, 5) with an offset and a scale per bin (the last bin almost
    empty); the second utterance has 8 real frames, then padding of large values that must
    not count."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 5, generator=g) * torch.tensor([0.5, 1, 3, 5, 0.01]) - 7
    mask = lengths_to_padding_mask(torch.tensor([12, 8]), 12)
    x[1, 8:] = 1e3
    return x, mask


def test_utterance_norm_gives_zero_mean_unit_variance_over_real_frames() -> None:
    x, mask = frames()
    y = normalize_frames(x, mask, "utterance")
    for b, n in ((0, 12), (1, 8)):
        real = y[b, :n]
        assert torch.allclose(real.mean(0), torch.zeros(5), atol=1e-4)  # fp32 at offset -7
        # the 1e-5 floor under the variance shrinks the almost empty bin
        assert torch.allclose(real.var(0, unbiased=False)[:4], torch.ones(4), atol=1e-3)


def test_padding_does_not_change_the_real_frames() -> None:
    x, mask = frames()
    other = x.clone()
    other[1, 8:] = -5.0
    for norm in ("utterance", "mean"):
        a, b = normalize_frames(x, mask, norm), normalize_frames(other, mask, norm)
        assert torch.equal(a[:, :8], b[:, :8]) and torch.equal(a[0], b[0])


def test_mean_norm_keeps_each_bins_spread() -> None:
    x, mask = frames()
    y = normalize_frames(x, mask, "mean")
    assert torch.allclose(y[1, :8].mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(y[1, :8].std(0), x[1, :8].std(0), atol=1e-5)  # no scaling
    assert torch.equal(normalize_frames(x, mask, "none"), x)


def test_default_adapter_path_is_utterance_cmvn() -> None:
    assert ASRConfig().feature_norm == "utterance"
    torch.manual_seed(0)
    adapter = AudioAdapter(16, spec_augment=False).eval()
    wave, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    seen = []
    adapter.subsample.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    adapter(wave, lengths)
    logmel = adapter.frontend(wave)
    mask = lengths_to_padding_mask(adapter.frontend.num_frames(lengths), logmel.shape[1])
    expected = normalize_frames(logmel, mask, "utterance")
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert not torch.allclose(seen[0][1], normalize_frames(logmel, mask, "mean")[1])


def test_unknown_feature_norm_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="feature_norm 'global'"):
        AudioAdapter(16, feature_norm="global")
    with pytest.raises(ValueError, match="feature_norm 'cmvn'"):
        ASRConfig(feature_norm="cmvn").build()
    with pytest.raises(ValueError, match="feature_norm 'x'"):
        normalize_frames(torch.zeros(1, 3, 2), None, "x")


def test_frequency_warp_builds_under_a_meta_device() -> None:
    """The registry counts parameters on the meta device; warping must build there too."""
    with torch.device("meta"):
        warp = FrequencyWarp(0.1, 16000, 80)
    assert warp.centres.device.type == "cpu" and warp.centres.shape == (80,)
