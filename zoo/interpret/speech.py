"""Attention figures of a speech recogniser: the log-mel spectrogram over the CTC posteriorgram
with the greedy path, the encoder self-attention of one layer, and the attention decoder's
alignment when the model has a decoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tasks.base import Task
from tasks.speech.audio import read_audio
from tasks.speech.decoding import ctc_greedy
from zoo.interpret import figures as fg
from zoo.interpret.extract import AttentionExtract, layer_index, original_heads


@dataclass
class Listening:
    """What the model made of one utterance (CPU tensors)."""

    logmel: Tensor  # (T, n_mels)
    posteriors: Tensor  # (T', V)
    hypothesis: list[int]  # greedy CTC ids
    self_attention: Tensor  # (H, T', T') of the chosen encoder layer
    cross_attention: list[Tensor]  # per decoder layer (H, U + 1, T'); empty without a decoder
    seconds: float  # duration the frames cover


def labels(task: Task, model: nn.Module) -> list[str]:
    """A label per output id: the blank, end of sentence, then the characters (space as ␣)."""
    chars = list(task.vocab.chars) if getattr(task, "vocab", None) else []
    chars += [str(i) for i in range(len(chars) + 2, model.cfg.vocab_size)]
    return ["<b>", "</s>", *("␣" if c == " " else c for c in chars)]


@torch.no_grad()
def listen(model: nn.Module, path: str | Path, layer: int) -> Listening:
    """Run ``model`` on one audio file, recording encoder layer ``layer``'s self-attention and
    the decoder's cross-attention over its greedy CTC transcript.

    Raises:
        ValueError: a model that takes precomputed features, or a file too short for it.
    """
    adapter = model.adapter
    if adapter.frontend is None:
        raise ValueError("zoo attention reads audio files, but this model takes precomputed "
                         "log-mel features (features='fbank')")
    model.eval()
    device = next(model.parameters()).device
    wave = read_audio(path, model.cfg.sample_rate).to(device)[None]
    lengths = torch.tensor([wave.shape[1]], device=device)
    if int(adapter.output_lengths(lengths)[0]) < 1:
        raise ValueError(f"audio file {path} is too short ({wave.shape[1]} samples)")
    names = [f"core.blocks.{layer}.attn"]
    names += [n for n in original_heads(model) if n.endswith("cross_attn")]
    with AttentionExtract(model, names) as found:
        memory, mask = model.forward_features(wave, lengths)
        logits = model.forward_head(memory)
        hyp = ctc_greedy(logits, model.output_lengths(lengths))[0]
        if model.decoder is not None:
            tgt_in = torch.tensor([[model.cfg.eos_id, *hyp]], device=device)
            model.decode(tgt_in, memory, mask)
    logmel = adapter.frontend(wave)[0]
    seconds = logmel.shape[0] * adapter.frontend.hop_length / model.cfg.sample_rate
    cross = [fg.as_cpu(found.last(n)[0]) for n in names[1:]] if model.decoder else []
    return Listening(fg.as_cpu(logmel), fg.as_cpu(logits[0].float().softmax(-1)), hyp,
                     fg.as_cpu(found.last(names[0])[0]), cross, seconds)


def speech_figures(
    task: Task, model: nn.Module, paths: Sequence[str | Path], out: Path, layer: int = -1
) -> list[Path]:
    """Write ``<audio>_ctc.png``, ``<audio>_self_layer<L>.png`` and, with a decoder,
    ``<audio>_cross.png`` per audio file.

    Raises:
        ValueError: ``layer`` is not an encoder layer.
    """
    layer = layer_index(layer, len(model.core.blocks), "encoder")
    names = labels(task, model)
    heads = original_heads(model)[f"core.blocks.{layer}.attn"]
    written = []
    for path in paths:
        heard = listen(model, path, layer)
        text = "".join(names[i] for i in heard.hypothesis).replace("␣", " ")
        title = f"{Path(path).name}: greedy CTC \"{text}\""
        stem = out / Path(path).stem
        written.append(_ctc_figure(heard, names, title, stem.with_name(stem.name + "_ctc.png")))
        path_self = stem.with_name(f"{stem.name}_self_layer{layer}.png")
        written.append(_self_figure(heard, layer, heads, title, path_self))
        if heard.cross_attention:
            chars = [names[i] for i in heard.hypothesis] + ["</s>"]
            written.append(_cross_figure(heard, chars, title,
                                         stem.with_name(stem.name + "_cross.png")))
    return written


def _ctc_figure(heard: Listening, names: list[str], title: str, path: Path) -> Path:
    """Log-mel above, posteriorgram with the greedy path below, on one time axis."""
    fig, axes = fg.grid(2, 1, cell=(min(16.0, max(6.0, 2.0 * heard.seconds)), 3.0))
    n_mels = heard.logmel.shape[1]
    top = fg.heatmap(axes[0, 0], heard.logmel.T, origin="lower", cmap="magma",
                     extent=(0, heard.seconds, -0.5, n_mels - 0.5))
    axes[0, 0].set_ylabel("mel bin")
    axes[0, 0].set_title("log-mel spectrogram", fontsize=9)
    fg.colorbar(fig, top, axes[0, 0], "log energy")
    post = heard.posteriors.T  # (V, T')
    v, t = post.shape
    extent = (0, heard.seconds, v - 0.5, -0.5)
    image = fg.heatmap(axes[1, 0], post, None, names, cmap="Blues", vmin=0.0, vmax=1.0,
                       extent=extent)
    best = post.argmax(0)
    frame = heard.seconds / t
    times = (torch.arange(t) + 0.5) * frame
    keep = best != 0  # the greedy path's non-blank frames
    axes[1, 0].scatter(times[keep], best[keep], s=10, c="tab:red",
                       label="greedy path (non-blank)")
    axes[1, 0].legend(loc="upper right", fontsize=7)
    axes[1, 0].set_ylabel("label")
    axes[1, 0].set_title("CTC posteriorgram", fontsize=9)
    axes[1, 0].set_xlabel("time (s)")
    fg.colorbar(fig, image, axes[1, 0], "posterior probability")
    fig.suptitle(title, fontsize=10)
    return fg.save(fig, path)


def _self_figure(heard: Listening, layer: int, heads: Sequence[int], title: str,
                 path: Path) -> Path:
    """The chosen encoder layer's self-attention: heads averaged, then each head."""
    panels = [("mean of heads", heard.self_attention.mean(0))]
    panels += [(f"head {h}", m) for h, m in zip(heads, heard.self_attention)]
    cols = min(len(panels), 3)
    fig, axes = fg.grid(-(-len(panels) // cols), cols, cell=(3.8, 3.4))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    factor = 1
    for ax, (name, matrix) in zip(axes.flat, panels):
        matrix, factor, _ = fg.shrink(matrix)
        image = fg.heatmap(ax, matrix, cmap="viridis", vmin=0.0, aspect="equal",
                           extent=(0, heard.seconds, heard.seconds, 0))
        ax.set_title(f"encoder layer {layer}, {name}", fontsize=9)
        ax.set_xlabel("key time (s)")
        ax.set_ylabel("query time (s)")
    fg.colorbar(fig, image, axes.ravel().tolist())
    frames = heard.self_attention.shape[-1]
    fg.suptitle(fig, title, f"{frames} frames averaged in blocks of {factor}" if factor > 1 else "")
    return fg.save(fig, path)


def _cross_figure(heard: Listening, chars: list[str], title: str, path: Path) -> Path:
    """Each decoder layer's cross-attention, heads averaged: characters down, time across."""
    layers = heard.cross_attention
    cell = (min(12.0, max(4.0, heard.seconds * 1.5)), 0.22 * len(chars) + 3.0)
    fig, axes = fg.grid(1, len(layers), cell=cell)
    extent = (0, heard.seconds, len(chars) - 0.5, -0.5)
    for j, (ax, matrix) in enumerate(zip(axes[0], layers)):
        image = fg.heatmap(ax, matrix.mean(0), None, chars, vmin=0.0, extent=extent)
        ax.set_title(f"decoder layer {j}, mean of heads", fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("output character")
    fg.colorbar(fig, image, axes.ravel().tolist())
    fig.suptitle(title + "\nattention decoder alignment over the encoder frames", fontsize=10)
    return fg.save(fig, path)
