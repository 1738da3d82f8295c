"""FSDD leave-one-speaker-out: each variant of the single-digit recipe trained on four speakers
and tested on the fifth, each speaker in turn (issue 28: digits from voices never heard).

Every run is ``python -m zoo train RECIPE data.options.test_speakers=[SPK] ...`` in its own
process and run folder, then ``python -m zoo eval RUN --split test``; the test accuracy and the
confusions (true digit -> predicted) are read from the run's ``transcripts_test.tsv``.
``loso.json`` and ``loso.md`` are rewritten as each run finishes, so a stopped benchmark still
leaves what it measured.

    python benchmarks/fsdd_loso.py --steps 20 --speakers jackson theo --out /tmp/loso  # smoke
    OMP_NUM_THREADS=1 python benchmarks/fsdd_loso.py --device cuda --precision fp32 \\
        --steps 2000 --parallel 20 --budget 330 --data .gpudata/fsdd --out /tmp/loso
    python benchmarks/fsdd_loso.py --variants baseline,init --init-from runs/kathleen ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "speech" / "asr_conformer_ctc_fsdd_single.yaml"
RECIPE_STEPS, RECIPE_WARMUP = 4000, 150  # the recipe's schedule, scaled to --steps
TEST_SECONDS = 120  # the test evaluation of a run, even one stopped at the --budget deadline
FSDD_NAME = re.compile(r"^\d_([A-Za-z0-9]+)_\d+\.wav$")  # {digit}_{speaker}_{index}.wav

# Levers against an unseen voice, as recipe overrides. The recipe already normalises each
# utterance's log-mel per bin (mean and variance), masks it (SpecAugment) and speeds it 0.9-1.1.
NORM = ["model.overrides.feature_norm=mean"]  # CMN: empty bins above 4 kHz stay near-constant
WAVE = ["model.overrides.wave_norm=true"]  # unit RMS: quiet and loud recordings alike
# per-speaker CMVN (tasks/speech/speakers.py): the held-out voice's statistics come from its
# own test recordings, without their labels
SPK = ["model.overrides.feature_norm=speaker"]
AUG = [
    "model.overrides.freq_warp=0.1",  # VTLP, Jaitly & Hinton 2013: other vocal tract lengths
    "augment.speed_perturb=[0.85,0.9,0.95,1.0,1.05,1.1,1.15]",
]
NOISE = ["augment.noise_snr=[10,40]", "augment.noise_prob=0.5"]
# the English model's front end and encoder, fine-tuned with layer-wise LR decay (as the
# connected-digit recipe does); the CTC head starts fresh
INIT = ["model.init_from.path={init}", "model.init_from.parts=[adapter,core]",
        "optim.layer_decay=0.75"]  # fmt: skip
VARIANTS: dict[str, list[str]] = {
    "baseline": [], "norm": NORM, "wave_norm": WAVE, "aug": AUG, "noise": NOISE,
    "norm+aug": NORM + AUG, "aug+noise": AUG + NOISE, "init": INIT, "init+aug": INIT + AUG,
    "norm+aug+init": NORM + AUG + INIT, "spk_norm": SPK, "spk_norm+init": SPK + INIT,
    "spk_norm+aug+init": SPK + AUG + INIT,
}  # fmt: skip
DEFAULT_VARIANTS = "baseline,norm,aug,norm+aug"


def fsdd_speakers(data: Path) -> list[str]:
    """The speakers of an FSDD folder (``recordings/`` or the folder itself), sorted."""
    folder = data / "recordings" if (data / "recordings").is_dir() else data
    found = {m.group(1) for p in folder.glob("*.wav") if (m := FSDD_NAME.match(p.name))}
    if not found:
        raise ValueError(f"no FSDD recordings (digit_speaker_index.wav) in {folder}")
    return sorted(found)


def train_overrides(args: argparse.Namespace, variant: str, speaker: str) -> list[str]:
    """The ``zoo train`` overrides of one run: the split, the budget, then the variant's."""
    steps = args.steps
    every = max(1, steps // 4)  # four validations pick best/; the last step is always one
    warmup = max(1, round(steps * RECIPE_WARMUP / RECIPE_STEPS))
    fixed = [
        f"data.root={args.data}", f"data.options.test_speakers=[{speaker}]",
        f"train.max_steps={steps}", f"train.eval_every={every}",
        f"train.checkpoint_every={every}", "train.keep_last=1",
        f"schedule.warmup_steps={warmup}", f"train.device={args.device}",
        f"train.precision={args.precision}", f"train.seed={args.seed}",
    ]  # fmt: skip
    variant_keys = [o.format(init=args.init_from) for o in VARIANTS[variant]]
    return fixed + variant_keys + list(args.set)


def read_transcripts(path: Path) -> dict[str, Any]:
    """Accuracy in percent (as the speech task reports it), count and confusions (``"5->6"``:
    true 5 read as 6; ``"5->"``: nothing read) of a ``transcripts_test.tsv`` (id, reference,
    hypothesis)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    wrong = Counter(f"{r['reference']}->{r['hypothesis']}" for r in rows
                    if r["reference"] != r["hypothesis"])  # fmt: skip
    right = len(rows) - sum(wrong.values())
    return {"accuracy": 100 * right / max(len(rows), 1), "clips": len(rows),
            "confusions": dict(wrong.most_common())}  # fmt: skip


def _run(cmd: list[str], log: Path, deadline: float) -> str | None:
    """Run ``cmd`` into ``log`` until ``deadline``; None when it succeeded, else why not."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path,  # the repository first, then any wheels folder
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # fmt: skip
    with open(log, "a") as out:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            return "training stopped at the --budget deadline"
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:]
        return f"exit {proc.returncode}: {tail[0] if tail else ''}"
    return None


