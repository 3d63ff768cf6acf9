"""End-to-end benchmark (not a test): the VGGT-1B aggregator in FP32, BF16, W8A8 and W4A4.

    python scripts/bench_e2e.py                          # H100: S = 1, 10, 20, 40 frames, 518 px
    python scripts/bench_e2e.py --frames 20 --schemes bf16 w4a4 --iters 5 --json out.json
    python scripts/bench_e2e.py --smoke                  # CPU, tiny 2-block model, torch backend

The aggregator (DINO patch embed + 24 frame + 24 global blocks, random weights) is built once
directly on the GPU in bf16. FP32 is that model cast up; W8A8 / W4A4 replace the 192 block
linears by deploy.Int8Linear / Int4Linear, converted layer by layer from a DSFQ QuantLinear
(random Hadamard, smoothing vector, LWC and LAC clips), so the timed path is the deployed one:
fused FWHT + divide + clip + per-token quant, then the int GEMM with a bf16 epilogue. Everything
else (patch embed, attention, LayerNorms, RoPE) runs in bf16 (FP32 for the FP32 row).

Latency: CUDA events around one aggregator forward under inference_mode, after ``--warmup``
calls, median of ``--iters``. Peak: torch.cuda.max_memory_allocated during those calls (weights
+ activations, the 24 kept layer outputs included). FP32 uses PyTorch's default matmul precision
(TF32 off) unless --tf32. The table is printed last; --json writes every number.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import statistics
import sys
import time

import torch

from qvggt_lib.deploy import from_quant_linear
from qvggt_lib.model import get_config
from qvggt_lib.model.aggregator import Aggregator
from qvggt_lib.quant.hadamard import RandomHadamard
from qvggt_lib.quant.linear import QuantLinear
from qvggt_lib.quant.quantizer import QuantSpec
from qvggt_lib.quant.targets import quantizable_linears, set_submodule

SCHEMES = ("fp32", "bf16", "w8a8", "w4a4")
BITS = {"w8a8": (8, 8), "w4a4": (4, 4)}


def bench_config(name: str, depth: int | None = None, img_size: int | None = None):
    """A preset with optional depth / image size (heads' layer indices clamped to the depth)."""
    overrides = {}
    if depth:
        base = get_config(name)
        overrides["depth"] = depth
        overrides["intermediate_layer_idx"] = tuple(
            min(i, depth - 1) for i in base.intermediate_layer_idx
        )
    if img_size:
        overrides["img_size"] = img_size
    return get_config(name, **overrides)


def build_aggregator(config, device, dtype, seed=0) -> Aggregator:
    """Random-weight aggregator built on ``device`` in ``dtype`` (no CPU copy, no fp32 detour)."""
    torch.manual_seed(seed)
    with torch.device(device):
        agg = Aggregator(config)
    for module in agg.modules():  # the training init of the linears (default init is fine too)
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)
    return agg.to(dtype).eval()


class _BlocksOnly(torch.nn.Module):
    """quantizable_linears looks for ``aggregator.<scope>``: give it that path."""

    def __init__(self, agg):
        super().__init__()
        self.aggregator = agg


@torch.no_grad()
def quantize_aggregator(agg: Aggregator, bits: tuple[int, int], backend: str, seed=0) -> Aggregator:
    """In place: every frame/global block linear -> a deployed DSFQ layer (one at a time)."""
    holder = _BlocksOnly(agg)
    gen = torch.Generator().manual_seed(seed)
    for index, (name, linear) in enumerate(quantizable_linears(holder).items()):
        k = linear.in_features
        smooth = (torch.rand(k, generator=gen) + 0.5).to(linear.weight.device)
        fp32 = torch.nn.Linear(k, linear.out_features, device=linear.weight.device)
        fp32.load_state_dict({n: t.float() for n, t in linear.state_dict().items()})
        layer = QuantLinear.from_float(
            fp32,
            QuantSpec(bits[0], "per_channel"),
            QuantSpec(bits[1], "per_token"),
            rotation=RandomHadamard(k, seed * 1_000_003 + index),
            smooth=smooth,
            learnable_weight_clip=True,
            learnable_act_clip=True,
        ).eval()
        set_submodule(holder, name, from_quant_linear(layer, backend=backend))
        del layer, fp32
    return agg


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def time_forward(agg, images, warmup: int, iters: int, cuda: bool) -> tuple[float, int | None]:
    """(median ms, peak bytes or None) of ``agg(images)``."""
    with torch.inference_mode():
        for _ in range(warmup):
            agg(images)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(iters):
            if cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                out = agg(images)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                tic = time.perf_counter()
                out = agg(images)
                times.append((time.perf_counter() - tic) * 1e3)
            del out
        peak = torch.cuda.max_memory_allocated() if cuda else None
    return statistics.median(times), peak


