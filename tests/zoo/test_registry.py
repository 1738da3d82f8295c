"""The model registry: names, overrides, filters, info."""


from __future__ import annotations

import dataclasses
import json

import pytest

import zoo
from encoders.core import CoreConfig
from tasks.classification import ViTConfig
from zoo import registry

FAMILIES = {
    "classification": ("vision", "vit_"),
    "translation": ("text", "mt_"),
    "speech_recognition": ("speech", "asr_"),
    "language_modeling": ("text", "gpt_"),
    "masked_lm": ("text", "bert_"),
    "masked_image": ("vision", "mae_"),
    "masked_speech": ("speech", "masked_asr_"),
}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry that a test may add to without leaking names."""
    models = dict(registry._MODELS)
    monkeypatch.setattr(registry, "_MODELS", models)
    return models


def test_register_model_uses_the_function_name(scratch_registry: dict) -> None:
    @registry.register_model
    def test_scratch_vit() -> ViTConfig:
        core = CoreConfig(dim=8, depth=1, num_heads=2)
        return ViTConfig(img_size=8, patch_size=4, core=core, num_classes=3)

    assert "test_scratch_vit" in zoo.list_models()
    model = zoo.create_model("test_scratch_vit")
    assert model.model_name == "test_scratch_vit" and model.cfg.num_classes == 3


def test_registering_a_name_twice_raises(scratch_registry: dict) -> None:
    def test_vit() -> ViTConfig:
        return ViTConfig()

    with pytest.raises(ValueError, match="model 'test_vit' is already registered"):
        registry.register_model(test_vit)
    assert scratch_registry["test_vit"] is not test_vit  # the original stays


@pytest.mark.parametrize("call", [zoo.create_model, zoo.get_config, zoo.model_info])
def test_unknown_model_lists_the_closest_names(call) -> None:
    with pytest.raises(ValueError, match="unknown model 'vit_tiny_patch16_22'") as err:
        call("vit_tiny_patch16_22")
    assert "closest: vit_tiny_patch16_224" in str(err.value)


def test_unknown_model_without_close_names_points_to_zoo_list() -> None:
    with pytest.raises(ValueError, match="unknown model 'qqqqqqqqqqqqqqqq'; see `zoo list`"):
        zoo.create_model("qqqqqqqqqqqqqqqq")


def test_unknown_override_names_the_key_and_its_nearest_spelling() -> None:
    with pytest.raises(TypeError, match="model 'test_vit' has no setting 'num_class'") as err:
        zoo.create_model("test_vit", num_class=3)
    assert "did you mean 'num_classes'?" in str(err.value)
    with pytest.raises(TypeError, match="has no setting 'zzz'"):
        zoo.get_config("test_mt_transformer", zzz=1)


def test_overrides_reach_the_config_and_lists_become_tuples() -> None:
    cfg = zoo.get_config("test_vit", depth=1, mean=[0.1, 0.2, 0.3])
    assert cfg.core.depth == 1 and cfg.mean == (0.1, 0.2, 0.3)
    assert zoo.get_config("test_vit").core.depth == 2  # the variant itself is unchanged


def test_core_overrides_take_a_size_a_dict_or_single_settings() -> None:
    assert zoo.get_config("test_vit", core="mini").core == zoo.get_config("vit_mini_patch4_28").core
    cfg = zoo.get_config("test_vit", core={"dim": 32, "depth": 1, "num_heads": 2}, depth=3)
    assert (cfg.core.dim, cfg.core.depth, cfg.core.num_heads) == (32, 3, 2)
    with pytest.raises(TypeError, match="the core has no setting 'dpeth'; did you mean 'depth'"):
        zoo.get_config("test_vit", core={"dpeth": 1})
    with pytest.raises(ValueError, match="unknown core size 'huge'"):
        zoo.get_config("test_vit", core="huge")


def test_create_model_tags_the_model_with_its_name_and_config() -> None:
    model = zoo.create_model("test_vit", num_classes=4)
    assert model.model_name == "test_vit"
    assert model.cfg == zoo.get_config("test_vit", num_classes=4)
    assert len(model.core.blocks) == model.cfg.core.depth


def test_every_family_registers_a_test_variant_and_names_follow_the_family() -> None:
    names = zoo.list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    for task, (modality, prefix) in FAMILIES.items():
        family = zoo.list_models(task=task)
        assert family and all(n.startswith((prefix, "test_")) for n in family)
        assert set(family) <= set(zoo.list_models(modality=modality))
        assert sum(n.startswith("test_") for n in family) == 1
    for modality in {m for m, _ in FAMILIES.values()}:  # a modality's models are its families'
        tasks = [t for t, (m, _) in FAMILIES.items() if m == modality]
        assert zoo.list_models(modality=modality) == sorted(
            n for t in tasks for n in zoo.list_models(task=t)
        )


def test_list_models_filters() -> None:
    vits = zoo.list_models("vit_*")
    assert vits and all(n.startswith("vit_") for n in vits)
    assert "vit_tiny_patch16_224" in vits and "test_vit" not in vits
    on_224 = zoo.list_models("*_224", task="classification", modality="vision")
    assert on_224 == [n for n in vits if n.endswith("_224")]
    assert zoo.list_models("vit_*", task="translation") == []
    assert zoo.list_models("test_*") == [
        "test_asr_transformer", "test_bert", "test_gpt", "test_mae", "test_masked_asr",
        "test_mt_transformer", "test_vit"
    ]
    assert zoo.list_models("nothing*") == []


def test_model_info_fields() -> None:
    info = zoo.model_info("test_mt_transformer")
    assert set(info) == {"name", "task", "modality", "num_params", "config"}
    assert (info["name"], info["task"], info["modality"]) == (
        "test_mt_transformer",
        "translation",
        "text",
    )
    cfg = zoo.get_config("test_mt_transformer")
    assert info["config"] == dataclasses.asdict(cfg)
    model = zoo.create_model("test_mt_transformer")
    assert info["num_params"] == sum(p.numel() for p in model.parameters())  # tied: once
    json.dumps(info)  # the CLI prints it


def test_a_wrong_type_of_override_names_the_key() -> None:
    with pytest.raises(TypeError, match=r"key 'dim' in model 'test_vit' expects an int, got '64'"):
        zoo.create_model("test_vit", dim="64")


def test_a_model_too_large_for_memory_is_refused_before_allocating() -> None:
    with pytest.raises(
        ValueError,
        match=r"model 'test_vit' with these settings needs [\d,]+ GiB "
        r"for its weights, more than this machine's .*'head.fc"
        r".weight' of shape \(100000000000, ",
    ):
        zoo.create_model("test_vit", num_classes=10**11)


def test_a_translation_batch_whose_sides_disagree_is_one_sentence() -> None:
    import torch

    model = zoo.create_model("test_mt_transformer").eval()
    src, tgt_in = torch.randint(4, 20, (2, 5)), torch.randint(4, 20, (3, 4))
    with pytest.raises(
        ValueError,
        match=r"^the inputs of Seq2SeqTransformer disagree on the "
        r"batch size \(their first axis\): src \(2, 5\), "
        r"tgt_in \(3, 4\)$",
    ):
        model(src, tgt_in=tgt_in)


def test_one_dimensional_audio_is_refused_by_the_adapter_before_the_model_reads_it() -> None:
    import torch

    model = zoo.create_model("test_asr_transformer").eval()
    with pytest.raises(
        ValueError,
        match=r"expected a waveform batch of shape \(B, S\), got "
        r"\(16000,\)",
    ):
        model(torch.randn(16000))
    with pytest.raises(ValueError, match=r"audio \(2, 16000\), lengths \(3,\)"):
        model(torch.randn(2, 16000), torch.tensor([16000, 16000, 16000]))
