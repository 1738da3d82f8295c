"""Our conformer encoder against ``torchaudio.models.Conformer`` of the same size, in one process.

Rows: training (forward + backward + AdamW) and inference frames/s on 1 s and 10 s utterances
(encoder frames after the x4 subsampling: 25 and 250 per utterance at a 10 ms hop), interleaved
repeats, medians; and the log-mel front end in seconds of audio per second.

    python benchmarks/speech.py
    python benchmarks/speech.py --model asr_conformer_ctc_tiny --repeats 3
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torchaudio
from timing import interleaved  # benchmarks/timing.py, beside this script
from torch import Tensor, nn

import zoo

FRAMES_PER_SECOND = 25  # 100 feature frames per second, subsampled x4


def ours_step(core: nn.Module, x: Tensor, train: bool) -> Callable[[], None]:
    opt = torch.optim.AdamW(core.parameters(), lr=1e-4) if train else None

    def step() -> None:
        with torch.set_grad_enabled(train):
            out = core(x)
        if opt is not None:
            out.square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def torchaudio_step(model: nn.Module, x: Tensor, train: bool) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    lengths = torch.full((x.shape[0],), x.shape[1])

    def step() -> None:
        with torch.set_grad_enabled(train):
            out, _ = model(x, lengths)
        if opt is not None:
            out.square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="asr_conformer_ctc_small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = zoo.get_config(args.model, dropout=0.0)
    core = cfg.core
    ours = zoo.create_model(args.model, dropout=0.0).core
    theirs = torchaudio.models.Conformer(
        core.dim, core.num_heads, int(core.mlp_ratio * core.dim), core.depth, core.conv_kernel
    )
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(f"{args.model} encoder: dim {core.dim}, {core.depth} blocks, kernel {core.conv_kernel}; "
          f"params ours {n_ours / 1e6:.2f}M, torchaudio {n_theirs / 1e6:.2f}M; "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    for seconds in (1, 10):
        x = torch.randn(args.batch, seconds * FRAMES_PER_SECOND, core.dim)
        frames = x.shape[0] * x.shape[1]
        for train in (True, False):
            ours.train(train), theirs.train(train)
            steps = {
                "ours": ours_step(ours, x, train),
                "torchaudio": torchaudio_step(theirs, x, train),
            }
            times = interleaved(steps, args.repeats)
            print(f"{seconds:>2} s x {args.batch} {'train' if train else 'infer'}: "
                  f"ours {frames / times['ours']:.0f} frames/s, "
                  f"torchaudio {frames / times['torchaudio']:.0f} frames/s, "
                  f"ratio {times['torchaudio'] / times['ours']:.2f}x")  # fmt: skip
    frontend = zoo.create_model(args.model).adapter.frontend
    wave = torch.randn(args.batch, 10 * cfg.sample_rate)
    with torch.inference_mode():
        t = interleaved({"mel": lambda: frontend(wave)}, args.repeats)["mel"]
    print(f"log-mel front end ({cfg.n_mels} bins): {args.batch * 10 / t:.0f} s of audio per second")


if __name__ == "__main__":
    main()
