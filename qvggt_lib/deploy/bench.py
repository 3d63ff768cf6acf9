"""Speed of the deployed aggregator: fp32, bf16, W8A8, W4A8 and W4A4, end to end, per linear shape, per op.

The aggregator (DINO patch embed + frame and global blocks, random weights: right for speed,
meaningless for accuracy) is built once on the device in bf16. FP32 is that model cast up; the
quantized schemes replace the block linears by Int8Linear / Int4Linear, converted layer by
layer from a DSFQ QuantLinear (random Hadamard, smoothing vector, LWC and LAC clips), so the
timed path is the deployed one: Hadamard + divide + clip + per-token quantization, then the
int GEMM and its epilogue. Everything else (patch embed, attention, LayerNorms, RoPE) runs in
``quant_dtype``: bf16 on a GPU; on a CPU whichever of fp32 and bf16 multiplies faster here
(``fastest_cpu_dtype``: bf16 with AVX-512 BF16 / AMX, fp32 on AVX2 alone, where bf16 is
emulated and hundreds of times slower than int8), i.e. the right float baseline for the machine.

* ``run``: latency, the median of ``iters`` aggregator forwards after ``warmup`` calls
  (qvggt_kernels.timing), and peak memory: on CUDA the allocator's maximum during the timed
  calls; on CPU the weights plus the most one forward holds allocated (timing.cpu_peak_bytes).
* ``shape_rows``: the same schemes for each distinct linear shape of a block, at the tokens of
  one forward: fp32 and bf16 ``F.linear`` against the deployed layer, and its GEMM alone.
* ``block_breakdown``: where one deployed block spends its time (GEMM, activation quantization,
  Hadamard, attention, the rest), from profiler labels, so the Amdahl ceiling is visible.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from qvggt_kernels import w4a4_matmul, w8a8_matmul
from qvggt_kernels.timing import cpu_peak_bytes, measure
from torch.profiler import ProfilerActivity, profile, record_function

from ..eval.tables import markdown_table
from ..model import get_config
from ..model.aggregator import Aggregator
from ..quant.configs import layer_seed
from ..quant.hadamard import RandomHadamard
from ..quant.linear import QuantLinear
from ..quant.quantizer import QuantSpec
from ..quant.targets import quantizable_linears
from .convert import deployed_layers, from_quant_linear

SCHEMES = ("fp32", "bf16", "w8a8", "w4a8", "w4a4")
SCHEME_BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4)}
LABELS = {"gemm": "qvggt::gemm", "activation quant.": "qvggt::activation_quant",
          "hadamard": "qvggt::hadamard", "attention": "aten::scaled_dot_product_attention"}
BLOCK_LABEL = "qvggt::block"


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
    quant_dtype: str | None = None  # around the int layers; None: bf16 on CUDA, fastest_cpu_dtype() on CPU

    @classmethod
    def smoke(cls) -> BenchSettings:
        """CPU, tiny config, depth 2, torch backend, S = 1 and 2, one iteration."""
        return cls(frames=[1, 2], warmup=0, iters=1, config="tiny", depth=2, device="cpu",
                   backend="torch", schemes=["fp32", "bf16", "w8a8", "w4a4"])

    @property
    def rest_dtype(self) -> torch.dtype:
        if self.quant_dtype is not None:
            return getattr(torch, self.quant_dtype)
        return torch.bfloat16 if self.device == "cuda" else fastest_cpu_dtype()


@functools.cache
def fastest_cpu_dtype() -> torch.dtype:
    """fp32 or bf16, whichever runs a [512, 1024] x [1024, 1024] linear faster on this CPU."""
    x, w = torch.randn(512, 1024), torch.randn(1024, 1024)
    times = {dtype: measure(lambda dtype=dtype: F.linear(x.to(dtype), w.to(dtype)), 1, 3)[0]
             for dtype in (torch.float32, torch.bfloat16)}
    return min(times, key=times.get)


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
def deployed_linear(linear: torch.nn.Linear, bits: tuple[int, int], backend: str, seed: int,
                    generator: torch.Generator):
    """The Int4Linear / Int8Linear of a DSFQ QuantLinear made from ``linear`` (random s, clips)."""
    k = linear.in_features
    smooth = (torch.rand(k, generator=generator) + 0.5).to(linear.weight.device)
    fp32 = torch.nn.Linear(k, linear.out_features, device=linear.weight.device)
    fp32.load_state_dict({n: t.float() for n, t in linear.state_dict().items()})
    layer = QuantLinear.from_float(
        fp32, QuantSpec(bits[0], "per_channel"), QuantSpec(bits[1], "per_token"),
        rotation=RandomHadamard(k, seed), smooth=smooth,
        learnable_weight_clip=True, learnable_act_clip=True).eval()
    return from_quant_linear(layer, backend=backend)


def quantize_aggregator(agg: Aggregator, bits: tuple[int, int], backend: str, seed=0) -> Aggregator:
    """In place: every frame/global block linear -> a deployed DSFQ layer (one at a time)."""
    holder = torch.nn.Module()
    holder.aggregator = agg  # quantizable_linears looks for "aggregator.<scope>"
    gen = torch.Generator().manual_seed(seed)
    for index, (name, linear) in enumerate(quantizable_linears(holder).items()):
        holder.set_submodule(name, deployed_linear(linear, bits, backend, layer_seed(seed, index), gen))
    return agg


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def machine(device: str) -> dict:
    """Where the numbers come from: the device, torch, threads and the CPU's instruction set."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if os.path.exists("/proc/cpuinfo") else []
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        name = models[0] if models else platform.processor() or platform.machine()
    return {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "isa": torch.backends.cpu.get_cpu_capability(),
            "isa_forced": os.environ.get("ATEN_CPU_CAPABILITY")}


