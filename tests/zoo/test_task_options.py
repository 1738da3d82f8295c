"""The recipe checker on the tasks' typed options: the task's own sections as its dataclasses, and
a misspelt dataset, option or section, a moved key or a value out of its bounds as one sentence
naming the key (the task tests build their options without zoo, so these checks live here)."""

from __future__ import annotations

import pytest

from tests.zoo.test_config import MINIMAL, SPEECH, TRANSLATION, _error, _with
from zoo.config import ConfigError, apply_overrides, recipe_from_dict, recipe_to_dict


def recipe(task: str, model: str, **sections: object) -> object:
    return recipe_from_dict({"task": task, "model": {"name": model}, "train": {"max_steps": 1},
                             **sections})


def test_classification_dataset_and_augment_keys_are_named() -> None:
    with pytest.raises(ValueError, match="did you mean 'fashion_mnist'"):
        recipe("classification", "test_vit", data={"dataset": "fashion-mnist"})
    with pytest.raises(ValueError, match="augment.mixpu' .*did you mean 'augment.mixup'"):
        recipe("classification", "test_vit", augment={"mixpu": 0.2})


def test_translation_options_are_named() -> None:
    with pytest.raises(ValueError, match="did you mean 'data.options.max_sentence_tokens'"):
        recipe("translation", "test_mt_transformer", data={"options": {"max_sentence_token": 5}})
    with pytest.raises(ValueError, match="empty_lines' .*must be one of 'skip', 'error'"):
        recipe("translation", "test_mt_transformer",
               data={"dataset": "parallel", "options": {"empty_lines": "ignore"}})


def test_speech_data_options_are_named() -> None:
    with pytest.raises(ValueError, match="test_speaker"):
        recipe("speech_recognition", "test_asr_transformer",
               data={"options": {"test_speaker": ["theo"]}})