def run(args) -> dict:
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke (CPU) or on a GPU machine")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    config = bench_config(args.config, args.depth, args.img_size)
    base = build_aggregator(config, args.device, torch.bfloat16)
    results = {
        "device": torch.cuda.get_device_name()
        if cuda
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "config": args.config,
        "depth": config.depth,
        "img_size": config.img_size,
        "backend": args.backend,
        "warmup": args.warmup,
        "iters": args.iters,
        "tf32": bool(args.tf32),
        "rows": [],
    }
    for scheme in args.schemes:
        if scheme == "bf16":
            agg = base
        elif scheme == "fp32":
            agg = copy.deepcopy(base).float()
        else:
            agg = quantize_aggregator(copy.deepcopy(base), BITS[scheme], args.backend)
        dtype = torch.float32 if scheme == "fp32" else torch.bfloat16
        wbytes = weight_bytes(agg)
        for frames in args.frames:
            gen = torch.Generator(device="cpu").manual_seed(frames)
            images = torch.rand(1, frames, 3, config.img_size, config.img_size, generator=gen)
            images = images.to(device=args.device, dtype=dtype)
            row = {"scheme": scheme, "frames": frames, "weight_bytes": wbytes}
            try:
                row["ms"], row["peak_bytes"] = time_forward(
                    agg, images, args.warmup, args.iters, cuda
                )
            except torch.cuda.OutOfMemoryError as exc:  # report it, keep going
                row["ms"], row["peak_bytes"], row["error"] = None, None, f"OOM: {exc}"[:200]
            results["rows"].append(row)
            if args.json:  # after every row, so a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)
            print(
                f"{scheme} S={frames}: {row['ms'] if row['ms'] is None else round(row['ms'], 2)} ms",
                file=sys.stderr,
                flush=True,
            )
            del images
        if agg is not base:
            del agg
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return results


def table(results: dict) -> str:
    rows = results["rows"]
    bf16 = {r["frames"]: r["ms"] for r in rows if r["scheme"] == "bf16"}
    lines = [
        (
            f"aggregator {results['config']} (depth {results['depth']}, {results['img_size']} px), "
            f"{results['device']}, torch {results['torch']}, backend {results['backend']}, "
            f"median of {results['iters']} after {results['warmup']} warm-up"
        ),
        "",
        "| scheme | frames | latency (ms) | vs BF16 | peak memory (MiB) | weights (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = "OOM" if r["ms"] is None else f"{r['ms']:.2f}"
        ref = bf16.get(r["frames"])
        speed = f"{ref / r['ms']:.2f}x" if ref and r["ms"] else "-"
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:,.0f}"
        lines.append(
            f"| {r['scheme']} | {r['frames']} | {ms} | {speed} | {peak} | "
            f"{r['weight_bytes'] / 2**20:,.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, nargs="+", default=[1, 10, 20, 40])
    p.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--config", default="vggt-1b")
    p.add_argument("--depth", type=int, default=None, help="override the number of block pairs")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "torch"))
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the FP32 row")
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, tiny config, depth 2, torch backend, S = 1 and 2, 1 iteration",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.config, args.depth, args.device, args.backend = "tiny", 2, "cpu", "torch"
        args.frames, args.warmup, args.iters = [1, 2], 0, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