def _scheme_model(base: Aggregator, scheme: str, settings: BenchSettings) -> Aggregator:
    if scheme == "bf16":
        return base
    if scheme == "fp32":
        return copy.deepcopy(base).float()
    agg = quantize_aggregator(copy.deepcopy(base), SCHEME_BITS[scheme], settings.backend)
    return agg.to(settings.rest_dtype)


def _dtype(scheme: str, settings: BenchSettings) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16}.get(scheme, settings.rest_dtype)


def run(settings: BenchSettings, json_path=None, shapes: bool = False, breakdown: bool = False) -> dict:
    """Time every scheme at every frame count (results["rows"]); with ``shapes`` also every linear
    shape, with ``breakdown`` one block per quantized scheme. With json_path, rewrite the results
    after each row (a run cut short keeps what it measured)."""
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
    results = {**machine(settings.device), "config": settings.config, "depth": config.depth,
               "img_size": config.img_size, "backend": settings.backend, "warmup": settings.warmup,
               "iters": settings.iters, "tf32": bool(settings.tf32),
               "quant_dtype": str(settings.rest_dtype).removeprefix("torch."), "rows": [],
               "shapes": [], "breakdown": []}

    def save():
        if json_path:
            with open(json_path, "w") as f:
                json.dump(results, f, indent=2)

    for scheme in settings.schemes:
        agg = _scheme_model(base, scheme, settings)
        wbytes = weight_bytes(agg)
        for frames in settings.frames:
            gen = torch.Generator(device="cpu").manual_seed(frames)
            images = torch.rand(1, frames, 3, config.img_size, config.img_size, generator=gen)
            images = images.to(device=settings.device, dtype=_dtype(scheme, settings))
            row = {"scheme": scheme, "model": settings.config, "frames": frames, "weight_bytes": wbytes}
            try:
                with torch.inference_mode():
                    row["ms"], row["peak_bytes"] = measure(lambda agg=agg, images=images: agg(images),
                                                           settings.warmup, settings.iters, settings.device)
                    if not cuda:
                        row["peak_bytes"] = wbytes + cpu_peak_bytes(lambda agg=agg, images=images: agg(images))
            except torch.cuda.OutOfMemoryError as exc:  # report it, keep going
                row["ms"], row["peak_bytes"], row["error"] = None, None, f"OOM: {exc}"[:200]
            results["rows"].append(row)
            save()
            ms = row["ms"] if row["ms"] is None else round(row["ms"], 2)
            print(f"{scheme} S={frames}: {ms} ms", file=sys.stderr, flush=True)
            del images
        if breakdown and scheme in SCHEME_BITS:
            tokens = max(settings.frames) * _tokens_per_frame(config)
            results["breakdown"].append({"scheme": scheme, **block_breakdown(agg, config, tokens, settings)})
            save()
        if agg is not base:
            del agg
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if shapes:
        results["shapes"] = shape_rows(base, max(settings.frames) * _tokens_per_frame(config), settings)
        save()
    return results


