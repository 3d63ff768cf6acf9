"""End-to-end benchmark of the deployed aggregator: latency and memory in fp32, bf16, W8A8 and W4A4.

The aggregator (DINO patch embed + frame and global blocks, random weights: right for speed,
meaningless for accuracy) is built once directly on the device in bf16. FP32 is that model
cast up; W8A8 / W4A4 replace the block linears by Int8Linear / Int4Linear, converted layer by
layer from a DSFQ QuantLinear (random Hadamard, smoothing vector, LWC and LAC clips), so the
timed path is the deployed one: fused FWHT + divide + clip + per-token quant, then the int
GEMM with a bf16 epilogue. Everything else (patch embed, attention, LayerNorms, RoPE) runs in
bf16 (FP32 for the FP32 row). Latency: the median of ``iters`` aggregator forwards under
inference_mode after ``warmup`` calls (qvggt_kernels.timing); peak: the CUDA allocator's
maximum during those calls (weights + activations), None on CPU.
"""

from __future__ import annotations

import copy
import gc
import json
import platform
import sys
from dataclasses import dataclass, field

import torch
from qvggt_kernels.timing import measure

from ..eval.tables import markdown_table
from ..model import get_config
from ..model.aggregator import Aggregator
from ..quant.configs import layer_seed
from ..quant.hadamard import RandomHadamard
from ..quant.linear import QuantLinear
from ..quant.quantizer import QuantSpec
from ..quant.targets import quantizable_linears
from .convert import from_quant_linear

SCHEMES = ("fp32", "bf16", "w8a8", "w4a4")
SCHEME_BITS = {"w8a8": (8, 8), "w4a4": (4, 4)}


@dataclass
class BenchSettings:
    """What to time: ``schemes`` x ``frames`` on the ``config`` preset (optional depth / size)."""

    frames: list[int] = field(default_factory=lambda: [1, 10, 20, 40])
    schemes: list[str] = field(default_factory=lambda: list(SCHEMES))
    warmup: int = 3
    iters: int = 10
    config: str = "vggt-1b"
    depth: int | None = None
    img_size: int | None = None
    device: str = "cuda"
    backend: str = "auto"
    tf32: bool = False

    @classmethod
    def smoke(cls) -> BenchSettings:
        """CPU, tiny config, depth 2, torch backend, S = 1 and 2, one iteration."""
        return cls(frames=[1, 2], warmup=0, iters=1, config="tiny", depth=2, device="cpu",
                   backend="torch")


def bench_config(name: str, depth: int | None = None, img_size: int | None = None):
    """A preset with optional depth / image size (heads' layer indices clamped to the depth)."""
    overrides = {}
    if depth:
        base = get_config(name)
        overrides["depth"] = depth
        overrides["intermediate_layer_idx"] = tuple(min(i, depth - 1) for i in base.intermediate_layer_idx)
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


@torch.no_grad()
def quantize_aggregator(agg: Aggregator, bits: tuple[int, int], backend: str, seed=0) -> Aggregator:
    """In place: every frame/global block linear -> a deployed DSFQ layer (one at a time)."""
    holder = torch.nn.Module()
    holder.aggregator = agg  # quantizable_linears looks for "aggregator.<scope>"
    gen = torch.Generator().manual_seed(seed)
    for index, (name, linear) in enumerate(quantizable_linears(holder).items()):
        k = linear.in_features
        smooth = (torch.rand(k, generator=gen) + 0.5).to(linear.weight.device)
        fp32 = torch.nn.Linear(k, linear.out_features, device=linear.weight.device)
        fp32.load_state_dict({n: t.float() for n, t in linear.state_dict().items()})
        layer = QuantLinear.from_float(
            fp32, QuantSpec(bits[0], "per_channel"), QuantSpec(bits[1], "per_token"),
            rotation=RandomHadamard(k, layer_seed(seed, index)), smooth=smooth,
            learnable_weight_clip=True, learnable_act_clip=True).eval()
        holder.set_submodule(name, from_quant_linear(layer, backend=backend))
        del layer, fp32
    return agg


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def run(settings: BenchSettings, json_path=None) -> dict:
    """Time every scheme at every frame count; with json_path, rewrite the results after each row
    (a run cut short keeps what it measured)."""
    cuda = settings.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke (CPU) or on a GPU machine")
    unknown = sorted(set(settings.schemes) - set(SCHEMES))
    if unknown:
        raise ValueError(f"unknown scheme(s) {unknown}; choose from {SCHEMES}")
    if settings.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    config = bench_config(settings.config, settings.depth, settings.img_size)
    base = build_aggregator(config, settings.device, torch.bfloat16)
    results = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "config": settings.config, "depth": config.depth,
        "img_size": config.img_size, "backend": settings.backend, "warmup": settings.warmup,
        "iters": settings.iters, "tf32": bool(settings.tf32), "rows": [],
    }
    for scheme in settings.schemes:
        if scheme == "bf16":
            agg = base
        elif scheme == "fp32":
            agg = copy.deepcopy(base).float()
        else:
            agg = quantize_aggregator(copy.deepcopy(base), SCHEME_BITS[scheme], settings.backend)
        dtype = torch.float32 if scheme == "fp32" else torch.bfloat16
        wbytes = weight_bytes(agg)
        for frames in settings.frames:
            gen = torch.Generator(device="cpu").manual_seed(frames)
            images = torch.rand(1, frames, 3, config.img_size, config.img_size, generator=gen)
            images = images.to(device=settings.device, dtype=dtype)
            row = {"scheme": scheme, "frames": frames, "weight_bytes": wbytes}
            try:
                with torch.inference_mode():
                    row["ms"], row["peak_bytes"] = measure(lambda agg=agg, images=images: agg(images),
                                                           settings.warmup, settings.iters,
                                                           settings.device)
            except torch.cuda.OutOfMemoryError as exc:  # report it, keep going
                row["ms"], row["peak_bytes"], row["error"] = None, None, f"OOM: {exc}"[:200]
            results["rows"].append(row)
            if json_path:
                with open(json_path, "w") as f:
                    json.dump(results, f, indent=2)
            ms = row["ms"] if row["ms"] is None else round(row["ms"], 2)
            print(f"{scheme} S={frames}: {ms} ms", file=sys.stderr, flush=True)
            del images
        if agg is not base:
            del agg
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return results


def table(results: dict) -> str:
    """The results as a caption line and a markdown table, with the speed-up over BF16."""
    bf16 = {r["frames"]: r["ms"] for r in results["rows"] if r["scheme"] == "bf16"}
    rows = []
    for r in results["rows"]:
        ref = bf16.get(r["frames"])
        rows.append([r["scheme"], r["frames"], "OOM" if r["ms"] is None else f"{r['ms']:.2f}",
                     f"{ref / r['ms']:.2f}x" if ref and r["ms"] else "-",
                     "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:,.0f}",
                     f"{r['weight_bytes'] / 2**20:,.1f}"])
    caption = (f"aggregator {results['config']} (depth {results['depth']}, {results['img_size']} px), "
               f"{results['device']}, torch {results['torch']}, backend {results['backend']}, "
               f"median of {results['iters']} after {results['warmup']} warm-up")
    header = ["scheme", "frames", "latency (ms)", "vs BF16", "peak memory (MiB)", "weights (MiB)"]
    return caption + "\n\n" + markdown_table(header, rows, right=[False] + [True] * 5)
