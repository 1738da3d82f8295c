"""Attention figures of a translation model: the cross-attention alignment of its own greedy
translation, per decoder layer (heads averaged) and per head of one layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from tasks.base import Task
from tasks.translation.tokenizer import BOS_ID, EOS_ID
from zoo.interpret import figures as fg
from zoo.interpret.extract import AttentionExtract, original_heads

MAX_TOKENS = 80  # tokens per side drawn; longer sentences are cut, with a note


def _pieces(task: Task, ids: Sequence[int]) -> list[str]:
    sp = task.tokenizer.sp
    return ["</s>" if i == EOS_ID else sp.id_to_piece(int(i)) for i in ids]


@torch.no_grad()
def alignments(
    task: Task, model: nn.Module, sentence: str
) -> tuple[list[str], list[str], list[Tensor], str]:
    """The greedy translation of ``sentence`` and each decoder layer's cross-attention over
    the source while producing it, teacher-forced on that translation (the same weights as
    during the search: the decoder is causal).

    Returns:
        source pieces (S, EOS last), target pieces (T, EOS last), per layer (H, T, S), and
        the translation's text.
    """
    model.eval()
    device = next(model.parameters()).device
    hyp = task.translate(model, [sentence], beam=1)[0][0].tokens
    src = task.tokenizer.encode([sentence])[0][: model.cfg.max_len - 1] + [EOS_ID]
    tgt_in = [BOS_ID, *hyp][: model.cfg.max_len]
    names = [n for n in original_heads(model) if n.endswith("cross_attn")]
    with AttentionExtract(model, names) as found:
        model(torch.tensor([src], device=device), torch.tensor([tgt_in], device=device))
    maps = [fg.as_cpu(found.last(n)[0]) for n in names]
    out_ids = [*hyp, EOS_ID][: len(tgt_in)]
    return _pieces(task, src), _pieces(task, out_ids), maps, task.tokenizer.decode([hyp])[0]


def translation_figures(
    task: Task, model: nn.Module, sentences: Sequence[str], out: Path, layer: int = -1
) -> list[Path]:
    """Write ``sentence<i>_layers.png`` (every decoder layer, heads averaged) and
    ``sentence<i>_layer<L>_heads.png`` (the heads of ``layer``) per sentence.

    Raises:
        ValueError: ``layer`` is not a decoder layer.
    """
    depth = len(model.decoder.blocks)
    if not -depth <= layer < depth:
        raise ValueError(f"--layer {layer} is out of range: the decoder has {depth} layers")
    layer %= depth
    heads = original_heads(model)[f"decoder.blocks.{layer}.cross_attn"]
    written = []
    for i, sentence in enumerate(sentences):
        src, tgt, maps, text = alignments(task, model, sentence)
        src, tgt, maps, cut = _cap(src, tgt, maps)
        title = f"{sentence}\n→ {text}"
        panels = [(f"layer {j}, mean of heads", m.mean(0)) for j, m in enumerate(maps)]
        written.append(_draw(panels, src, tgt, title, cut, out / f"sentence{i}_layers.png"))
        panels = [(f"layer {layer}, head {h}", m) for h, m in zip(heads, maps[layer])]
        path = out / f"sentence{i}_layer{layer}_heads.png"
        written.append(_draw(panels, src, tgt, title, cut, path))
    return written


def _cap(src: list[str], tgt: list[str], maps: list[Tensor]):
    """At most ``MAX_TOKENS`` per side, and the note saying what was cut."""
    s, t = min(len(src), MAX_TOKENS), min(len(tgt), MAX_TOKENS)
    cut = ""
    if (s, t) != (len(src), len(tgt)):
        cut = (f"showing the first {t} of {len(tgt)} target and {s} of {len(src)} source "
               f"tokens")
    return src[:s], tgt[:t], [m[:, :t, :s] for m in maps], cut


def _draw(panels: list[tuple[str, Tensor]], src: list[str], tgt: list[str], title: str,
          cut: str, path: Path) -> Path:
    """Alignment matrices side by side: target pieces down, source pieces across."""
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
    fg.suptitle(fig, title, cut)
    return fg.save(fig, path)
