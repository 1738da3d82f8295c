"""Translation figures: cross-attention alignments of the model's own greedy translation."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.base import get_task
from tasks.translation.tokenizer import Tokenizer
from tests.tasks.test_translation import make_recipe
from tests.zoo.interpret.test_figures import bar_labels, capture_figures, is_png
from zoo import create_model
from zoo.interpret import translation
from zoo.interpret.extract import AttentionExtract
from zoo.interpret.translation import alignments, translation_figures

SENTENCES = ["one two three", "four five six seven", "eight nine ten", "a red house"] * 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    Tokenizer.train(SENTENCES, vocab_size=40).save(folder / "spm.model")
    task = get_task("translation")(make_recipe())
    task.load_extra(folder, {"tokenizer": "spm.model"})
    torch.manual_seed(0)
    model = create_model("test_mt_transformer", vocab_size=len(task.tokenizer), max_len=12)
    return task, model.eval()


def test_alignments_are_the_weights_seen_while_decoding_greedily(setup) -> None:
    task, model = setup
    seen = alignments(task, model, "one two three")
    assert seen.source[-1] == "</s>" and seen.outputs[-1] == "</s>" and seen.inputs[0] == "<s>"
    cross = seen.stack("cross_attn")
    t, s = len(seen.outputs), len(seen.source)
    assert len(cross) == 2 and cross[1].shape == (4, t, s)
    assert seen.maps["core.blocks.0.attn"].shape == (4, s, s)
    assert seen.stack("attn")[0].shape == (4, t, t)
    torch.testing.assert_close(cross[1].sum(-1), torch.ones(4, t))
    name = "decoder.blocks.1.cross_attn"
    with AttentionExtract(model, [name]) as found:  # the search, step by step, cached
        hyps = task.translate(model, ["one two three"], beam_size=1)
    steps = torch.cat(found.weights[name], dim=2)[0]  # (H, steps, S)
    torch.testing.assert_close(steps, cross[1], atol=1e-5, rtol=0)
    assert seen.text == task.tokenizer.decode([hyps[0][0].tokens])[0]


def test_translation_figures_label_subwords_on_both_axes(setup, tmp_path, monkeypatch) -> None:
    figures = capture_figures(monkeypatch)
    task, model = setup
    paths = translation_figures(task, model, ["one two three"], tmp_path, layer=1)
    names = ["sentence0_layers.png", "sentence0_layer1_heads.png", "sentence0.html"]
    assert [p.name for p in paths] == names
    assert is_png(paths[0]) and is_png(paths[1])
    seen = alignments(task, model, "one two three")
    layers, heads = figures
    panel = layers.axes[0]
    assert panel.get_title() == "layer 0, mean of heads"
    assert panel.get_xlabel() == "source subword"
    assert panel.get_ylabel() == "target subword (greedy)"
    assert [t.get_text() for t in panel.get_xticklabels()] == seen.source
    assert [t.get_text() for t in panel.get_yticklabels()] == seen.outputs
    assert [ax.get_title() for ax in heads.axes[:4]] == [f"layer 1, head {h}" for h in range(4)]
    assert bar_labels(layers) == ["attention weight"]
    assert layers._suptitle.get_text().startswith("one two three\n→ ")
    with pytest.raises(ValueError, match="--layer 2 is out of range: the decoder has 2 layers"):
        translation_figures(task, model, ["one"], tmp_path, layer=2)


def test_the_head_view_embeds_every_attention_as_json(setup, tmp_path) -> None:
    task, model = setup
    path = translation_figures(task, model, ["one two three"], tmp_path)[-1]
    page = path.read_text()
    data = json.loads(page.split("const DATA = ")[1].split(";\n")[0].replace("<\\/", "</"))
    assert [g["name"] for g in data] == ["encoder self-attention", "decoder self-attention",
                                         "cross-attention"]
    seen = alignments(task, model, "one two three")
    cross = data[2]
    assert cross["queries"] == seen.outputs and cross["keys"] == seen.source
    assert len(cross["maps"]) == 2 and cross["heads"] == [[0, 1, 2, 3]] * 2
    torch.testing.assert_close(torch.tensor(cross["maps"][1]), seen.stack("cross_attn")[1],
                               atol=1e-4, rtol=0)
    assert "<script" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_long_sentences_are_cut_with_a_note(setup, monkeypatch) -> None:
    task, model = setup
    monkeypatch.setattr(translation, "MAX_TOKENS", 5)
    seen = alignments(task, model, "one two three four")
    assert len(seen.source) == len(seen.outputs) == 5
    assert seen.maps["core.blocks.1.attn"].shape == (4, 5, 5)
    assert seen.maps["decoder.blocks.0.cross_attn"].shape == (4, 5, 5)
    source = len(task.tokenizer.encode(["one two three four"])[0]) + 1  # with EOS
    assert seen.cut.startswith("showing the first 5 of ")
    assert seen.cut.endswith(f"and 5 of {source} source tokens")
