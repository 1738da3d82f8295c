"""Transfer: init_from (parts of any saved model into any family), freeze presets and patterns,
and the engine's use of both (frozen parameters bit-identical and out of the optimizer, exact
resume, the events in metrics.jsonl). Core keys and shapes across families at each shared size
are tested in test_models_registered.py."""

from __future__ import annotations

import copy
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

import zoo
from tests.zoo.helpers import crash_and_resume, tiny_vit
from zoo.config import ConfigError, load_recipe, recipe_from_dict
from zoo.engine import Trainer, train
from zoo.errors import CheckpointError
from zoo.records import read_metrics
from zoo.saved_model import save_pretrained
from zoo.transfer import PRESETS, freeze, frozen_batchnorms, init_from

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "transfer").glob("*.yaml"))


def create(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model(name, **overrides)


def saved(tmp_path: Path, name: str, seed: int = 1, **overrides: Any) -> tuple[Path, dict]:
    """A saved model of ``name`` (another seed than the targets') and its state dict."""
    model = create(name, seed, **overrides)
    directory = save_pretrained(model, tmp_path / f"{name}_{seed}")
    return directory, {k: v.clone() for k, v in model.state_dict().items()}


def one_sentence(message: str) -> None:
    assert "\n" not in message and not re.search(r"\. [A-Z]", message), message


# ---------------------------------------------------------------------------------------------
# init_from


@pytest.mark.parametrize("target", ["test_asr_transformer", "test_mt_transformer"])
def test_init_from_loads_exactly_the_named_part(tmp_path: Path, target: str) -> None:
    source, weights = saved(tmp_path, "test_vit")
    model, fresh = create(target), create(target).state_dict()
    event = init_from(model, source, ["core"])
    for key, value in model.state_dict().items():
        want = weights[key] if key.startswith("core.") else fresh[key]
        assert torch.equal(value, want), key
    assert event["loaded"] == [k for k in weights if k.startswith("core.")]
    assert event["fresh"] == [] and event["source_model"] == "test_vit"


def test_a_masked_speech_encoder_initialises_the_conformer_recognizer_exactly(
    tmp_path: Path,
) -> None:
    """configs/pretrain/masked_speech_kathleen_74min.yaml's fine-tune: parts [adapter, core]."""
    source, weights = saved(tmp_path, "masked_asr_conformer_tiny")
    model = create("asr_conformer_ctc_tiny")
    event = init_from(model, source, ["adapter", "core"])
    encoder = [k for k in model.state_dict() if k.startswith(("adapter.", "core."))]
    assert event["loaded"] == encoder and event["fresh"] == []
    assert all(torch.equal(model.state_dict()[k], weights[k]) for k in encoder)


def test_init_from_a_translation_model_takes_core_and_decoder(tmp_path: Path) -> None:
    source, weights = saved(tmp_path, "test_mt_transformer")
    model, fresh = create("test_mt_transformer"), create("test_mt_transformer").state_dict()
    init_from(model, source, ["core", "decoder"])
    for key, value in model.state_dict().items():
        from_source = key.split(".")[0] in ("core", "decoder")
        assert torch.equal(value, weights[key] if from_source else fresh[key]), key


def test_a_tied_head_loads_and_names_the_tensors_tied_to_it(tmp_path: Path) -> None:
    source, weights = saved(tmp_path, "test_mt_transformer")
    model = create("test_mt_transformer")
    event = init_from(model, source, ["head"])  # the file stores the tied table once
    assert event["loaded"] == ["head.weight"]
    assert set(event["tied"]) == {"src_adapter.embed.weight", "tgt_adapter.embed.weight"}
    assert torch.equal(model.src_adapter.embed.weight, weights["src_adapter.embed.weight"])


def test_fnmatch_parts_pick_tensors_by_name(tmp_path: Path) -> None:
    source, weights = saved(tmp_path, "test_vit")
    model, fresh = create("test_vit"), create("test_vit").state_dict()
    event = init_from(model, source, ["core.blocks.0.*", "adapter.pos_embed"])
    for key, value in model.state_dict().items():
        picked = key.startswith("core.blocks.0.") or key == "adapter.pos_embed"
        assert torch.equal(value, weights[key] if picked else fresh[key]), key
    assert len(event["loaded"]) == 13


def test_a_plain_core_into_a_conformer_names_what_started_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, weights = saved(tmp_path, "test_vit")
    model = create("test_asr_transformer", conformer=True, conv_kernel=3)
    before = copy.deepcopy(model.state_dict())
    with caplog.at_level(logging.INFO, logger="zoo.transfer"):
        event = init_from(model, source, ["core"])
    state = model.state_dict()
    assert event["loaded"] == [k for k in weights if k.startswith("core.")]
    extra = ("norm_ff1", "ff1", "norm_conv", "conv", "norm_out")
    assert event["fresh"] and all(k.split(".")[3] in extra for k in event["fresh"])
    assert set(event["loaded"]) | set(event["fresh"]) == {k for k in state if k.startswith("core.")}
    for key in event["fresh"]:
        assert torch.equal(state[key], before[key]), key
    assert "started fresh (core.blocks.*.norm_ff1 x2" in caplog.text
    assert "core.blocks.*.conv.bn x2" in caplog.text


def test_a_run_directory_is_read_from_its_best_model(tmp_path: Path) -> None:
    source, weights = saved(tmp_path, "test_vit")
    source.rename(tmp_path / "best")
    model = create("test_asr_transformer")
    assert init_from(model, tmp_path, ["core"])["source"] == str(tmp_path / "best")
    assert torch.equal(model.core.norm.weight, weights["core.norm.weight"])


def test_errors_are_one_sentence_naming_the_culprit(tmp_path: Path) -> None:
    source, _ = saved(tmp_path, "test_vit")
    narrow, _ = saved(tmp_path, "test_vit", dim=32, num_heads=2)
    model = create("test_asr_transformer")
    cases = [
        (narrow, ["core"], r"tensor 'core.blocks.0.norm1.weight' has shape \(32,\) in .* but "
                           r"\(64,\) in SpeechRecognizer"),
        (source, ["trunk"], "unknown part 'trunk': SpeechRecognizer has parts adapter, core, "
                            "head, or give an fnmatch pattern"),
        (source, ["core.nothing.*"], "pattern 'core.nothing.*' matches no tensor"),
        (source, ["adapter"], "part 'adapter' of .*test_vit.* shares no tensor name"),
        (source, [], "at least one part"),
    ]
    for path, parts, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            init_from(model, path, parts)
        one_sentence(str(err.value))
    with pytest.raises(ValueError, match="no part 'decoder'; its parts are adapter, core, head"):
        init_from(create("test_mt_transformer"), source, ["decoder"])
    with pytest.raises(CheckpointError, match="holds no saved model") as err:
        init_from(model, (tmp_path / "empty").mkdir() or tmp_path / "empty", ["core"])
    one_sentence(str(err.value))


def test_a_failed_init_from_changes_nothing(tmp_path: Path) -> None:
    narrow, _ = saved(tmp_path, "test_vit", dim=32, num_heads=2)
    model = create("test_vit")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError):
        init_from(model, narrow, ["head", "core"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# freeze


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names(model: nn.Module, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.mark.parametrize("name", ["test_vit", "test_asr_transformer", "test_mt_transformer"])
def test_presets_select_the_documented_parameters(name: str) -> None:
    everything = names(create(name), "")
    core = names(create(name), "core.")
    core_norms = {n for n in core if "norm" in n.split(".")[-2]}
    outside_core = everything - core
    expect = {
        "frozen_core": outside_core,
        "fpt": outside_core | core_norms,
        "linear_probe": names(create(name), "head.", "decoder.", "tgt_adapter.")
        # translation: the shared embedding is the output projection, so it trains
        | ({"src_adapter.embed.weight"} if name == "test_mt_transformer" else set()),
    }
    assert set(expect) == set(PRESETS)
    for preset, want in expect.items():
        model = create(name)
        event = freeze(model, preset)
        assert trainable(model) == want, preset
        assert event["trainable_params"] == sum(
            p.numel() for n, p in model.named_parameters() if n in want
        )
        assert set(event["frozen"]) == everything - want


def test_fpt_on_a_conformer_freezes_the_convolution_and_holds_its_batchnorm() -> None:
    model = create("test_asr_transformer", conformer=True, conv_kernel=3)
    freeze(model, "fpt")
    assert not any(p.requires_grad for p in model.core.blocks[0].conv.parameters())
    assert model.core.blocks[0].norm_conv.weight.requires_grad
    assert frozen_batchnorms(model) == [b.conv.bn for b in model.core.blocks]


def test_freeze_patterns_and_their_errors() -> None:
    model = create("test_vit")
    freeze(model, ["core.blocks.0.*", "adapter.patch_embed.*"])
    assert trainable(model) == names(model, "") - names(
        model, "core.blocks.0.", "adapter.patch_embed."
    )
    model = create("test_vit")
    freeze(model, "core.*")  # one pattern, as a string
    assert trainable(model) == names(model, "") - names(model, "core.")
    cases = [
        ("fpt_", "freeze 'fpt_' is not a preset \\(did you mean 'fpt'\\?\\); use one of"),
        (["cor.*"], "freeze pattern 'cor.\\*' matches no parameter of ImageClassifier"),
        (["*"], "freezes every parameter of ImageClassifier; nothing would train"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            freeze(create("test_vit"), spec)
        one_sentence(str(err.value))


# ---------------------------------------------------------------------------------------------
# The engine: model.init_from and train.freeze in a recipe


def tiny(tmp_path: Path, train_: dict | None = None, **model: Any) -> dict[str, Any]:
    """test_vit at depth 1 on 16 px synthetic images, a few steps; ``model``: model section
    settings (init_from, pretrained)."""
    train_ = {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "log_every": 2,
              "keep_last": 3, **(train_ or {})}
    recipe = tiny_vit(data={"num_train": 96}, train=train_, optim={"lr": 2e-3},
                      schedule={"name": "cosine", "warmup_steps": 1})
    recipe["model"].update(model)
    return recipe


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("source")
    recipe = tiny(run, {"max_steps": 2, "eval_every": 2, "checkpoint_every": 2})
    train(recipe_from_dict(recipe), run)
    return run


def final_weights(run: Path) -> dict[str, Tensor]:
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    return load_file(last / "model.safetensors")


def test_frozen_parameters_stay_bit_identical_and_out_of_the_optimizer(
    tmp_path: Path, source_run: Path
) -> None:
    recipe = tiny(tmp_path, {"freeze": "fpt", "ema_decay": 0.5},
                  init_from={"path": str(source_run), "parts": ["core"]})
    recipe["model"]["overrides"]["num_classes"] = 4
    recipe["data"]["options"]["num_classes"] = 4
    trainer = Trainer(recipe_from_dict(recipe), tmp_path / "run")
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, param in trainer.model.named_parameters():
        assert (id(param) in in_optimizer) == param.requires_grad, name
    trainer.fit()
    source, after = load_file(source_run / "best" / "model.safetensors"), final_weights(
        tmp_path / "run")
    frozen = [k for k in after if k.startswith("core.") and "norm" not in k]
    assert frozen and all(torch.equal(after[k], source[k]) for k in frozen)
    assert not torch.equal(after["core.norm.weight"], source["core.norm.weight"])
    events = read_metrics(tmp_path / "run")
    assert [e["type"] for e in events[:2]] == ["init_from", "freeze"]
    assert events[0]["num_loaded"] == len([k for k in source if k.startswith("core.")])
    assert events[1]["trainable_params"] < events[1]["total_params"]


def test_layer_decay_composes_with_freezing(tmp_path: Path) -> None:
    recipe = tiny(tmp_path, {"freeze": "fpt"})
    recipe["optim"]["layer_decay"] = 0.5
    trainer = Trainer(recipe_from_dict(recipe), tmp_path / "run")
    scales = {n: g["lr_scale"] for g in trainer.optimizer.param_groups for n in g["param_names"]}
    assert scales["adapter.pos_embed"] == 0.25 and scales["head.fc.weight"] == 1.0
    assert scales["core.blocks.0.norm1.weight"] == 0.5
    assert "core.blocks.0.attn.qkv.weight" not in scales


def test_resume_of_a_frozen_run_equals_an_uninterrupted_one(
    tmp_path: Path, source_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tiny(tmp_path, {"freeze": "frozen_core", "checkpoint_every": 2, "max_steps": 5},
                  init_from={"path": str(source_run), "parts": ["core"]})
    recipe["model"]["overrides"].update(dropout=0.1)
    recipe = recipe_from_dict(recipe)
    train(recipe, tmp_path / "full")

    crash_and_resume(recipe, tmp_path / "cut", 3, monkeypatch)
    full, cut = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    kinds = [e["type"] for e in read_metrics(tmp_path / "cut")]
    assert kinds.count("init_from") == kinds.count("freeze") == 1


def test_a_frozen_conformer_batchnorm_keeps_its_statistics(tmp_path: Path) -> None:
    recipe = {
        "task": "speech_recognition",
        "model": {"name": "test_asr_transformer",
                  "overrides": {"depth": 1, "conformer": True, "conv_kernel": 3,
                                "spec_augment": False}},
        "data": {"dataset": "synthetic", "max_samples": 8,
                 "options": {"train_utterances": 8, "eval_utterances": 4}},
        "train": {"max_steps": 2, "batch_size": 4, "eval_every": 2, "checkpoint_every": 2,
                  "freeze": "frozen_core"},
    }  # fmt: skip
    trainer = Trainer(recipe_from_dict(recipe), tmp_path / "run")
    before = copy.deepcopy(trainer.model.core.state_dict())
    trainer.fit()
    after = trainer.model.core.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # running_mean/var included


def test_recipe_errors_name_the_setting(tmp_path: Path, source_run: Path) -> None:
    bad_part = tiny(tmp_path, init_from={"path": str(source_run), "parts": ["decoder"]})
    with pytest.raises(ConfigError, match="^model.init_from: unknown part 'decoder'"):
        Trainer(recipe_from_dict(bad_part), tmp_path / "a")
    no_model = tiny(tmp_path, init_from={"path": str(tmp_path)})
    with pytest.raises(CheckpointError, match="^model.init_from: .* holds no saved model"):
        Trainer(recipe_from_dict(no_model), tmp_path / "b")
    with pytest.raises(ConfigError, match="^train.freeze 'fp' is not a preset"):
        Trainer(recipe_from_dict(tiny(tmp_path, {"freeze": "fp"})), tmp_path / "c")


def test_dotted_overrides_set_init_from_and_freeze(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("task: classification\nmodel: {name: test_vit}\ntrain: {max_steps: 1}\n")
    recipe = load_recipe(path, ["model.init_from.path=runs/x", "model.init_from.parts=[core, head]",
                                "train.freeze=fpt"])
    init = recipe.model.init_from
    assert (init.path, init.parts) == ("runs/x", ["core", "head"])
    assert recipe.train.freeze == "fpt"
    assert load_recipe(path, ["model.init_from.path=r"]).model.init_from.parts == ["core"]
    assert load_recipe(path, ["train.freeze=[core.*]"]).train.freeze == ["core.*"]
    with pytest.raises(ConfigError, match="missing required key 'model.init_from.path'"):
        load_recipe(path, ["model.init_from.parts=[core]"])


# ---------------------------------------------------------------------------------------------
# The mini-core recipes of the transfer matrix


def test_the_transfer_recipes_validate_and_share_the_mini_core() -> None:
    assert {p.stem for p in RECIPES} == {
        "vit_mini_fashion_mnist", "asr_mini_fsdd_single", "mt_mini_multi30k"}
    cores = set()
    for path in RECIPES:
        recipe = load_recipe(path)
        cfg = zoo.get_config(recipe.model.name)
        cores.add((cfg.core.dim, cfg.core.depth, cfg.core.num_heads, cfg.core.act))
        assert recipe.data.root.startswith("../shared/data/")
    assert cores == {(128, 6, 4, "gelu")}


@pytest.mark.slow
def test_a_frozen_run_under_two_processes_matches_one(tmp_path: Path) -> None:
    """DDP wraps the model after freezing: the frozen core is not in its buckets (otherwise its
    reducer would wait for gradients that never come), and the losses match one process."""
    recipe = tiny(tmp_path, {"max_steps": 3, "log_every": 1, "freeze": "frozen_core"})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "zoo", "train", str(path), "--out", str(tmp_path / "ddp")]
    ddp = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    train(recipe_from_dict(recipe), tmp_path / "one")
    one, two = (
        [e["loss"] for e in read_metrics(tmp_path / run) if e["type"] == "train"]
        for run in ("one", "ddp")
    )
    assert len(one) == len(two) == 3 and two == pytest.approx(one, rel=1e-4)


DATA = Path(os.environ.get("ZOO_DATA", ROOT.parent / "shared" / "data"))
SMOKE = {  # recipe -> (data folder, overrides that shrink it to seconds)
    "vit_mini_fashion_mnist": ("fashion-mnist", ["data.max_samples=64",
                                                 "data.options.max_eval_samples=64"]),
    "asr_mini_fsdd_single": ("fsdd", ["data.max_samples=32"]),
    "mt_mini_multi30k": ("multi30k", ["data.max_samples=300", "schedule.cooldown_steps=0"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_a_transfer_recipe_starts_from_another_modality_core_and_evaluates(
    name: str, tmp_path: Path, source_mini: Path
) -> None:
    """Each mini recipe on its real data (ZOO_DATA, default ../shared/data), two steps, with the
    core of a vision run of the same size frozen in it (fpt)."""
    folder, shrink = SMOKE[name]
    if not (DATA / folder).is_dir():
        pytest.skip(f"no {DATA / folder}")
    overrides = [f"data.root={DATA / folder}", "train.max_steps=2", "train.eval_every=2",
                 "schedule.warmup_steps=1", "train.device=cpu", *shrink,
                 f"model.init_from.path={source_mini}", "train.freeze=fpt"]
    final = train(load_recipe(ROOT / "configs" / "transfer" / f"{name}.yaml", overrides), tmp_path)
    assert final["best_step"] == 2
    events = read_metrics(tmp_path)
    assert events[0]["type"] == "init_from" and events[0]["num_fresh"] == 0


@pytest.fixture(scope="module")
def source_mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved (untrained) vit_mini_patch4_28: its core is the mini core of every recipe."""
    return save_pretrained(create("vit_mini_patch4_28"), tmp_path_factory.mktemp("vit_mini"))