def best_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The step and validation accuracy of a run's best/ model, if it saved one."""
    path = run_dir / "best" / "config.json"
    if not path.is_file():
        return None
    best = json.loads(path.read_text())
    return {"best_step": best.get("step"), "val_accuracy": best.get("metrics", {}).get("accuracy")}


def run_one(args: argparse.Namespace, variant: str, speaker: str, deadline: float) -> dict:
    """Train and test one (variant, held-out speaker); its result row. A training stopped at
    the deadline still has its best/ model (chosen on validation so far) tested, within
    ``TEST_SECONDS``, and its row says so."""
    row: dict[str, Any] = {"variant": variant, "speaker": speaker}
    if time.time() >= deadline:
        return {**row, "status": "skipped: not started within --budget"}
    run_dir = args.out / "runs" / f"{variant}_{speaker}"
    log = args.out / "runs" / f"{variant}_{speaker}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    zoo = [sys.executable, "-m", "zoo"]
    start = time.time()
    train = [*zoo, "train", str(args.recipe), *train_overrides(args, variant, speaker),
             "--out", str(run_dir)]  # fmt: skip
    stopped = _run(train, log, deadline)
    best = best_checkpoint(run_dir)
    if best is None:
        return {**row, "seconds": round(time.time() - start, 1), "status": stopped or "no best/"}
    test = [*zoo, "eval", str(run_dir), "--split", "test", "--device", args.device]
    error = _run(test, log, time.time() + TEST_SECONDS)
    row.update(seconds=round(time.time() - start, 1), **best)
    if error is not None:
        return {**row, "status": f"test: {error}"}
    status = "done" if stopped is None else f"partial: {stopped}, best/ tested"
    return {**row, "status": status, **read_transcripts(run_dir / "transcripts_test.tsv")}


