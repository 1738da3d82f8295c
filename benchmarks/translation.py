"""Our encoder-decoder against ``torch.nn.Transformer`` of the same size, in one process.

Rows: training tokens/s (fp32, bf16 autocast) against nn.Transformer with the same embeddings
(scaled, sinusoidal positions) and tied output layer; greedy and beam decoding of 64 sentences x
30 tokens with our KV cache against re-running the whole decoder at every step (the way
nn.Transformer is used); time per generated token as the output grows. Interleaved repeats,
medians.

    python benchmarks/translation.py
    python benchmarks/translation.py --model mt_transformer_base --repeats 3
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable

import torch
from timing import interleaved  # benchmarks/timing.py, beside this script
from torch import Tensor, nn

import zoo
from encoders import sinusoidal_table
from tasks.translation.decoding import beam_search


class TorchSeq2Seq(nn.Module):
    """nn.Transformer with our input and output conventions (shared, tied embedding)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        core = cfg.core
        self.dim = core.dim
        self.embed = nn.Embedding(cfg.vocab_size, cfg.core.dim)
        self.register_buffer("pos", sinusoidal_table(cfg.max_len, cfg.core.dim), persistent=False)
        self.transformer = nn.Transformer(
            core.dim, core.num_heads, core.depth, cfg.decoder_depth, int(core.mlp_ratio * core.dim),
            dropout=0.0, activation=core.act, batch_first=True, norm_first=core.norm_first,
        )  # fmt: skip
        self.head = nn.Linear(cfg.core.dim, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.embed(ids) * math.sqrt(self.dim) + self.pos[: ids.shape[1]]

    def encode(self, src: Tensor) -> Tensor:
        return self.transformer.encoder(self.embed_tokens(src))

    def decode(self, tgt_in: Tensor, memory: Tensor) -> Tensor:
        n = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=tgt_in.device)
        out = self.transformer.decoder(self.embed_tokens(tgt_in), memory, tgt_mask=causal)
        return self.head(out)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, self.encode(src))


def train_step(model: nn.Module, src: Tensor, tgt: Tensor, bf16: bool) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, tgt[:, :-1])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), tgt[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


@torch.inference_mode()
def greedy_cached(model: nn.Module, src: Tensor, steps: int) -> Tensor:
    """Greedy decoding of exactly ``steps`` tokens with our KV cache."""
    memory, mask = model.encode(src)
    cache = model.decoder.new_cache()
    tokens = torch.full((src.shape[0], 1), model.cfg.bos_id, dtype=torch.long)
    out = [tokens]
    for _ in range(steps):
        tokens = model.decode_step(tokens, memory, mask, cache).argmax(-1, keepdim=True)
        out.append(tokens)
    return torch.cat(out, 1)


@torch.inference_mode()
def greedy_rerun(model: TorchSeq2Seq, src: Tensor, steps: int, bos: int) -> Tensor:
    """Greedy decoding with nn.Transformer: the whole prefix through the decoder every step."""
    memory = model.encode(src)
    prefix = torch.full((src.shape[0], 1), bos, dtype=torch.long)
    for _ in range(steps):
        nxt = model.decode(prefix, memory)[:, -1].argmax(-1, keepdim=True)
        prefix = torch.cat([prefix, nxt], 1)
    return prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mt_transformer_small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--length", type=int, default=30, help="source and output tokens")
    parser.add_argument("--beam-size", "--beam", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message="enable_nested_tensor")  # nn.Transformer, pre-norm
    ours = zoo.create_model(args.model, dropout=0.0)
    cfg = ours.cfg
    theirs = TorchSeq2Seq(cfg)
    n, t = args.sentences, args.length
    src = torch.randint(4, cfg.vocab_size, (n, t))
    tgt = torch.randint(4, cfg.vocab_size, (n, t + 1))
    print(f"{args.model}: dim {cfg.core.dim}, {cfg.core.depth}+{cfg.decoder_depth} layers, "
          f"vocab {cfg.vocab_size}; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    for bf16 in (False, True):
        ours.train(), theirs.train()
        times = interleaved(
            {"ours": train_step(ours, src, tgt, bf16), "torch": train_step(theirs, src, tgt, bf16)},
            args.repeats,
        )
        tok = n * t
        print(f"train {'bf16' if bf16 else 'fp32'}: ours {tok / times['ours']:.0f} tokens/s, "
              f"nn.Transformer {tok / times['torch']:.0f} tokens/s, "
              f"ratio {times['torch'] / times['ours']:.2f}x")  # fmt: skip
    ours.eval(), theirs.eval()
    times = interleaved(
        {"cached": lambda: greedy_cached(ours, src, t),
         "rerun": lambda: greedy_rerun(theirs, src, t, cfg.bos_id)},
        args.repeats,
    )  # fmt: skip
    print(f"greedy {n} x {t} tokens: cached {times['cached']:.2f} s, nn.Transformer rerun "
          f"{times['rerun']:.2f} s, speed-up {times['rerun'] / times['cached']:.1f}x")  # fmt: skip

    def beam(use_cache: bool) -> Callable[[], None]:
        return lambda: beam_search(
            ours, src, beam_size=args.beam_size, max_len_a=0.0, max_len_b=t, use_cache=use_cache
        )

    times = interleaved({"cached": beam(True), "rerun": beam(False)}, max(1, args.repeats // 2))
    print(f"beam {args.beam_size}, {n} sentences, up to {t} tokens: "
          f"cached {times['cached']:.2f} s, re-running the decoder {times['rerun']:.2f} s, "
          f"speed-up {times['rerun'] / times['cached']:.1f}x")  # fmt: skip
    for steps in (10, 30, 60, 120):
        cached = interleaved({"c": lambda s=steps: greedy_cached(ours, src, s)}, 3)["c"]
        rerun = interleaved({"r": lambda s=steps: greedy_rerun(theirs, src, s, cfg.bos_id)}, 3)
        print(f"output length {steps:>3}: cached {1000 * cached / steps:.1f} ms/token, "
              f"rerun {1000 * rerun['r'] / steps:.1f} ms/token")  # fmt: skip


if __name__ == "__main__":
    main()
