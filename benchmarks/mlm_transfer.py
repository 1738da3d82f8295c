"""Does masked-LM pre-training of the encoder help Multi30k en->de translation at a short budget?

1. Pre-train ``bert_mini`` (configs/pretrain/bert_mini_multi30k.yaml: Multi30k's train.en +
   Tiny Shakespeare; ``--downstream-only``: train.en alone, the setting of Krishna et al. 2023),
   or reuse a run (``--pretrained RUN``). Its vocabulary is the joint en+de one a translation
   run trains, plus [MASK] (every id after it one higher): the translation runs train their
   own, and the MLM's embedding rows are moved to its ids piece by piece.
2. For each seed, build ``mt_transformer_mini`` twice from the same random draw and give one of
   them the masked LM's encoder (``src_adapter`` embeddings, shared with the target side and the
   output projection, and ``core``; ``--inits mlm_core``: the core alone); train both with the
   same recipe and steps.
3. Report sacreBLEU and chrF on test_2016_flickr of each run's best validation checkpoint, per
   seed, and the mean difference, in ``OUT/mlm_transfer.md`` and ``.json``.

    python benchmarks/mlm_transfer.py --out runs/bench/mlm                       # CPU, tiny
    python benchmarks/mlm_transfer.py --out runs/bench/mlm --device cuda --precision bf16 \\
        --pretrain-steps 10000 --finetune-steps 3000 --seeds 0 1 --beam 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path
from typing import Any

import torch
from masked_common import (  # benchmarks/masked_common.py, beside this script
    add_shared_args,
    load_part,
    new_results,
    pretrain_overrides,
    pretrain_recipe,
    record,
    run,
    save_init,
    summarise,
    write_results,
)

import zoo
from tasks.base import get_task
from tasks.masked_lm import translation_encoder_state
from tasks.translation.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from zoo.config import recipe_from_dict
from zoo.saved_model import find_model_dir

RECIPE = "configs/pretrain/bert_mini_multi30k.yaml"
TARGET = "mt_transformer_mini"
VOCAB_FILE = "spm.model"
INITS = ("random", "mlm", "mlm_core")


def pretrain(args: argparse.Namespace) -> Path:
    if args.pretrained:
        return Path(args.pretrained)
    recipe = pretrain_recipe(RECIPE, pretrain_overrides(args))
    if args.downstream_only:
        recipe["data"]["options"]["train_files"] = ["multi30k/train.en"]
    run(recipe, args.out / "pretrain")
    return args.out / "pretrain"


def translation_vocab(args: argparse.Namespace) -> Tokenizer:
    """The vocabulary every translation run here trains at its start (the translation task's
    own start-up, which writes the same file each time), made once into ``OUT/mt_vocab``.
    A run cannot be handed the MLM's vocabulary: it trains its own in its start-up folder."""
    folder = args.out / "mt_vocab"
    if not (folder / VOCAB_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        recipe = translation_recipe(args, folder, 0)
        del recipe["model"]["pretrained"]
        get_task("translation")(recipe_from_dict(recipe), run_dir=folder).prepare()
    return Tokenizer.load(folder / VOCAB_FILE)


def align_embeddings(state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor],
                     mlm_vocab: Tokenizer, mt_vocab: Tokenizer) -> dict[str, torch.Tensor]:
    """``state``'s token-embedding rows moved from the MLM's ids to ``mt_vocab``'s, piece by
    piece (the MLM's [MASK] shifts every id by one); a piece the MLM lacks keeps its row of
    ``fresh`` (the randomly initialised translation model's state)."""
    mlm_ids = {mlm_vocab.sp.id_to_piece(i): i for i in range(len(mlm_vocab))}
    pairs = [(new, mlm_ids[piece]) for new in range(len(mt_vocab))
             if (piece := mt_vocab.sp.id_to_piece(new)) in mlm_ids]
    new_ids, old_ids = (torch.tensor(ids) for ids in zip(*pairs))
    out = dict(state)
    for key, value in state.items():
        if value.dim() == 2 and value.shape[0] == len(mlm_vocab):  # a token embedding
            rows = fresh[key].clone()
            rows[new_ids] = value[old_ids].to(rows.dtype)
            out[key] = rows
    logging.info("MLM embeddings: %d of %d translation pieces found", len(pairs), len(mt_vocab))
    return out