def top_confusions(rows: list[dict[str, Any]], k: int = 5) -> list[tuple[str, int]]:
    """The ``k`` most frequent confusions summed over ``rows``."""
    total: Counter[str] = Counter()
    for r in rows:
        total.update(r.get("confusions", {}))
    return total.most_common(k)


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Variant x held-out speaker test accuracy (%), the mean over finished speakers and the
    most frequent confusions; runs that did not finish are listed under the table."""
    speakers, variants = meta["speakers"], meta["variants"]
    lines = [f"# FSDD leave-one-speaker-out ({meta['steps']} steps, {meta['device']}, "
             f"{meta['precision']}, seed {meta['seed']})", "",
             "| variant | " + " | ".join(speakers) + " | mean | top confusions (true->read) |",
             "|---|" + "---:|" * (len(speakers) + 1) + "---|"]  # fmt: skip
    done = {(r["variant"], r["speaker"]): r for r in rows if "accuracy" in r}
    mark = {k: "*" if r["status"] != "done" else "" for k, r in done.items()}
    for v in variants:
        accs = [done[v, s]["accuracy"] for s in speakers if (v, s) in done]
        cells = [f"{done[v, s]['accuracy']:.1f}{mark[v, s]}" if (v, s) in done else "-"
                 for s in speakers]  # fmt: skip
        mean = f"{sum(accs) / len(accs):.1f}" if accs else "-"
        if accs and len(accs) < len(speakers):
            mean += f" ({len(accs)} of {len(speakers)})"
        conf = ", ".join(f"{c} ({n})" for c, n in top_confusions(
            [done[v, s] for s in speakers if (v, s) in done]))  # fmt: skip
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {mean} | {conf} |")
    unfinished = [r for r in rows if r["status"] != "done"]
    if unfinished:
        lines += ["", "Not finished (* in the table: stopped early, its best/ so far tested):"]
        lines += [f"- {r['variant']} / {r['speaker']}: {r['status']}" for r in unfinished]
    lines += ["", "Variants (recipe overrides):"]
    lines += [f"- {v}: {' '.join(meta['overrides'][v]) or '(the recipe as is)'}"
              for v in variants]  # fmt: skip
    return "\n".join(lines) + "\n"


def save(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write loso.json and loso.md (each through a temporary file and a rename)."""
    for name, text in (("loso.json", json.dumps({"meta": meta, "runs": rows}, indent=1)),
                       ("loso.md", markdown(meta, rows))):  # fmt: skip
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000, help="training steps per run")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--speakers", nargs="*", default=None,
                   help="held out in turn, space- or comma-separated (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--parallel", type=int, default=1, help="runs at once (child processes)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds: runs not started by then are skipped; trainings still "
                        "running are stopped and their best/ so far tested")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd")
    p.add_argument("--out", type=Path, default=Path("results/fsdd_loso"))
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="a speech run or saved model whose adapter and core start the "
                        "*init variants (e.g. a Kathleen ARCTIC run)")
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another override for every run (repeatable)")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if args.init_from is None and any("init" in v for v in args.variants):
        p.error("the *init variants need --init-from RUN")
    if args.steps < 1 or args.parallel < 1:
        p.error("--steps and --parallel must be at least 1")
    args.data, args.out, args.recipe = args.data.resolve(), args.out.resolve(), args.recipe
    if args.speakers is not None:  # "a,b" is two speakers, not one name for the override's list
        args.speakers = [n for item in args.speakers for n in item.split(",") if n.strip()]
        try:
            found = fsdd_speakers(args.data)
        except ValueError as e:
            p.error(str(e))
        unknown = [n for n in args.speakers if n not in found]
        if unknown:
            p.error(f"--speakers: no recordings of speaker {unknown[0]!r} in {args.data}; "
                    f"the speakers there: {', '.join(found)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    speakers = args.speakers or fsdd_speakers(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"steps": args.steps, "device": args.device, "precision": args.precision,
            "seed": args.seed, "speakers": speakers, "variants": args.variants,
            "recipe": str(args.recipe), "init_from": args.init_from, "set": args.set,
            "overrides": {v: [o.format(init=args.init_from) for o in VARIANTS[v]]
                          for v in args.variants}}  # fmt: skip
    deadline = time.time() + (args.budget if args.budget is not None else float("inf"))
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()

    def job(variant: str, speaker: str) -> None:
        row = run_one(args, variant, speaker, deadline)
        with lock:
            rows.append(row)
            rows.sort(key=lambda r: (args.variants.index(r["variant"]),
                                     speakers.index(r["speaker"])))  # fmt: skip
            save(args.out, meta, rows)
            acc = f" {row['accuracy']:.1f}%" if "accuracy" in row else ""
            print(f"{variant} / {speaker}: {row['status']}{acc}", flush=True)

    save(args.out, meta, rows)
    with ThreadPoolExecutor(args.parallel) as pool:
        for future in [pool.submit(job, v, s) for s in speakers for v in args.variants]:
            future.result()
    print((args.out / "loso.md").read_text())
    return rows


if __name__ == "__main__":
    main()