def _tokens_per_frame(config) -> int:
    return config.patch_start_idx + (config.img_size // config.patch_size) ** 2


@torch.inference_mode()
def shape_rows(agg: Aggregator, tokens: int, settings: BenchSettings) -> list[dict]:
    """For each distinct (K, N) of the first frame block's linears: ms of fp32 and bf16
    ``F.linear`` and, per quantized scheme, of the deployed layer and of its GEMM alone."""
    block = agg.frame_blocks[0]
    rows, gen, seen = [], torch.Generator().manual_seed(0), set()
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        linear = block.get_submodule(name)
        shape = (linear.in_features, linear.out_features)
        if shape in seen:
            continue
        seen.add(shape)
        x = torch.randn(tokens, shape[0], generator=gen).to(settings.device)
        row = {"K": shape[0], "N": shape[1], "M": tokens}
        for scheme in settings.schemes:
            if scheme in ("fp32", "bf16"):
                dtype = _dtype(scheme, settings)
                w, b = linear.weight.to(dtype), linear.bias.to(dtype)
                xd = x.to(dtype)
                row[f"{scheme}_ms"] = measure(lambda xd=xd, w=w, b=b: F.linear(xd, w, b),
                                              settings.warmup, settings.iters, settings.device)[0]
                continue
            layer = deployed_linear(linear, SCHEME_BITS[scheme], settings.backend, 0, gen)
            xq = x.to(settings.rest_dtype)
            row[f"{scheme}_ms"] = measure(lambda layer=layer, xq=xq: layer(xq), settings.warmup,
                                          settings.iters, settings.device)[0]
            q, s = layer.quantize_input(xq)
            gemm = _gemm_of(layer, settings.rest_dtype)
            row[f"{scheme}_gemm_ms"] = measure(lambda q=q, s=s, gemm=gemm: gemm(q, s), settings.warmup,
                                               settings.iters, settings.device)[0]
        rows.append(row)
        print(f"shape K={shape[0]} N={shape[1]} done", file=sys.stderr, flush=True)
    return rows


def _gemm_of(layer, out_dtype: torch.dtype):
    """The layer's integer GEMM alone, as a function of its activation codes and scales."""
    gemm = w4a4_matmul if layer.packed else w8a8_matmul
    return lambda q, s: gemm(q, s, layer.weight, layer.weight_scale, layer.bias,
                             out_dtype=out_dtype, backend=layer.backend)


@torch.inference_mode()
def block_breakdown(agg: Aggregator, config, tokens_total: int, settings: BenchSettings) -> dict:
    """Milliseconds of one deployed frame block's forward by part (profiler labels): the GEMMs,
    activation quantization (Hadamard excluded), the Hadamard, attention, and the rest."""
    block = agg.frame_blocks[0]
    if not deployed_layers(block):
        raise ValueError("block_breakdown needs a deployed block (a quantized scheme)")
    frames = max(1, tokens_total // _tokens_per_frame(config))
    tokens = torch.randn(frames, tokens_total // frames, config.embed_dim).to(
        settings.device, settings.rest_dtype)
    pos = torch.zeros(frames, tokens.shape[1], 2, dtype=torch.long, device=settings.device)
    for _ in range(max(1, settings.warmup)):
        block(tokens, pos)
    total = measure(lambda: block(tokens, pos), 0, settings.iters, settings.device)[0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if settings.device == "cuda" else [])
    for _ in range(2):  # the first profiled session pays the profiler's own start-up: keep the second
        with profile(activities=activities) as prof:
            for _ in range(settings.iters):
                with record_function(BLOCK_LABEL):
                    block(tokens, pos)
    part_of = {label: key for key, label in {**LABELS, BLOCK_LABEL: BLOCK_LABEL}.items()}
    spent = dict.fromkeys(part_of.values(), 0.0)
    for event in prof.key_averages():
        if event.key in part_of:
            spent[part_of[event.key]] += event.cpu_time_total / 1e3 / settings.iters
    spent["activation quant."] -= spent["hadamard"]  # the Hadamard runs inside it
    # shares of the profiled block (the profiler slows every op a little), scaled to the timed block
    profiled = spent.pop(BLOCK_LABEL)
    parts = {key: ms * total / profiled for key, ms in spent.items()}
    parts["rest"] = max(total - sum(parts.values()), 0.0)
    return {"tokens": int(tokens.shape[0] * tokens.shape[1]), "block_ms": total,
            "parts_ms": parts}


def table(results: dict) -> str:
    """The end-to-end rows as a caption line and a markdown table, with speed-ups over fp32 and bf16."""
    by = {(r["scheme"], r["frames"]): r["ms"] for r in results["rows"]}
    rows = []
    for r in results["rows"]:
        ratio = [(f"{by[(ref, r['frames'])] / r['ms']:.2f}x" if by.get((ref, r["frames"])) and r["ms"]
                  else "-") for ref in ("fp32", "bf16")]
        rows.append([r["scheme"], r["frames"], "OOM" if r["ms"] is None else f"{r['ms']:.2f}", *ratio,
                     "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:,.0f}",
                     f"{r['weight_bytes'] / 2**20:,.1f}"])
    caption = (f"aggregator {results['config']} (depth {results['depth']}, {results['img_size']} px), "
               f"{results['device']}, torch {results['torch']}, {results.get('threads', '?')} thread(s), "
               f"instruction set {results.get('isa', '?')}, backend {results['backend']}, "
               f"median of {results['iters']} after {results['warmup']} warm-up")
    header = ["scheme", "frames", "latency (ms)", "vs FP32", "vs BF16", "peak memory (MiB)",
              "weights (MiB)"]
    return caption + "\n\n" + markdown_table(header, rows, right=[False] + [True] * 6)


def shape_table(results: dict) -> str:
    """Per linear shape: ms per scheme (deployed layer, and its GEMM alone in parentheses)."""
    schemes = [s for s in SCHEMES if any(f"{s}_ms" in r for r in results["shapes"])]
    rows = []
    for r in results["shapes"]:
        cells = [f"{r[f'{s}_ms']:.2f}" + (f" ({r[f'{s}_gemm_ms']:.2f})" if f"{s}_gemm_ms" in r else "")
                 for s in schemes]
        rows.append([f"{r['K']} -> {r['N']}", r["M"], *cells])
    return markdown_table(["K -> N", "tokens", *(f"{s} ms" for s in schemes)], rows,
                          right=[False] + [True] * (1 + len(schemes)))


def breakdown_table(results: dict) -> str:
    """One row per quantized scheme: ms of each part of one block, and its share of the block."""
    rows = []
    for b in results["breakdown"]:
        parts = b["parts_ms"]
        rows.append([b["scheme"], b["tokens"], f"{b['block_ms']:.2f}",
                     *(f"{parts[k]:.2f} ({100 * parts[k] / b['block_ms']:.0f}%)" for k in parts)])
    keys = list(results["breakdown"][0]["parts_ms"]) if results["breakdown"] else []
    return markdown_table(["scheme", "tokens", "block ms", *keys], rows, right=[False] + [True] * (2 + len(keys)))