def init_dir(args: argparse.Namespace, mlm: torch.nn.Module, init: str, seed: int,
             vocabs: tuple[Tokenizer, Tokenizer]) -> Path:
    """``mt_transformer_mini`` drawn from ``seed``, with the masked LM's encoder for "mlm"
    (its embeddings aligned with the translation vocabulary, ``vocabs``: MLM's, translation's)."""
    target = args.out / f"init_{init}_s{seed}"
    if not (target / "config.json").is_file():
        torch.manual_seed(seed)
        mt = zoo.create_model(TARGET, vocab_size=len(vocabs[1]), pad_id=PAD_ID,
                              bos_id=BOS_ID, eos_id=EOS_ID)
        if init != "random":
            state = translation_encoder_state(mlm.state_dict())
            if init == "mlm_core":
                state = {k: v for k, v in state.items() if k.startswith("core.")}
            load_part(mt, align_embeddings(state, mt.state_dict(), *vocabs))
        save_init(mt, target)
    return target


def translation_recipe(args: argparse.Namespace, init: Path, seed: int) -> dict[str, Any]:
    steps = args.finetune_steps
    return {
        "task": "translation",
        "model": {"name": TARGET, "pretrained": str(init)},
        "data": {"dataset": "parallel", "root": f"{args.data_root}/multi30k",
                 "options": {"src_lang": "en", "tgt_lang": "de",
                             "test_split": "test_2016_flickr", "empty_lines": "error"}},
        "tokenizer": {"vocab_size": 8000},
        "optim": {"lr": args.lr, "weight_decay": 1e-4, "betas": [0.9, 0.98]},
        "schedule": {"name": "cosine", "warmup_steps": steps // 10},
        "train": {"max_steps": steps, "batch_size": args.tokens, "seed": seed,
                  "label_smoothing": 0.1, "device": args.device, "precision": args.precision,
                  "eval_every": max(steps // args.evals, 1), "checkpoint_every": steps,
                  "log_every": 50},
        "decode": {"beam_size": args.beam},
    }


def main() -> None:
    args = parse_args()
    mlm_run = pretrain(args)
    mlm_dir = find_model_dir(mlm_run)
    mlm = zoo.load_pretrained(mlm_dir)
    vocabs = (Tokenizer.load(mlm_dir / VOCAB_FILE), translation_vocab(args))
    results = new_results(args)
    for seed in args.seeds:
        for init in args.inits:
            run_dir = args.out / f"mt_{init}_s{seed}"
            recipe = translation_recipe(args, init_dir(args, mlm, init, seed, vocabs), seed)
            metrics = run(recipe, run_dir, test_split="test")
            expected = (args.out / "mt_vocab" / VOCAB_FILE).read_bytes()
            if (run_dir / VOCAB_FILE).read_bytes() != expected:
                raise RuntimeError(f"{run_dir} trained another vocabulary than mt_vocab/")
            record(results, run_dir, metrics, "bleu", "BLEU")
    write_results(args.out, "mlm_transfer", results, table(args, results["runs"]))


def table(args: argparse.Namespace, runs: dict[str, dict[str, float]]) -> list[str]:
    source = f"reused {args.pretrained}" if args.pretrained else f"{args.pretrain_steps} steps"
    lines = [
        f"Masked-LM encoder ({source}) vs. random init, {TARGET}, Multi30k en->de, "
        f"{args.finetune_steps} steps, test_2016_flickr, beam {args.beam}, seeds {args.seeds}",
        "",
        "| init | BLEU | chrF | BLEU gain over random (mean) |",
        "|---|---|---|---|",
    ]
    base = [runs[f"mt_random_s{s}"]["bleu"] for s in args.seeds] if "random" in args.inits else []
    for init in args.inits:
        bleu = [runs[f"mt_{init}_s{s}"]["bleu"] for s in args.seeds]
        chrf = [runs[f"mt_{init}_s{s}"]["chrf"] for s in args.seeds]
        gain = f"{statistics.mean(bleu) - statistics.mean(base):+.2f}" if base else "-"
        lines.append(f"| {init} | {summarise(bleu)} | {summarise(chrf)} | {gain} |")
    return lines


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_args(p, "../shared/data", "holds multi30k/ (and more)",
                    "a bert_mini run to reuse (skips step 1)")
    p.add_argument("--downstream-only", action="store_true",
                   help="pre-train on Multi30k's train.en alone")
    p.add_argument("--pretrain-steps", type=int, default=100)
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--tokens", type=int, default=4096, help="translation tokens per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="translation peak learning rate")
    p.add_argument("--evals", type=int, default=1, help="validation BLEU evaluations per run")
    p.add_argument("--beam", type=int, default=1, help="beam size of every evaluation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--inits", nargs="+", default=["random", "mlm"], choices=INITS)
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