def test_speech_extra_train_count_is_bounded() -> None:
    options = {"extra_train": "more.tsv", "extra_train_count": 0}
    with pytest.raises(ValueError, match="extra_train_count' .*must be >= 1, got 0"):
        recipe("speech_recognition", "test_asr_transformer",
               data={"dataset": "manifest", "root": "m.tsv", "options": options})


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        ({"lm_weight": -1}, "'decode.lm_weight' .* must be >= 0, got -1.0"),
        ({"lm_weight": 1, "lm_order": 0}, "'decode.lm_order' .* must be >= 1, got 0"),
        ({"lm_texts": "corpus.txt"}, "'decode.lm_texts' .* expects a list of a string"),
        ({"lm_lexicon": ["words.txt"]}, "'decode.lm_lexicon' .* expects a string or null"),
        ({"lm_lexicon_size": 0}, "'decode.lm_lexicon_size' .* must be >= 1"),
        ({"lm_lexicon_mix": 1.0}, r"'decode.lm_lexicon_mix' .* must be < 1, got 1.0"),
    ],
)
def test_bad_speech_lm_options_are_named(decode: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recipe("speech_recognition", "test_asr_transformer", decode=decode)


# --- the task's own sections -----------------------------------------------------------------


def test_task_sections_are_the_task_dataclasses_with_their_defaults():
    from tasks.speech.options import SpeechData, SpeechDecoding, SpeechLoss

    recipe = recipe_from_dict(SPEECH)
    assert recipe.data.options == SpeechData() and recipe.loss == SpeechLoss(ctc_weight=0.3)
    assert recipe.decode == SpeechDecoding() and recipe.decode.beam_size == 1
    vision = recipe_from_dict(MINIMAL)
    assert vision.decode is None and vision.loss is None and vision.augment.policy == "none"
    d = _with(SPEECH, augment={"speed_perturb": [0.9, 1, 1.1]}, decode={"lm_texts": ["a.txt"]})
    recipe = recipe_from_dict(d)
    assert recipe.augment.speed_perturb == (0.9, 1.0, 1.1) and recipe.decode.lm_texts == ("a.txt",)
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    assert recipe_to_dict(recipe)["augment"]["speed_perturb"] == [0.9, 1.0, 1.1]


@pytest.mark.parametrize(
    ("base", "sections", "key", "nearest"),
    [
        (SPEECH, {"decode": {"lm_wieght": 1}}, "decode.lm_wieght", "decode.lm_weight"),
        (SPEECH, {"augment": {"speed_pertrub": [1.0]}}, "augment.speed_pertrub",
         "augment.speed_perturb"),
        (MINIMAL, {"data": {"options": {"num_trian": 5}}}, "data.options.num_trian",
         "data.options.num_train"),
        (TRANSLATION, {"tokenizer": {"model_typ": "bpe"}}, "tokenizer.model_typ",
         "tokenizer.model_type"),
        (MINIMAL, {"augmnet": {}}, "augmnet", "augment"),
    ],
)
def test_unknown_task_key_suggests_the_nearest_in_its_section(base, sections, key, nearest):
    msg = _error(_with(base, **sections))
    assert msg == f"unknown key '{key}' in x.yaml; did you mean '{nearest}'?"


@pytest.mark.parametrize(
    ("base", "sections", "old", "new"),
    [
        (SPEECH, {"data": {"options": {"lm_weight": 0.5}}}, "data.options.lm_weight",
         "decode.lm_weight"),
        (SPEECH, {"data": {"options": {"ctc_weight": 0.5}}}, "data.options.ctc_weight",
         "loss.ctc_weight"),
        (SPEECH, {"data": {"options": {"seed": 1}}}, "data.options.seed", "data.options.data_seed"),
        (SPEECH, {"data": {"options": {"vocab": "ab"}}}, "data.options.vocab",
         "tokenizer.characters"),
        (SPEECH, {"eval": {"beam_size": 4}}, "eval.beam_size", "decode.beam_size"),
        (SPEECH, {"data": {"sample_rate": 8000}}, "data.sample_rate",
         "model.overrides.sample_rate"),
        (TRANSLATION, {"data": {"vocab_size": 300}}, "data.vocab_size", "tokenizer.vocab_size"),
        (TRANSLATION, {"data": {"options": {"max_len": 50}}}, "data.options.max_len",
         "data.options.max_sentence_tokens"),
        (TRANSLATION, {"data": {"options": {"len_penalty": 0.6}}}, "data.options.len_penalty",
         "decode.len_penalty"),
        (MINIMAL, {"data": {"image_size": 32}}, "data.image_size", "model.overrides.img_size"),
        (MINIMAL, {"data": {"options": {"image_size": 16}}}, "data.options.image_size",
         "data.options.native_size"),
        (MINIMAL, {"data": {"options": {"augment": "flip"}}}, "data.options.augment",
         "augment.policy"),
        (MINIMAL, {"data": {"options": {"mixup": 0.8}}}, "data.options.mixup", "augment.mixup"),
    ],
)
def test_a_moved_key_names_its_new_place(base, sections, old, new):
    assert _error(_with(base, **sections)) == f"key '{old}' in x.yaml moved to '{new}'"
    value = "1" if old != "data.options.vocab" else "ab"
    with pytest.raises(ConfigError) as info:
        apply_overrides(base, [f"{old}={value}"])
    assert str(info.value) == f"key '{old}' in override '{old}={value}' moved to '{new}'"


@pytest.mark.parametrize(
    ("base", "sections", "key", "expected"),
    [
        (SPEECH, {"decode": {"beam_size": 0}}, "decode.beam_size", "must be >= 1, got 0"),
        (SPEECH, {"loss": {"ctc_weight": 1.5}}, "loss.ctc_weight", "must be <= 1, got 1.5"),
        (SPEECH, {"loss": {"ctc_weight": "high"}}, "loss.ctc_weight", "expects a number"),
        (SPEECH, {"augment": {"speed_perturb": [1.0, 3]}}, "augment.speed_perturb[1]",
         "must be <= 2.0, got 3.0"),
        (SPEECH, {"augment": {"noise_snr": [10]}}, "augment.noise_snr", "a list of 2"),
        (SPEECH, {"decode": {"lm_texts": "corpus.txt"}}, "decode.lm_texts", "expects a list"),
        (SPEECH, {"decode": {"lm_lexicon_mix": 1}}, "decode.lm_lexicon_mix", "must be < 1"),
        (TRANSLATION, {"data": {"options": {"max_sentence_tokens": 1}}},
         "data.options.max_sentence_tokens", "must be >= 2, got 1"),
        (TRANSLATION, {"tokenizer": {"model_type": "unigramm"}}, "tokenizer.model_type",
         "must be one of 'bpe', 'unigram', got 'unigramm' (str); did you mean 'unigram'?"),
        (MINIMAL, {"augment": {"policy": "flipp"}}, "augment.policy", "did you mean 'flip'?"),
        (MINIMAL, {"data": {"options": {"num_classes": 11}}}, "data.options.num_classes",
         "must be <= 10"),
    ],
)
def test_task_settings_are_typed_and_bounded(base, sections, key, expected):
    msg = _error(_with(base, **sections))
    assert f"key '{key}' in x.yaml" in msg and expected in msg
    with pytest.raises(ConfigError, match="key 'decode.beam_size' .*an int"):
        apply_overrides(SPEECH, ["decode.beam_size=two"])


def test_a_dataclass_checks_how_its_fields_fit_together():
    msg = _error(_with(SPEECH, augment={"noise_snr": [30, 10]}))
    assert msg == "augment in x.yaml: noise_snr must be [low, high] in dB with low <= high, " \
                  "got [30.0, 10.0]"
    msg = _error(_with(SPEECH, data={"dataset": "manifest", "options": {"manifests": {"x": "a"}}}))
    assert "data.options in x.yaml: manifests needs a 'train' file" in msg


def test_a_section_the_task_does_not_have_is_an_error():
    msg = _error(_with(decode={"beam_size": 4}))
    assert msg == ("key 'decode' in x.yaml is not a section of task 'classification' "
                   "(its sections: data.options, augment)")
    with pytest.raises(ConfigError, match="not a section of task 'classification'"):
        apply_overrides(MINIMAL, ["loss.ctc_weight=0.5"])
    assert recipe_from_dict(_with(decode=None)).decode is None  # empty is fine


def test_dataset_names_and_the_options_of_another_dataset():
    msg = _error(_with(data={"dataset": "fashion-mnist"}))
    assert "key 'data.dataset' in x.yaml must be one of 'synthetic'" in msg
    assert msg.endswith("did you mean 'fashion_mnist'?")
    msg = _error(_with(data={"dataset": "fashion_mnist", "options": {"num_train": 5}}))
    assert msg == ("key 'data.options.num_train' in x.yaml applies to dataset 'synthetic', "
                   "not 'fashion_mnist'")
    msg = _error(_with(SPEECH, data={"options": {"test_fraction": 0.1}}))
    assert "applies to dataset 'manifest' or 'kathleen_arctic', not 'synthetic'" in msg
    # the default value changes nothing, so a saved recipe (every key written) loads again
    recipe = recipe_from_dict(_with(data={"dataset": "mnist", "options": {"num_train": 6000}}))
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
