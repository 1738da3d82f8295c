"""Task models built straight from their configs: part names, heads, padding invariance (text
and audio), incremental decoding equal to a full pass, and input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from encoders import DecoderCache
from encoders.core import CORE_FIELDS, CoreConfig
from tasks.classification import ImageClassifier, ViTConfig
from tasks.speech import ASRConfig, SpeechOutput, SpeechRecognizer
from tasks.translation import Seq2SeqConfig, Seq2SeqTransformer

CORE = dict(dim=16, depth=2, num_heads=2, dropout=0.0)


def _config(cls: type, **kwargs) -> object:
    """A family config with the core's settings among ``kwargs`` moved into its ``core``."""
    core = {k: kwargs.pop(k) for k in list(kwargs) if k in CORE_FIELDS}
    return cls(core=CoreConfig(**{**CORE, **core}), **kwargs)


def _vit(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    kwargs = {"img_size": 16, "patch_size": 4, "num_classes": 5, **kwargs}
    return _config(ViTConfig, **kwargs).build().eval()


def _mt(**kwargs) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return _config(Seq2SeqConfig, **{"vocab_size": 30, "decoder_depth": 2, **kwargs}).build().eval()


def _asr(**kwargs) -> SpeechRecognizer:
    torch.manual_seed(0)
    return _config(ASRConfig, **{"vocab_size": 12, "n_mels": 20, **kwargs}).build().eval()


# ---------------------------------------------------------------------------------------------
# Image classification


def test_image_classifier_parts_and_head() -> None:
    model = _vit()
    images = torch.randn(2, 3, 16, 16)
    features, mask = model.forward_features(images)
    assert features.shape == (2, 1 + 16, 16) and mask is None
    torch.testing.assert_close(model(images), model.forward_head(features))
    assert model(images).shape == (2, 5)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features[:, 0])


def test_image_classifier_mean_pooling_keeps_the_core() -> None:
    cls_model, model = _vit(), _vit(global_pool="avg")
    assert model.adapter.cls_token is None and isinstance(model.core.norm, nn.LayerNorm)
    assert set(model.core.state_dict()) == set(cls_model.core.state_dict())
    features, _ = model.forward_features(torch.randn(2, 3, 16, 16))
    assert features.shape == (2, 16, 16)
    pooled = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(pooled, features.mean(1))


def test_image_classifier_fc_norm_normalises_after_pooling_as_timm() -> None:
    model = _vit(global_pool="avg", fc_norm=True, class_token=True)
    images = torch.randn(2, 3, 16, 16)
    tokens, _ = model.adapter(images)
    for block in model.core.blocks:
        tokens = block(tokens)
    features, _ = model.forward_features(images)
    torch.testing.assert_close(features, tokens)  # the core's final norm is not applied
    pooled = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(pooled, model.head.norm(features[:, 1:].mean(1)))


def test_image_classifier_without_classes_returns_features() -> None:
    assert _vit(num_classes=0)(torch.randn(2, 3, 16, 16)).shape == (2, 16)


def test_image_classifier_rejects_an_unknown_pool() -> None:
    with pytest.raises(ValueError, match="unknown global_pool 'max'"):
        _vit(global_pool="max")


