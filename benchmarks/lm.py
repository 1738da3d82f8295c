"""Training tokens/s of this zoo's GPT on nanoGPT's Shakespeare configs, and sampling tokens/s
with and without the KV cache; results as a Markdown table and JSON in ``--out``.

Rows: ``gpt_nano_shakespeare`` at nanoGPT's CPU settings (batch 12, context 64) always, and
``gpt_small_shakespeare`` at its GPU settings (batch 64, context 256) with ``--device cuda``
(or ``--configs nano,small``). A training step is what ``zoo train`` does per step: forward,
cross-entropy, backward, gradient clipping at 1.0 and AdamW, under the chosen precision. The
inputs are random characters of a 69-token vocabulary (speed does not depend on the text).
Beside each zoo row, the same architecture built from ``torch.nn`` parts is timed in turn
(interleaved rounds, median).

nanoGPT's README gives about 3 minutes for each config's full run: 2,000 x 12 x 64 tokens on a
MacBook CPU (about 8,500 tokens/s, evaluation included) and 5,000 x 64 x 256 tokens on one A100
(about 455,000 tokens/s).

    python benchmarks/lm.py --out results/lm                          # CPU, nano config
    python benchmarks/lm.py --device cuda --precision bf16 --out results/lm_gpu
    python benchmarks/lm.py --steps 1 --repeats 1 --warmup 1 --sample-tokens 20 --out /tmp/lm_smoke
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import interleaved  # benchmarks/timing.py, beside this script
from torch import nn

import zoo
from tasks.language_modeling.sampling import SamplingOptions, sample
from zoo.optim import build_optimizer

VOCAB = 69  # tiny Shakespeare's 65 characters + pad, bos, eos, unk
CONFIGS = {  # name -> (model, batch, context): nanoGPT's CPU and GPU Shakespeare settings
    "nano": ("gpt_nano_shakespeare", 12, 64),
    "small": ("gpt_small_shakespeare", 64, 256),
}
NANOGPT_TOKENS_PER_S = {"nano": 2000 * 12 * 64 / 180, "small": 5000 * 64 * 256 / 180}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ReferenceGPT(nn.Module):
    """The same architecture from ``torch.nn`` parts (pre-norm GELU ``TransformerEncoderLayer``s,
    learned positions, a final LayerNorm, a tied head): the peer the zoo's model is timed
    against in the same process."""

    def __init__(
        self, vocab: int, dim: int, depth: int, heads: int, context: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) ids -> (B, N, V) logits."""
        n = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=ids.device)
        x = self.blocks(self.embed(ids) + self.pos[:n], mask=mask, is_causal=True)
        return self.head(self.norm(x))


def train_step(model: nn.Module, batch: int, context: int, precision: str) -> Callable[[], None]:
    """One training step on random ids, as ``zoo train`` takes it."""
    device = next(model.parameters()).device
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.99), 1e-8)
    ids = torch.randint(4, VOCAB, (batch, context + 1), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def sample_tokens_per_s(model: nn.Module, new_tokens: int, use_cache: bool) -> float:
    """Greedy generation of ``new_tokens`` from a one-token prompt, one sample: tokens/s."""
    model.eval()
    options = SamplingOptions(max_new_tokens=new_tokens, greedy=True)
    device = next(model.parameters()).device
    _sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in sample(model, [4], options, banned=[0, 1, 3], use_cache=use_cache))
    _sync(device)
    return count / (time.perf_counter() - start)


def run(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """The zoo's row (training and sampling) and the ``torch.nn`` peer's (training), their
    training steps timed in turn (``timing.interleaved``) so that load hits both alike."""
    model_name, batch, context = CONFIGS[name]
    torch.manual_seed(0)
    ours = zoo.create_model(model_name, vocab_size=VOCAB).to(device)  # dropout as configured
    core = ours.cfg.core
    peer = ReferenceGPT(VOCAB, core.dim, core.depth, core.num_heads, context, core.dropout)
    models = {"zoo": ours, "torch.nn": peer.to(device)}
    steps = {k: train_step(m, batch, context, args.precision) for k, m in models.items()}
    seconds = interleaved(steps, args.repeats, args.steps, args.warmup, lambda: _sync(device))
    rows = []
    for impl, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        rows.append({
            "config": name, "impl": impl, "params_M": round(params / 1e6, 2), "batch": batch,
            "context": context, "device": str(device), "precision": args.precision,
            "threads": torch.get_num_threads(),
            "train_tokens_per_s": round(batch * context / seconds[impl]),
            "nanogpt_readme_tokens_per_s": round(NANOGPT_TOKENS_PER_S[name]),
        })  # fmt: skip
    # within the context: past it both paths re-encode the last max_len tokens every step
    new_tokens = args.sample_tokens or context - 1
    for cached in (True, False):  # the peer has no cache: sampling is the zoo's only
        key = f"sample_tokens_per_s_{'cached' if cached else 'uncached'}"
        rows[0][key] = round(sample_tokens_per_s(ours, new_tokens, cached), 1)
        rows[1][key] = "-"
    return rows


def write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    (out / "lm.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--configs", default=None, help="nano, small or nano,small "
                        "(default: nano on the CPU, both on a GPU)")  # fmt: skip
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is kept")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument(
        "--sample-tokens",
        type=int,
        default=None,
        help="tokens to generate (default: the context less the prompt)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for lm.md and lm.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.configs.split(",") if args.configs else (
        ["nano", "small"] if device.type == "cuda" else ["nano"]
    )  # fmt: skip
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; expected nano or small")
    write([row for name in names for row in run(name, args, device)], args.out)


if __name__ == "__main__":
    main()
