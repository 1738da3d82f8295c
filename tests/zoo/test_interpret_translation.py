"""Translation figures: cross-attention alignments of the model's own greedy translation."""

from __future__ import annotations

import pytest
import torch

from tasks.base import get_task
from tasks.translation.tokenizer import Tokenizer
from tests.tasks.test_translation import make_recipe
from tests.zoo.test_interpret_figures import bar_labels, capture_figures, is_png
from zoo import create_model
from zoo.interpret.extract import AttentionExtract
from zoo.interpret.translation import MAX_TOKENS, _cap, alignments, translation_figures

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
    src, tgt, maps, text = alignments(task, model, "one two three")
    assert src[-1] == "</s>" and tgt[-1] == "</s>" and len(maps) == 2
    assert maps[1].shape == (4, len(tgt), len(src))
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(4, len(tgt)))
    name = "decoder.blocks.1.cross_attn"
    with AttentionExtract(model, [name]) as found:  # the search, step by step, cached
        hyps = task.translate(model, ["one two three"], beam=1)
    steps = torch.cat(found.weights[name], dim=2)[0]  # (H, steps, S)
    torch.testing.assert_close(steps, maps[1], atol=1e-5, rtol=0)
    assert text == task.tokenizer.decode([hyps[0][0].tokens])[0]


def test_translation_figures_label_subwords_on_both_axes(setup, tmp_path, monkeypatch) -> None:
    figures = capture_figures(monkeypatch)
    task, model = setup
    paths = translation_figures(task, model, ["one two three"], tmp_path, layer=1)
    assert [p.name for p in paths] == ["sentence0_layers.png", "sentence0_layer1_heads.png"]
    assert all(is_png(p) for p in paths)
    src, tgt, _, _ = alignments(task, model, "one two three")
    layers, heads = figures
    panel = layers.axes[0]
    assert panel.get_title() == "layer 0, mean of heads"
    assert panel.get_xlabel() == "source subword"
    assert panel.get_ylabel() == "target subword (greedy)"
    assert [t.get_text() for t in panel.get_xticklabels()] == src
    assert [t.get_text() for t in panel.get_yticklabels()] == tgt
    assert [ax.get_title() for ax in heads.axes[:4]] == [f"layer 1, head {h}" for h in range(4)]
    assert bar_labels(layers) == ["attention weight"]
    assert layers._suptitle.get_text().startswith("one two three\n→ ")
    with pytest.raises(ValueError, match="--layer 2 is out of range: the decoder has 2 layers"):
        translation_figures(task, model, ["one"], tmp_path, layer=2)


def test_long_sentences_are_cut_with_a_note() -> None:
    src, tgt = [f"s{i}" for i in range(100)], [f"t{i}" for i in range(90)]
    maps = [torch.rand(4, 90, 100)]
    src, tgt, maps, note = _cap(src, tgt, maps)
    assert len(src) == len(tgt) == MAX_TOKENS and maps[0].shape == (4, MAX_TOKENS, MAX_TOKENS)
    assert note == "showing the first 80 of 90 target and 80 of 100 source tokens"
