"""Our ViT against timm's VisionTransformer of the identical configuration, in one process.

Rows: training step (fp32, bf16 autocast) and inference (fp32, bf16 autocast, bf16 autocast
with torch.compile, and int8 static quantization with torch.compile through zoo.quantize when
torchao is installed; each applied to both models), at 224 px (vit_tiny_patch16_224) and 28 px
(vit_tiny_patch4_28).
The two models are timed interleaved, several repeats each; the median is reported with the
fraction of the machine's measured matmul peak. The compiled and int8 rows also time our eager
fp32 model in the same rounds and print their speed-up over it.

    python benchmarks/vision.py                 # all rows
    python benchmarks/vision.py --repeats 3 --models vit_tiny_patch4_28
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import timm
import torch
from timing import interleaved  # benchmarks/timing.py, beside this script
from torch import nn

import zoo

BATCH = {"vit_tiny_patch16_224": 32, "vit_tiny_patch4_28": 256}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    """Measured FLOP/s (int8: OP/s) of a square matmul, the machine's practical peak for this
    dtype."""
    if dtype == torch.int8:  # int8 x int8 -> int32, the kernel quantized Linear layers use
        a = torch.randint(-128, 128, (n, n), device=device, dtype=dtype)
        b = torch.randint(-128, 128, (n, n), device=device, dtype=dtype)
        mm = torch._int_mm
    else:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        mm = torch.matmul
    for _ in range(3):
        mm(a, b)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            mm(a, b)
        _sync(device)
        times.append((time.perf_counter() - start) / 5)
    return 2 * n**3 / min(times)


def vit_flops(cfg, train: bool) -> float:
    """Matmul FLOPs per image: patch embedding, attention and MLP per layer, head; x3 to train."""
    n = (cfg.img_size // cfg.patch_size) ** 2 + (cfg.global_pool == "cls")
    d = cfg.core.dim
    patch = 2 * (n - 1) * cfg.patch_size**2 * cfg.in_chans * d
    per_layer = 2 * n * d * (3 * d + d + 2 * int(cfg.core.mlp_ratio * d)) + 4 * n * n * d
    forward = patch + cfg.core.depth * per_layer + 2 * d * cfg.num_classes
    return forward * (3 if train else 1)


def timm_twin(model: nn.Module) -> nn.Module:
    """timm's VisionTransformer with the same configuration and the same weights."""
    cfg = model.cfg
    twin = timm.models.vision_transformer.VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        embed_dim=cfg.core.dim,
        depth=cfg.core.depth,
        num_heads=cfg.core.num_heads,
        mlp_ratio=cfg.core.mlp_ratio,
        qkv_bias=cfg.core.qkv_bias,
        global_pool="token",
    )
    from zoo.interop.timm import from_timm

    model.load_state_dict(from_timm(twin).state_dict())
    return twin


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer_step(model: nn.Module, images: torch.Tensor, bf16: bool):
    @torch.inference_mode()
    def step() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(images)

    return step


def bench_model(name: str, args, device: torch.device, peaks: dict) -> list[tuple]:
    torch.manual_seed(0)
    ours = zoo.create_model(name).to(device)
    theirs = timm_twin(ours).to(device)
    batch = args.batch or BATCH.get(name, 32)
    cfg = ours.cfg
    images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    labels = torch.randint(0, cfg.num_classes, (batch,), device=device)

    def timed(steps: dict) -> dict:
        return interleaved(steps, args.repeats, args.iters, warmup=3, sync=lambda: _sync(device))

    rows = []
    for bf16 in (False, True) if args.train else ():
        ours.train(), theirs.train()
        t = timed({"ours": train_step(ours, images, labels, bf16),
                   "timm": train_step(theirs, images, labels, bf16)})
        prec = "bf16" if bf16 else "fp32"
        rows.append((name, "train " + prec, batch, t, cfg, True, prec))
    ours.eval(), theirs.eval()
    for bf16 in (False, True):
        t = timed({"ours": infer_step(ours, images, bf16),
                   "timm": infer_step(theirs, images, bf16)})
        prec = "bf16" if bf16 else "fp32"
        rows.append((name, "infer " + prec, batch, t, cfg, False, prec))
    return rows + _optimised_rows(name, args, ours, theirs, images, timed)


def _optimised_rows(name: str, args, ours, theirs, images: torch.Tensor, timed) -> list[tuple]:
    """The compiled (--compile) and int8 (--int8) inference rows; each times our eager model
    too, the speed-up's baseline, in the same rounds so host drift cancels out."""
    batch, cfg, rows = len(images), ours.cfg, []
    if args.compile:  # both compiled the same way, so the ratio stays like for like
        t = timed({
            "ours": infer_step(torch.compile(ours), images, True),
            "timm": infer_step(torch.compile(theirs), images, True),
            "eager": infer_step(ours, images, False),
        })
        rows.append((name, "infer bf16+compile", batch, t, cfg, False, "bf16"))
    if args.int8:  # calibrated on random images: the speed does not depend on the ranges
        from zoo.quantize import quantize_int8

        calibration = [torch.randn_like(images) for _ in range(2)]
        t = timed({
            "ours": infer_step(quantize_int8(ours, calibration), images, False),
            "timm": infer_step(quantize_int8(theirs, calibration), images, False),
            "eager": infer_step(ours, images, False),
        })
        rows.append((name, "infer int8+compile", batch, t, cfg, False, "int8"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BATCH))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    parser.add_argument("--no-train", dest="train", action="store_false", help="inference only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.int8 and (device.type != "cpu" or importlib.util.find_spec("torchao") is None):
        print("int8 rows skipped: they need the CPU and torchao (pip install -e '.[quant]')")
        args.int8 = False
    kinds = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if args.int8:
        kinds["int8"] = torch.int8
    peaks = {k: matmul_peak(dtype, device) for k, dtype in kinds.items()}
    print(
        f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"timm {timm.__version__}"
    )
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} G(FL)OP/s" for k, v in peaks.items()))
    header = f"{'model':<22} {'row':<20} {'batch':>5} {'ours img/s':>10} {'timm img/s':>10} "
    print(header + f"{'ratio':>6} {'ours %peak':>10}")
    for name in args.models:
        for model, row, batch, t, cfg, train, prec in bench_model(name, args, device, peaks):
            ours, theirs = batch / t["ours"], batch / t["timm"]
            frac = ours * vit_flops(cfg, train) / peaks[prec]
            extra = ""
            if "eager" in t:  # our eager fp32 model, timed alongside: speed-up (its img/s)
                eager = batch / t["eager"]
                extra = f"  ({ours / eager:.2f}x our eager fp32 at {eager:.1f})"
            print(
                f"{model:<22} {row:<20} {batch:>5} {ours:>10.1f} {theirs:>10.1f} "
                f"{ours / theirs:>5.2f}x {100 * frac:>9.0f}%{extra}"
            )


if __name__ == "__main__":
    main()
