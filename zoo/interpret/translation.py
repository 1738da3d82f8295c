"""Attention figures of a translation model: the cross-attention alignment of its own greedy
translation, per decoder layer (heads averaged) and per head of one layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tasks.base import Task
from tasks.translation.tokenizer import BOS_ID, EOS_ID
from zoo.interpret import figures as fg
from zoo.interpret.extract import AttentionExtract, layer_index, original_heads
from zoo.interpret.headview import head_view

MAX_TOKENS = 80  # tokens per side drawn; longer sentences are cut, with a note


def _pieces(task: Task, ids: Sequence[int]) -> list[str]:
    sp = task.tokenizer.sp
    return ["</s>" if i == EOS_ID else sp.id_to_piece(int(i)) for i in ids]


@dataclass
class Attended:
    """A sentence's greedy translation and every attention module's weights (H, Nq, Nk) over
    one teacher-forced pass on it (CPU), capped at ``MAX_TOKENS`` per side."""

    text: str
    source: list[str]  # source pieces, EOS last
    inputs: list[str]  # decoder inputs: <s>, then the translation
    outputs: list[str]  # the pieces produced at those positions, EOS last
    maps: dict[str, Tensor]
    cut: str = ""  # what was left out, for the figures

    def stack(self, kind: str) -> list[Tensor]:
        """Each decoder layer's ``kind`` ("attn" or "cross_attn") weights, in layer order."""
        names = [n for n in self.maps if n.startswith("decoder.") and n.endswith(f".{kind}")]
        return [self.maps[n] for n in names]


@torch.no_grad()
def alignments(task: Task, model: nn.Module, sentence: str) -> Attended:
    """The greedy translation of ``sentence`` and the attention while producing it, read from
    one teacher-forced pass on it (the weights of the cached search: the decoder is causal)."""
    model.eval()
    device = next(model.parameters()).device
    hyp = task.translate(model, [sentence], beam_size=1)[0][0].tokens
    src = task.tokenizer.encode([sentence])[0][: model.cfg.max_len - 1] + [EOS_ID]
    tgt_in = [BOS_ID, *hyp][: model.cfg.max_len]
    with AttentionExtract(model) as found:
        model(torch.tensor([src], device=device), torch.tensor([tgt_in], device=device))
    out_ids = [*hyp, EOS_ID][: len(tgt_in)]
    s, t = min(len(src), MAX_TOKENS), min(len(tgt_in), MAX_TOKENS)
    maps = {}
    for name, weights in found.weights.items():
        rows = s if name.startswith("core.") else t
        cols = t if name.endswith(".attn") and name.startswith("decoder.") else s
        maps[name] = fg.as_cpu(weights[-1][0, :, :rows, :cols])
    cut = ""
    if (s, t) != (len(src), len(tgt_in)):
        cut = f"showing the first {t} of {len(tgt_in)} target and {s} of {len(src)} source tokens"
    pieces = [_pieces(task, ids) for ids in (src[:s], tgt_in[:t], out_ids[:t])]
    return Attended(task.tokenizer.decode([hyp])[0], *pieces, maps, cut)


def translation_figures(
    task: Task, model: nn.Module, sentences: Sequence[str], out: Path, layer: int = -1
) -> list[Path]:
    """Write ``sentence<i>_layers.png`` (every decoder layer, heads averaged),
    ``sentence<i>_layer<L>_heads.png`` (the heads of ``layer``) and ``sentence<i>.html`` (a
    head view of every attention) per sentence.

    Raises:
        ValueError: ``layer`` is not a decoder layer.
    """
    layer = layer_index(layer, len(model.decoder.blocks), "decoder")
    heads = original_heads(model)
    written = []
    for i, sentence in enumerate(sentences):
        seen = alignments(task, model, sentence)
        cross, title = seen.stack("cross_attn"), f"{sentence}\n→ {seen.text}"
        panels = [(f"layer {j}, mean of heads", m.mean(0)) for j, m in enumerate(cross)]
        written.append(_draw(panels, seen, title, out / f"sentence{i}_layers.png"))
        chosen = heads[f"decoder.blocks.{layer}.cross_attn"]
        panels = [(f"layer {layer}, head {h}", m) for h, m in zip(chosen, cross[layer])]
        written.append(_draw(panels, seen, title, out / f"sentence{i}_layer{layer}_heads.png"))
        written.append(_head_view(seen, heads, title, out / f"sentence{i}.html"))
    return written


def _head_view(seen: Attended, heads: dict[str, tuple[int, ...]], title: str,
               path: Path) -> Path:
    def group(name: str, queries: list[str], keys: list[str], prefix: str, kind: str):
        names = [n for n in seen.maps if n.startswith(prefix) and n.endswith(kind)]
        return name, queries, keys, [seen.maps[n] for n in names], [heads[n] for n in names]

    return head_view(title.replace("\n", " "), [
        group("encoder self-attention", seen.source, seen.source, "core.", ".attn"),
        group("decoder self-attention", seen.outputs, seen.inputs, "decoder.", ".attn"),
        group("cross-attention", seen.outputs, seen.source, "decoder.", ".cross_attn"),
    ], path)


def _draw(panels: list[tuple[str, Tensor]], seen: Attended, title: str, path: Path) -> Path:
    """Alignment matrices side by side: target pieces down, source pieces across."""
    src, tgt = seen.source, seen.outputs
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    side = (max(2.6, 0.22 * len(src) + 1.2), max(2.4, 0.2 * len(tgt) + 1.2))
    fig, axes = fg.grid(rows, cols, cell=side)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, panels):
        image = fg.heatmap(ax, matrix, src, tgt, vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("source subword")
        ax.set_ylabel("target subword (greedy)")
    fg.colorbar(fig, image, axes.ravel().tolist())
    fg.suptitle(fig, title, seen.cut)
    return fg.save(fig, path)
