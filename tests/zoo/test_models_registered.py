"""Every registered model, shrunk to one layer: forward shape, finite outputs, a gradient for every
parameter, a save/load round trip, and overrides that reach the head (timm's test_models.py).
Also: the shared core sizes transfer between modalities, and broken saved models give clear
errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

import zoo
from zoo.errors import CheckpointError

# single-task families; the multitask model (its parts are these) has tests/zoo/multitask/
MODELS = [name for name in zoo.list_models() if name != "multitask"]


def _shrink(name: str) -> dict:
    """One encoder layer, and one decoder layer where the family has a decoder (speech models
    then get an attention decoder, so it is tested too). Image sizes stay: 224 px is fine at
    depth 1."""
    fields = zoo.get_config(name).__dataclass_fields__
    return {"depth": 1, **({"decoder_depth": 1} if "decoder_depth" in fields else {})}


def _create(name: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(name, **{**_shrink(name), **overrides})


def _inputs(model: nn.Module) -> tuple:
    """A small batch of two for the model's task, the second sample shorter where it can be."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(1)
    if cfg.task == "classification":
        return (torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen),)
    if cfg.task == "translation":
        src = torch.randint(3, cfg.vocab_size, (2, 7), generator=gen)
        src[1, 5:] = cfg.pad_id
        tgt = torch.randint(3, cfg.vocab_size, (2, 5), generator=gen)
        tgt[:, 0] = cfg.bos_id
        return src, tgt
    if cfg.task == "language_modeling":
        ids = torch.randint(4, cfg.vocab_size, (2, 6), generator=gen)
        ids[1, 4:] = cfg.pad_id
        return (ids,)
    if cfg.task == "masked_lm":
        ids = torch.randint(3, cfg.vocab_size, (2, 7), generator=gen)
        ids[1, 5:] = cfg.pad_id
        return (ids,)
    if cfg.task == "masked_image":  # and the masking scores, so that two calls agree
        images = torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen)
        return images, torch.rand(2, (cfg.img_size // cfg.patch_size) ** 2, generator=gen)
    if cfg.task == "masked_speech":  # and the frame mask, so that two calls agree
        audio, lengths = torch.randn(2, 4000, generator=gen), torch.tensor([4000, 3000])
        return audio, lengths, model.draw_mask(audio, lengths, gen)
    assert cfg.task == "speech_recognition", cfg.task
    if cfg.features == "waveform":
        audio, lengths = torch.randn(2, 4000, generator=gen), torch.tensor([4000, 3000])
    else:
        audio, lengths = torch.randn(2, 40, cfg.n_mels, generator=gen), torch.tensor([40, 30])
    tgt = torch.randint(2, cfg.vocab_size, (2, 4), generator=gen)
    tgt[:, 0] = cfg.eos_id
    return audio, lengths, (tgt if cfg.decoder_depth > 0 else None)


def _outputs(model: nn.Module, inputs: tuple) -> list[Tensor]:
    out = model(*inputs)
    if model.cfg.task in ("masked_image", "masked_speech"):
        return [out.pred]
    if model.cfg.task != "speech_recognition":
        return [out]
    return [out.logits] + ([out.decoder_logits] if out.decoder_logits is not None else [])


def _expected_shapes(model: nn.Module, inputs: tuple, classes: int) -> list[tuple]:
    cfg = model.cfg
    if cfg.task == "classification":
        return [(2, classes)]
    if cfg.task == "translation":
        return [(2, inputs[1].shape[1], classes)]
    if cfg.task == "language_modeling":
        return [(2, inputs[0].shape[1], classes)]
    if cfg.task == "masked_lm":
        return [(2, inputs[0].shape[1], classes)]
    if cfg.task == "masked_image":  # pixels per patch
        return [(2, inputs[1].shape[1], cfg.patch_size**2 * cfg.in_chans)]
    if cfg.task == "masked_speech":  # log-mel frames 4t..4t+3 of each output frame t
        return [(2, 4 * int(model.adapter.output_lengths(inputs[1]).max()), cfg.n_mels)]
    frames = int(model.adapter.output_lengths(inputs[1]).max())
    shapes = [(2, frames, classes)]
    return shapes + ([(2, inputs[2].shape[1], classes)] if inputs[2] is not None else [])


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_is_finite_and_every_parameter_gets_a_gradient(name: str) -> None:
    model = _create(name).train()
    inputs = _inputs(model)
    outputs = _outputs(model, inputs)
    classes = getattr(model.cfg, "num_classes", getattr(model.cfg, "vocab_size", None))
    assert [tuple(o.shape) for o in outputs] == _expected_shapes(model, inputs, classes)
    assert all(torch.isfinite(o).all() for o in outputs)
    gen = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    loss.backward()
    params = dict(model.named_parameters())  # tied tensors appear once
    missing = [n for n, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in params.values())


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    model = _create(name).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        expected = _outputs(model, inputs)
    zoo.save_pretrained(model, tmp_path / "saved")
    loaded = zoo.load_pretrained(tmp_path / "saved")
    assert not loaded.training and loaded.model_name == name and loaded.cfg == model.cfg
    rebuilt = zoo.create_model(name, pretrained=tmp_path / "saved").eval()
    assert rebuilt.cfg == model.cfg
    with torch.no_grad():
        for other in (loaded, rebuilt):
            for got, want in zip(_outputs(other, inputs), expected, strict=True):
                torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize(
    "name", [n for n in MODELS if zoo.get_config(n).task not in ("masked_image", "masked_speech")]
)
def test_num_classes_or_vocab_size_override_reaches_the_head(name: str) -> None:
    key = "num_classes" if zoo.get_config(name).task == "classification" else "vocab_size"
    model = _create(name, **{key: 7}).eval()
    assert getattr(model.cfg, key) == 7
    inputs = _inputs(model)
    with torch.no_grad():
        outputs = _outputs(model, inputs)
    assert [tuple(o.shape) for o in outputs] == _expected_shapes(model, inputs, 7)


# The variants built on each shared core size, one per family.
SHARED_CORES = {
    "test": (
        "test_vit", "test_mt_transformer", "test_asr_transformer", "test_gpt", "test_bert",
        "test_mae",
    ),
    "mini": (
        "vit_mini_patch4_28", "mt_transformer_mini", "asr_transformer_ctc_mini", "gpt_mini",
        "bert_mini", "mae_vit_mini_patch4_28",
    ),
}


@pytest.mark.parametrize("size", list(SHARED_CORES))
def test_shared_core_sizes_have_equal_keys_shapes_and_settings(size: str) -> None:
    models = [zoo.create_model(name) for name in SHARED_CORES[size]]
    # equal but for the training regularisation (dropout rates), which is each family's own
    arch = [dataclasses.replace(m.cfg.core, dropout=0, attn_drop=0, drop_path=0) for m in models]
    assert all(a == arch[0] for a in arch)
    cores = [m.core.state_dict() for m in models]
    for core, model in zip(cores, models):
        assert list(core) == list(cores[0])
        assert all(core[k].shape == cores[0][k].shape for k in core)
        assert {k for k in model.state_dict() if k.startswith("core.")} == {
            f"core.{k}" for k in core
        }
    for model in models[1:]:  # one strict load_state_dict moves a core
        assert not all(torch.equal(v, model.core.state_dict()[k]) for k, v in cores[0].items())
        model.core.load_state_dict(cores[0])


def test_a_moved_core_gives_identical_outputs_in_every_family() -> None:
    vit, *others = (zoo.create_model(n).eval() for n in SHARED_CORES["test"])
    for other in others:
        other.core.load_state_dict(vit.core.state_dict())
    tokens = torch.randn(2, 9, vit.cfg.core.dim)
    mask = torch.tensor([[False] * 9, [False] * 6 + [True] * 3])
    with torch.no_grad():
        want = vit.core(tokens, mask)
        for other in others:
            torch.testing.assert_close(other.core(tokens, mask), want, atol=0, rtol=0)


@pytest.mark.parametrize("name", SHARED_CORES["test"])
def test_forward_features_returns_the_core_tokens_and_their_mask(name: str) -> None:
    model = _create(name).eval()
    inputs = _inputs(model)
    # the source alone for translation, audio and lengths for speech
    features, mask = model.forward_features(*inputs[: 2 if name == "test_asr_transformer" else 1])
    assert features.ndim == 3 and features.shape[0] == 2
    assert features.shape[-1] == model.cfg.core.dim
    assert mask is None or (mask.dtype == torch.bool and mask.shape == features.shape[:2])


def _saved_test_vit(tmp_path: Path) -> tuple[nn.Module, Path]:
    model = _create("test_vit", depth=2)
    return model, zoo.save_pretrained(model, tmp_path / "saved")


def test_truncated_weights_give_an_error_naming_the_file(tmp_path: Path) -> None:
    _, directory = _saved_test_vit(tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for load in (zoo.load_pretrained, lambda d: zoo.create_model("test_vit", pretrained=d)):
        with pytest.raises(CheckpointError, match="corrupt") as err:
            load(directory)
        assert str(weights) in str(err.value)


@pytest.mark.parametrize("depth", [1, 3])
def test_config_that_does_not_fit_the_weights_names_file_and_first_key(tmp_path, depth):
    model, directory = _saved_test_vit(tmp_path)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["depth"] = depth
    config_path.write_text(json.dumps(config))
    saved_keys = list(load_file(directory / "model.safetensors"))
    expected_keys = list(zoo.create_model("test_vit", depth=depth).state_dict())
    if depth < 2:  # the file has a layer too many, the first is unexpected
        first = next(k for k in saved_keys if k not in expected_keys)
    else:  # the file lacks the model's last layer
        first = next(k for k in expected_keys if k not in saved_keys)
    assert first.startswith(f"core.blocks.{min(depth, 2)}.")
    with pytest.raises(CheckpointError) as err:
        zoo.load_pretrained(directory)
    message = str(err.value)
    assert str(directory / "model.safetensors") in message and repr(first) in message
