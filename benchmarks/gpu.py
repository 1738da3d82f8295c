"""GPU figures for the docs: one model per family at a realistic size, in one run of ~3 minutes.

For each model: the training step (forward, loss, backward, AdamW) in fp32 and in bf16 autocast
and the bf16 inference forward (median of --steps timed steps after --warmup, each synchronised);
the FLOPs of one training step (``FlopCounterMode``: matmuls, convolutions and fused attention,
one bf16 step at the full batch on the benchmark's device) and MFU against the H200's datasheet
bf16 peak; the SDPA kernels that ran; whether the flash kernel alone can run the bf16 forward;
peak memory. The ViT also gets its bf16 step under the flash and under the math SDPA backend and,
if time is left, under ``torch.compile`` (in a child process that is killed at the deadline);
the speech models their step with precomputed log-mel input, which prices the waveform front end.
The JSON is rewritten after every model; one that fails records its error and the run goes on.
A watchdog ends the process at --budget + 15 s whatever it is doing. One script in one file
(over 400 lines, of small functions) on purpose: a lent GPU session runs it as a whole, and the
measurement and its table read top to bottom.

    PYTHONPATH=. python benchmarks/gpu.py --out gpu.json                 # CUDA machine
    PYTHONPATH=. python benchmarks/gpu.py --smoke --out /tmp/gpu.json    # tiny models, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import zoo
from zoo.atomic import atomic_write_bytes

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16 tensor-core FLOP/s (NVIDIA datasheet; 1979 sparse)
PEAK_NOTE = "989 TFLOP/s: H100/H200 SXM dense bf16 datasheet peak"
SPEECH_SECONDS = 10.0
TOKENS_PER_SECOND = 12  # CTC targets per second of audio, about a character rate
COMPILE_MIN_S = 60  # seconds left below which compiling is not started
FRONTEND_BOTTLENECK = 0.25  # the front end is called a bottleneck above this share of a step

# name -> (family, batch); smoke runs use the tiny test models, batch 2, on the CPU
MODELS = {
    "vit_base_patch16_224": ("vision", 128),
    "mt_transformer_base": ("translation", 128),
    "asr_conformer_ctc_small": ("speech", 32),
    "asr_transformer_ctc_small": ("speech", 32),
}
SMOKE_MODELS = {
    "test_vit": ("vision", 2),
    "test_mt_transformer": ("translation", 2),
    "test_asr_transformer": ("speech", 2),
}
OVERRIDES = {"vit_base_patch16_224": {"num_classes": 1000}}


@dataclass
class Workload:
    """One batch for ``model(*inputs)``, a scalar loss on the model's output, and what the batch
    holds (e.g. ``{"images": 128}``; the first entry is the headline throughput unit)."""

    inputs: tuple
    loss: Callable[[Any], Tensor]
    units: dict[str, float]


def vision_work(cfg: Any, batch: int, device: torch.device, seconds: float) -> Workload:
    images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    labels = torch.randint(0, cfg.num_classes, (batch,), device=device)
    patches = batch * (cfg.img_size // cfg.patch_size) ** 2
    loss = lambda logits: F.cross_entropy(logits.float(), labels)
    return Workload((images,), loss, {"images": batch, "patches": patches})


def translation_work(cfg: Any, batch: int, device: torch.device, seconds: float) -> Workload:
    length = 64  # source and target tokens
    src = torch.randint(4, cfg.vocab_size, (batch, length), device=device)  # 0-3: special ids
    tgt = torch.randint(4, cfg.vocab_size, (batch, length + 1), device=device)

    def loss(logits: Tensor) -> Tensor:  # (B, T, V) teacher-forced logits
        return F.cross_entropy(logits.flatten(0, 1).float(), tgt[:, 1:].flatten())

    units = {"target_tokens": batch * length, "tokens": 2 * batch * length}
    return Workload((src, tgt[:, :-1]), loss, units)


def speech_work(
    cfg: Any, batch: int, device: torch.device, seconds: float, fbank: bool = False
) -> Workload:
    samples = int(seconds * cfg.sample_rate)
    if fbank:  # precomputed log-mel (B, T, n_mels): 25 ms windows, 10 ms hop, as the model's
        frames = 1 + (samples - cfg.sample_rate // 40) // (cfg.sample_rate // 100)
        audio = torch.randn(batch, frames, cfg.n_mels, device=device)
    else:
        audio = torch.randn(batch, samples, device=device)
    lengths = torch.full((batch,), audio.shape[1], device=device)
    u = int(TOKENS_PER_SECOND * seconds)
    targets = torch.randint(2, cfg.vocab_size, (batch, u), device=device)  # 0 blank, 1 EOS
    target_lengths = torch.full((batch,), u, device=device)

    def loss(out: Any) -> Tensor:  # SpeechOutput: logits (B, T', V), lengths (B,)
        log_probs = out.logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
        return F.ctc_loss(log_probs, targets, out.lengths, target_lengths, zero_infinity=True)

    return Workload((audio, lengths), loss, {"audio_seconds": batch * seconds})


WORKLOADS = {"vision": vision_work, "translation": translation_work, "speech": speech_work}


class SDPAKernels(TorchDispatchMode):
    """Counts the fused attention kernels that run (the math backend decomposes into matmuls
    before it reaches a dispatch mode, so it shows as none)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)  # e.g. "aten._scaled_dot_product_flash_attention.default"
        if "scaled_dot_product" in name:
            self.seen[name.removeprefix("aten.").split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(model: nn.Module, work: Workload, bf16: bool, device: torch.device) -> Callable:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> Tensor:
        with autocast(device, bf16):
            loss = work.loss(model(*work.inputs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def infer_step(model: nn.Module, work: Workload, device: torch.device) -> Callable:
    def step() -> Any:
        with torch.inference_mode(), autocast(device, True):
            return model(*work.inputs)

    return step


def timed(step: Callable, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Median and min seconds per step, steady-state peak memory, the last loss if any."""
    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(args.steps):
        start = time.perf_counter()
        out = step()
        sync(device)
        times.append(time.perf_counter() - start)
    result = {"median_s": statistics.median(times), "min_s": min(times), "steps": len(times)}
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if isinstance(out, Tensor) and out.numel() == 1:
        result["loss"] = float(out)
    return result


def count_flops(model: nn.Module, work: Workload, device: torch.device) -> dict[str, Any]:
    """FLOPs of one bf16 training forward and backward, and the SDPA kernels they ran."""
    kernels = SDPAKernels()
    with FlopCounterMode(display=False) as counter, kernels:
        with autocast(device, True):
            loss = work.loss(model(*work.inputs))
        forward = counter.get_total_flops()
        loss.backward()
    model.zero_grad(set_to_none=True)
    train = counter.get_total_flops()
    return {"forward": forward, "train": train, "sdpa_kernels": dict(kernels.seen)}


def flash_check(model: nn.Module, work: Workload, device: torch.device) -> dict[str, Any]:
    """Run the bf16 forward with only the flash kernel allowed; if it cannot, say why."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                infer_step(model, work, device)()
            sync(device)
            return {"ok": True}
        except RuntimeError as e:  # "No available kernel": the reasons come as warnings
            reasons = [str(w.message)[:500] for w in caught]
            return {"ok": False, "error": str(e)[:500], "reasons": reasons}


def backend_ratio(model: nn.Module, work: Workload, args, device) -> dict[str, Any]:
    """The bf16 training step under the flash kernel alone and under the math backend alone."""
    out = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        with sdpa_kernel(backend):
            out[name] = timed(train_step(model, work, True, device), args, device)
        free_memory()
    out["math_over_flash"] = out["math"]["median_s"] / out["flash"]["median_s"]
    return out


def frontend_share(name: str, batch: int, args, device: torch.device) -> dict[str, Any]:
    """bf16 train and inference steps on precomputed log-mel: the waveform front end's share."""
    model = zoo.create_model(name, features="fbank").to(device)
    work = speech_work(zoo.get_config(name), batch, device, args.seconds, fbank=True)
    out = {"train_bf16": timed(train_step(model, work, True, device), args, device)}
    model.eval()
    out["infer_bf16"] = timed(infer_step(model, work, device), args, device)
    return out


def guarded(record: dict, key: str, fn: Callable[[], Any], args) -> None:
    """record[key] = fn(), or the error it raised, so that one failure keeps the rest."""
    if time.perf_counter() - args.start > args.budget - 15:
        record[key] = {"skipped": f"past the {args.budget:.0f} s time budget"}
        return
    try:
        record[key] = fn()
    except Exception as e:  # noqa: BLE001 - a benchmark records every failure and goes on
        record[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(f"  {key}: {record[key]['error'][:300]}", flush=True)
    free_memory()


def bench_model(name: str, family: str, batch: int, args, device: torch.device) -> dict:
    """Every row of one model; a row that fails records its error."""
    overrides = OVERRIDES.get(name, {})
    work = WORKLOADS[family](zoo.get_config(name, **overrides), batch, device, args.seconds)
    rec: dict[str, Any] = {"family": family, "batch": batch, "units": work.units}
    torch.manual_seed(0)
    measure(zoo.create_model(name, **overrides).to(device), work, rec, args, device)
    free_memory()  # the model is gone with measure's frame
    if family == "speech":
        guarded(rec, "fbank_input", lambda: frontend_share(name, batch, args, device), args)
    add_rates(rec, args)
    return rec


def measure(model: nn.Module, work: Workload, rec: dict, args, device: torch.device) -> None:
    """The rows that time ``model`` itself."""
    rec["params"] = sum(p.numel() for p in model.parameters())
    model.train()
    guarded(rec, "flops", lambda: count_flops(model, work, device), args)
    for row, bf16 in (("train_fp32", False), ("train_bf16", True)):
        step = lambda b=bf16: timed(train_step(model, work, b, device), args, device)
        guarded(rec, row, step, args)
    model.eval()
    guarded(rec, "infer_bf16", lambda: timed(infer_step(model, work, device), args, device), args)
    guarded(rec, "flash_check", lambda: flash_check(model, work, device), args)
    model.train()
    if rec["family"] == "vision":
        guarded(rec, "sdpa_backends", lambda: backend_ratio(model, work, args, device), args)


def add_rates(rec: dict, args) -> None:
    """Throughput, achieved TFLOP/s and MFU of each timed row; the front end's share."""
    flops = rec.get("flops", {})
    for row in ("train_fp32", "train_bf16", "infer_bf16"):
        r = rec.get(row, {})
        if "median_s" not in r:
            continue
        r.update({f"{k}_per_s": v / r["median_s"] for k, v in rec["units"].items()})
        n = flops.get("forward" if row.startswith("infer") else "train")
        if n:
            r["tflops"] = n / r["median_s"] / 1e12
            if args.device == "cuda" and row.endswith("bf16"):
                r["mfu"] = n / r["median_s"] / PEAK_BF16
                if args.matmul_peak:
                    r["of_measured_matmul_peak"] = n / r["median_s"] / args.matmul_peak
    fb = rec.get("fbank_input", {})
    for row in ("train_bf16", "infer_bf16"):
        wave, mel = rec.get(row, {}).get("median_s"), fb.get(row, {}).get("median_s")
        if wave and mel:
            fb[f"frontend_share_{row}"] = max(0.0, 1 - mel / wave)
    if fb.get("frontend_share_train_bf16", 0) > FRONTEND_BOTTLENECK:
        fb["note"] = "the waveform front end is a bottleneck of the bf16 training step"


def matmul_peak(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 FLOP/s of a square matmul: the practical ceiling beside the datasheet's."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - start)


def run_compile(args, device: torch.device) -> dict[str, Any]:
    """The ViT's compiled bf16 steps, in a child process killed at the deadline (compilation
    cannot be interrupted from inside, and its workers could outlive a timeout)."""
    left = args.budget - (time.perf_counter() - args.start) - 10
    if left < COMPILE_MIN_S:
        return {"skipped": f"{left:.0f} s left of the time budget, too little to compile"}
    out = Path(tempfile.mkdtemp()) / "compile.json"
    cmd = [sys.executable, __file__, "--compile-child", "--out", str(out), "--budget", str(left)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--device", args.device] + (["--smoke"] if args.smoke else [])
    print(f"torch.compile of the ViT in a child process, at most {left:.0f} s", flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)  # its own group, to kill it whole
    try:
        result = {"returncode": proc.wait(timeout=left)}
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        result = {"killed": f"still running after {left:.0f} s"}
    if out.exists():  # the rows the child finished
        result.update(json.loads(out.read_text()))
    return result


def compile_child(args) -> None:
    """Body of the child process: compiled bf16 inference, then training, written as they end."""
    device = torch.device(args.device)
    models = SMOKE_MODELS if args.smoke else MODELS
    name = next(n for n, (family, _) in models.items() if family == "vision")
    batch, overrides = models[name][1], OVERRIDES.get(name, {})
    model = zoo.create_model(name, **overrides).to(device)
    work = vision_work(zoo.get_config(name, **overrides), batch, device, 0)
    compiled, rec = torch.compile(model), {"model": name, "batch": batch}
    for row, train in (("infer_bf16", False), ("train_bf16", True)):
        guarded(rec, row, lambda t=train: compiled_row(model, compiled, t, work, args), args)
        if "median_s" in rec[row]:
            rec[row]["images_per_s"] = batch / rec[row]["median_s"]
        Path(args.out).write_text(json.dumps(rec, indent=1))
        print(f"compiled {row}: {json.dumps(rec[row])}", flush=True)


def compiled_row(model: nn.Module, compiled: nn.Module, train: bool, work: Workload, args) -> dict:
    """Seconds of the first (compiling) call, then the timed steps."""
    device = torch.device(args.device)
    model.train(train)
    step = train_step(compiled, work, True, device) if train else infer_step(compiled, work, device)
    start = time.perf_counter()
    step()
    sync(device)
    return {"first_step_s": time.perf_counter() - start, **timed(step, args, device)}


def meta(args, device: torch.device) -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "smoke": args.smoke}
    info.update(device=str(device), steps=args.steps, warmup=args.warmup, seconds=args.seconds)
    info["flops_counted"] = "one bf16 step at the full batch on the benchmark device"
    info["fp32_matmul_precision"] = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        start = time.perf_counter()
        torch.zeros(1, device=device)
        sync(device)
        info["cuda_init_s"] = time.perf_counter() - start
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info.update(peak_bf16_flops=PEAK_BF16, peak_note=PEAK_NOTE)
        args.matmul_peak = matmul_peak(device)
        info["measured_bf16_matmul_flops"] = args.matmul_peak
    return info


def fmt(x: Any, spec: str, scale: float = 1.0) -> str:
    return format(x * scale, spec) if isinstance(x, int | float) else "-"


HEADER = (
    "| model | batch | fp32 train ms | bf16 train ms | bf16 train throughput | bf16 infer ms "
    "| GFLOP/train step | MFU bf16 | peak GiB bf16 | SDPA kernels (bf16) | flash alone |"
)


def table_row(name: str, r: dict) -> str:
    if "error" in r:
        return f"| {name} | error: {r['error'][:100]} |" + " |" * 9
    t32, t16, inf = (r.get(k, {}) for k in ("train_fp32", "train_bf16", "infer_bf16"))
    unit = next(iter(r["units"]))
    flops = r.get("flops", {})
    kernels = {k.removeprefix("_scaled_dot_product_").removesuffix("_backward")
               for k in flops.get("sdpa_kernels", {})}  # fmt: skip
    flash = r.get("flash_check", {})
    rate = f"{fmt(t16.get(unit + '_per_s'), ',.0f')} {unit}/s"
    cells = [name, r["batch"], fmt(t32.get("median_s"), ".1f", 1e3),
             fmt(t16.get("median_s"), ".1f", 1e3), rate,
             fmt(inf.get("median_s"), ".1f", 1e3), fmt(flops.get("train"), ",.4g", 1e-9),
             fmt(t16.get("mfu"), ".1%"), fmt(t16.get("peak_mem_gib"), ".1f"),
             (", ".join(sorted(kernels)) or "none") if "sdpa_kernels" in flops else "-",
             {True: "yes", False: "no"}.get(flash.get("ok"), "-")]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_notes(name: str, r: dict) -> list[str]:
    notes = []
    ratio = r.get("sdpa_backends", {}).get("math_over_flash")
    if ratio:
        notes.append(f"{name}: bf16 train step under the math SDPA backend {ratio:.2f}x flash's")
    fb = r.get("fbank_input", {})
    if "frontend_share_train_bf16" in fb:
        notes.append(f"{name}: waveform front end {fb['frontend_share_train_bf16']:.0%} of the "
                     f"bf16 train step, {fb.get('frontend_share_infer_bf16', 0):.0%} of inference"
                     + (f"; {fb['note']}" if "note" in fb else ""))  # fmt: skip
    flash = r.get("flash_check", {})
    if flash.get("ok") is False:
        notes.append(f"{name}: flash alone fails: {flash['error'][:200]}")
    for key, value in r.items():
        if isinstance(value, dict) and ("error" in value or "skipped" in value):
            notes.append(f"{name} {key}: {value.get('error', value.get('skipped'))[:200]}")
    return notes


def compile_note(comp: dict, eager: dict) -> str:
    if "median_s" not in comp.get("train_bf16", {}):
        return f"torch.compile: {json.dumps(comp)[:300]}"
    ms = comp["train_bf16"]["median_s"]
    speedup = f", {eager['median_s'] / ms:.2f}x eager" if "median_s" in eager else ""
    return (f"torch.compile ViT bf16 train step {ms * 1e3:.1f} ms{speedup} "
            f"(first step {comp['train_bf16']['first_step_s']:.0f} s)")  # fmt: skip


def table(results: dict) -> str:
    """A compact Markdown table of the headline figures, and the notes under it."""
    lines, notes = [HEADER, "|" + " --- |" * 11], []
    for name, r in results["models"].items():
        lines.append(table_row(name, r))
        notes += table_notes(name, r)
    if "compile" in results:
        vit = results["models"].get("vit_base_patch16_224", {})
        notes.append(compile_note(results["compile"], vit.get("train_bf16", {})))
    if results["meta"].get("peak_note"):
        notes.append("MFU against " + results["meta"]["peak_note"])
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny models, batch 2, on the CPU")
    parser.add_argument("--device", default=None, help="default: cpu with --smoke, else cuda")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget", type=float, default=200.0, help="seconds for the run")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.start = time.perf_counter()  # the budget counts from here; imports take ~10 s before
    if args.smoke:
        args.steps, args.warmup, args.compile, args.budget = 2, 1, False, float("inf")
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.seconds = 2.0 if args.smoke else SPEECH_SECONDS  # of audio per utterance
    args.matmul_peak = None
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not args.smoke:  # a hard stop: whatever hangs, the process ends and the JSON stays
        faulthandler.dump_traceback_later(args.budget + 15, exit=True)
    try:
        if args.compile_child:
            compile_child(args)
            return {}
        return run(args)
    finally:
        if not args.smoke:
            faulthandler.cancel_dump_traceback_later()


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    results: dict[str, Any] = {"meta": meta(args, device), "models": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(results["meta"]), flush=True)
    for name, (family, batch) in (SMOKE_MODELS if args.smoke else MODELS).items():
        print(f"{name} (batch {batch}) at {time.perf_counter() - args.start:.0f} s", flush=True)
        try:
            results["models"][name] = bench_model(name, family, batch, args, device)
        except Exception as e:  # noqa: BLE001 - record it, go on to the next model
            results["models"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            free_memory()
        print(json.dumps(results["models"][name]), flush=True)
        results["elapsed_s"] = time.perf_counter() - args.start
        atomic_write_bytes(out, json.dumps(results, indent=1).encode())
    if args.compile:
        results["compile"] = run_compile(args, device)
        vit = results["models"].get(next(iter(MODELS)), {})
        add_rates({"units": {}, "flops": vit.get("flops", {}), **results["compile"]}, args)
    results["elapsed_s"] = time.perf_counter() - args.start
    atomic_write_bytes(out, json.dumps(results, indent=1).encode())
    print(table(results), flush=True)
    return results


if __name__ == "__main__":
    main()
