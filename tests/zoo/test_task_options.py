"""The recipe checker on the tasks' typed options: a misspelt dataset, option or section, or a
value out of its bounds, is one sentence naming the key (the task tests build their options
without zoo, so these checks live here)."""

from __future__ import annotations

import pytest

from zoo.config import recipe_from_dict


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
