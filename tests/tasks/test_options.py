"""The typed task options: tasks/options.py and each task's options module (the recipe checker
that reads them is tested in tests/zoo/test_config.py)."""

from __future__ import annotations

import dataclasses
import typing
from types import SimpleNamespace

import pytest

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import TASKS, get_task
from tasks.classification import transforms as classification_transforms
from tasks.classification.model import ViTConfig
from tasks.masked_image import MAEConfig
from tasks.masked_speech import MaskedSpeechConfig
from tasks.options import SECTIONS, setting
from tasks.speech.model import ASRConfig
from tasks.speech.options import SpeechAugment, SpeechData, SpeechDecoding
from tasks.translation import data as translation_data
from tasks.translation import tokenizer
from tasks.translation.model import Seq2SeqConfig
from tasks.translation.options import TranslationData, TranslationTokenizer

# the tasks of the tasks package (a multitask run, zoo.multitask, composes these and has no
# options of its own)
TASK_NAMES = sorted(n for n, t in TASKS.items() if t.__module__.startswith("tasks."))
MODEL_CONFIGS = {
    "classification": ViTConfig,
    "translation": Seq2SeqConfig,
    "speech_recognition": ASRConfig,
    "masked_image": MAEConfig,
    "masked_speech": MaskedSpeechConfig,
}


def test_setting_keeps_bounds_and_datasets_as_metadata():
    @dataclasses.dataclass
    class Options:
        size: int = setting(32, ge=1, datasets=["synthetic"])
        share: float = setting(0.5, gt=0, lt=1)
        name: str = setting("x")

    fields = {f.name: f for f in dataclasses.fields(Options)}
    assert dict(fields["size"].metadata) == {"ge": 1, "datasets": ("synthetic",)}
    assert dict(fields["share"].metadata) == {"gt": 0, "lt": 1}
    assert dict(fields["name"].metadata) == {} and Options() == Options(32, 0.5, "x")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_declares_sound_option_dataclasses(name):
    task = get_task(name)
    assert set(task.option_types) <= set(SECTIONS) and task.dataset_names
    for cls in task.option_types.values():
        cls()  # every setting has a default
        typing.get_type_hints(cls)  # the checker can read every annotation
        for f in dataclasses.fields(cls):
            assert set(f.metadata.get("datasets", ())) <= set(task.dataset_names), f.name


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_moved_key_names_a_place_that_exists_and_left_its_old_one(name):
    task = get_task(name)
    for old, new in task.moved_keys.items():
        *section, key = new.split(".")
        if section == ["model", "overrides"]:
            assert key in {f.name for f in dataclasses.fields(MODEL_CONFIGS[name])}, new
        else:
            fields = {f.name for f in dataclasses.fields(task.option_types[".".join(section)])}
            assert key in fields, new
        *old_section, old_key = old.split(".")
        if ".".join(old_section) in task.option_types:
            fields = dataclasses.fields(task.option_types[".".join(old_section)])
            assert old_key not in {f.name for f in fields}, old


def test_choices_are_those_the_code_accepts():
    hints = typing.get_type_hints
    policy = hints(get_task("classification").option_types["augment"])["policy"]
    assert typing.get_args(policy) == classification_transforms.AUGMENTS
    assert typing.get_args(hints(TranslationTokenizer)["model_type"]) == tokenizer.MODEL_TYPES
    assert typing.get_args(hints(TranslationData)["empty_lines"]) == translation_data.EMPTY_LINES


def test_defaults_are_the_settings_the_tasks_had():
    # moved out of hand-written code; the same recipe must give the same data and decoding
    assert (TranslationData().max_sentence_tokens, TranslationData().batch_by) == (100, "tokens")
    assert TranslationTokenizer() == TranslationTokenizer(8000, "bpe", 1.0)
    decoding = get_task("translation").option_types["decode"]()
    assert (decoding.beam_size, decoding.len_penalty, decoding.max_len_a, decoding.max_len_b) \
        == (1, 1.0, 1.2, 10)
    speech = SpeechDecoding()
    assert (speech.lm_weight, speech.lm_order, speech.lm_lexicon_size, speech.lm_lexicon_mix) \
        == (0.0, 6, 100_000, 0.7)
    assert get_task("speech_recognition").option_types["loss"]().ctc_weight == 0.3
    images = get_task("classification").option_types["data.options"]()
    assert (images.num_train, images.native_size, images.channels, images.data_seed) == \
        (6000, 32, 3, 0)


def test_speech_data_takes_one_path_or_many_and_checks_manifests():
    data = SpeechData(test_speakers="theo", extra_train="a.tsv")
    assert (data.test_speakers, data.extra_train) == (("theo",), ("a.tsv",))
    assert SpeechData(test_speakers=("a", "b")).test_speakers == ("a", "b")
    assert SpeechData(manifests={"train": "a.tsv", "test": "b.tsv"}).manifests["test"] == "b.tsv"
    with pytest.raises(ValueError, match="manifests needs a 'train' file .*got \\['val'\\]"):
        SpeechData(manifests={"val": "a.tsv"})
    with pytest.raises(ValueError, match="digits must be \\[min, max\\]"):
        SpeechData(digits=(5, 2))
    with pytest.raises(ValueError, match="noise_snr must be \\[low, high\\]"):
        SpeechAugment(noise_snr=(30.0, 10.0))


def test_a_task_reads_its_sections_or_their_defaults():
    data = SimpleNamespace(dataset="synthetic", root=None, max_samples=8, options=None)
    recipe = SimpleNamespace(
        data=data, train=SimpleNamespace(seed=0, label_smoothing=0.0),
        model=SimpleNamespace(overrides={}), decode=SpeechDecoding(beam_size=4),
    )
    task = get_task("speech_recognition")(recipe)
    assert task.decode.beam_size == 4 and task.opts == SpeechData() and task.ctc_weight == 0.3
    assert task.prepare() == {"vocab_size": 12} and len(task.datasets()["val"]) == 8
    recipe.decode = {"beam_size": 4}
    with pytest.raises(TypeError, match="'decode' .* must be a SpeechDecoding, got dict"):
        get_task("speech_recognition")(recipe)