def test_image_classifier_runs_on_another_image_size() -> None:
    model = _vit()
    logits = model(torch.randn(2, 3, 24, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------
# Translation


def test_translation_model_shares_one_embedding_and_the_head() -> None:
    model = _mt()
    assert model.tgt_adapter.embed is model.src_adapter.embed
    assert model.head.weight is model.src_adapter.embed.weight
    src, tgt = torch.randint(3, 30, (2, 7)), torch.randint(3, 30, (2, 5))
    logits = model(src, tgt)
    assert logits.shape == (2, 5, 30)
    memory, mask = model.forward_features(src)
    torch.testing.assert_close(memory, model.encode(src)[0])
    torch.testing.assert_close(logits, model.forward_head(memory, mask, tgt))


@pytest.mark.parametrize("pos", ["sinusoidal", "learned", "rotary"])
def test_translation_encoder_padded_source_equals_its_unpadded_run(pos: str) -> None:
    model = _mt(pos=pos)
    src = torch.randint(3, 30, (2, 7))
    src[1, 4:] = model.cfg.pad_id
    memory, mask = model.encode(src)
    assert mask[1].tolist() == [False] * 4 + [True] * 3
    alone, alone_mask = model.encode(src[1:, :4])
    assert alone_mask is None
    torch.testing.assert_close(memory[1, :4], alone[0], atol=1e-5, rtol=0)
    # and the padded source gives the same translation logits as the unpadded one
    tgt = torch.randint(3, 30, (2, 5))
    torch.testing.assert_close(
        model(src, tgt)[1], model(src[1:, :4], tgt[1:])[0], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("pos", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_translation_decode_step_equals_the_full_pass(pos: str, norm_first: bool) -> None:
    model = _mt(pos=pos, norm_first=norm_first)
    src = torch.randint(3, 30, (2, 7))
    src[1, 5:] = model.cfg.pad_id
    tgt = torch.randint(3, 30, (2, 6))
    tgt[:, 0] = model.cfg.bos_id
    full = model(src, tgt)
    memory, mask = model.encode(src)
    cache = model.decoder.new_cache()
    assert isinstance(cache, DecoderCache)
    steps = [
        model.decode_step(tgt[:, t : t + 1], memory if t == 0 else None, mask, cache)
        for t in range(tgt.shape[1])
    ]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_translation_decode_step_computes_source_keys_once() -> None:
    model = _mt()
    calls = []
    for block in model.decoder.blocks:
        block.cross_attn.kv.register_forward_hook(lambda *_: calls.append(1))
    memory, mask = model.encode(torch.randint(3, 30, (2, 7)))
    cache = model.decoder.new_cache()
    for _ in range(4):
        model.decode_step(torch.randint(3, 30, (2, 1)), memory, mask, cache)
    assert len(calls) == model.cfg.decoder_depth


def test_translation_logits_ignore_future_target_tokens() -> None:
    model = _mt()
    src, tgt = torch.randint(3, 30, (1, 6)), torch.randint(3, 30, (1, 6))
    changed = tgt.clone()
    changed[:, 3:] = (tgt[:, 3:] + 1) % 27 + 3
    a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_translation_model_rejects_token_ids_out_of_range() -> None:
    with pytest.raises(
        ValueError, match=r"token ids must lie in \[0, 30\), got values in \[3, 30\]"
    ):
        _mt()(torch.tensor([[3, 30]]), torch.tensor([[1, 4]]))


# ---------------------------------------------------------------------------------------------
# Speech recognition


def _padded_audio(features: str):
    """A batch of two utterances, the second padded with garbage after its length."""
    if features == "waveform":
        x, lengths = torch.randn(2, 6000), torch.tensor([6000, 4321])
    else:
        x, lengths = torch.randn(2, 50, 20), torch.tensor([50, 33])
    x[1, int(lengths[1]) :] = 7.0
    return x, lengths


@pytest.mark.parametrize("features", ["waveform", "fbank"])
@pytest.mark.parametrize(
    "options",
    [{}, {"conformer": True, "conv_kernel": 5}, {"pos": "rotary"}],
    ids=["transformer", "conformer", "rotary"],
)
def test_speech_padded_sample_equals_its_unpadded_run(features: str, options: dict) -> None:
    model = _asr(features=features, **options)
    x, lengths = _padded_audio(features)
    out = model(x, lengths)
    n = int(lengths[1])
    alone = model(x[1:, :n])
    t = int(out.lengths[1])
    assert alone.logits.shape[1] == t == int(alone.lengths[0])
    torch.testing.assert_close(out.logits[1, :t], alone.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits[0], model(x[:1]).logits[0], atol=1e-5, rtol=0)


def test_speech_output_lengths_match_the_adapter_formula() -> None:
    model = _asr()
    x, lengths = _padded_audio("waveform")
    out = model(x, lengths)
    assert isinstance(out, SpeechOutput) and out.decoder_logits is None
    assert torch.equal(out.lengths, model.adapter.output_lengths(lengths))
    assert out.logits.shape == (2, int(out.lengths.max()), 12)


def test_speech_decoder_gives_logits_and_its_cache_equals_the_full_pass() -> None:
    model = _asr(decoder_depth=2, features="fbank")
    x, lengths = _padded_audio("fbank")
    tgt = torch.randint(2, 12, (2, 5))
    tgt[:, 0] = model.cfg.eos_id
    out = model(x, lengths, tgt_in=tgt)
    assert out.decoder_logits.shape == (2, 5, 12)
    assert model.decoder_head.weight is model.tgt_adapter.embed.weight
    memory, mask = model.forward_features(x, lengths)
    cache = model.decoder.new_cache()
    steps = [
        model.decode(tgt[:, t : t + 1], memory if t == 0 else None, mask, cache) for t in range(5)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), out.decoder_logits, atol=1e-5, rtol=0)


def test_speech_model_without_decoder_says_so() -> None:
    model = _asr()
    assert model.decoder is None
    memory, mask = model.forward_features(torch.randn(1, 3000))
    with pytest.raises(ValueError, match="no attention decoder.*decoder_depth=0"):
        model.decode(torch.tensor([[1]]), memory, mask)


def test_speech_model_rejects_an_unknown_position_type() -> None:
    with pytest.raises(ValueError, match="unknown position type 'learned'.*sinusoidal.*rotary"):
        _asr(pos="learned")


def test_speech_model_rejects_input_of_the_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"expected a waveform batch of shape \(B, S\)"):
        _asr()(torch.randn(2, 1, 6000))
    with pytest.raises(ValueError, match=r"expected features of shape \(B, T, 20\)"):
        _asr(features="fbank")(torch.randn(2, 50, 80))


def test_image_classifier_rejects_input_of_the_wrong_rank_and_channels() -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\)"):
        _vit()(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        _vit()(torch.randn(1, 1, 16, 16))


def test_directly_built_models_check_their_inputs_too() -> None:
    with pytest.raises(ValueError, match="src \\(2, 7\\) and tgt_in \\(3, 5\\) disagree"):
        _mt()(torch.randint(3, 30, (2, 7)), torch.randint(3, 30, (3, 5)))
    with pytest.raises(ValueError):
        _asr()(torch.randn(3000))  # 1-D audio: a sentence, not an IndexError
