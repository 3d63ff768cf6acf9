"""Per-GEMM and activation-quantization benchmark at VGGT-1B shapes.

Usage::

    python -m qvggt_kernels.bench                    # GPU: full sweep, markdown table last
    python -m qvggt_kernels.bench --json out.json    # also write the results as JSON
    python -m qvggt_kernels.bench --smoke            # CPU: tiny shapes through Triton's
                                                     # interpreter, correctness only

What is measured
----------------
* **GEMMs**: ``M = S * 1374`` tokens (S frames of 518x518 images: 37x37 patches + 5
  special tokens) for ``S in {1, 10, 20, 40}`` and the aggregator's linear layers
  ``(K, N) in {(1024, 3072) qkv, (1024, 1024) proj, (1024, 4096) fc1, (4096, 1024) fc2}``.
  Providers: ``torch.matmul`` in bf16 (the baseline), ``torch._int_mm`` (cuBLAS int8),
  and our Triton W8A8 and W4A4 kernels (bf16 output, scales applied). TOPS = 2MNK / t.
  Ratios are against bf16: the int8 tensor-core ceiling on H100 is 2x.
* **Activation quantization**: ``quantize_per_token(x_bf16, 4)`` with and without the
  fused Hadamard transform, in GB/s of compulsory traffic (read 2 bytes + write 1 byte
  per element + 4 bytes of scale per row), against a device-to-device copy ``y.copy_(x)``
  (read 2 + write 2 bytes per element).

Timings use ``qvggt_kernels.timing``: on the GPU the median of ``GPU_ITERS`` calls after
``GPU_WARMUP`` untimed ones (the first of which autotunes), each call between CUDA events,
with a 256 MiB buffer zeroed before each timed call (``timing.l2_flush``: inputs come from
device memory, not L2, and the launch can overlap the zeroing), as ``triton.testing.do_bench``
does. The end-to-end model benchmark lives elsewhere. With ``--smoke`` the timings are
wall-clock of single interpreter runs and mean nothing; the script then checks every Triton
result against its torch reference.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .act_quant import quantize_per_token, quantize_per_token_reference
from .gemm import w4a4_matmul, w4a4_matmul_reference, w8a8_matmul, w8a8_matmul_reference
from .pack import pack_int4
from .timing import l2_flush, median_ms

TOKENS_PER_FRAME = 1374
FRAMES = (1, 10, 20, 40)
LINEAR_SHAPES = ((1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024))  # (K, N)
SMOKE_GEMM = [(1, 40, 64, 48), (1, 33, 128, 24)]  # (S, M, K, N)
SMOKE_ACT = [(1, 37, 64), (1, 20, 256)]  # (S, M, K)


GPU_WARMUP, GPU_ITERS = 10, 100  # untimed calls (autotuning included), then timed calls


def _timings(device: str, smoke: bool) -> dict:
    """``median_ms`` arguments: smoke, one timed run; GPU, warm-up, then L2 flush + timed call."""
    if smoke:
        return {"warmup": 0, "iters": 1, "device": device}
    return {"warmup": GPU_WARMUP, "iters": GPU_ITERS, "device": device, "before": l2_flush(device)}


def bench_gemm(S: int, M: int, K: int, N: int, device: str, smoke: bool) -> dict:
    """Time the four GEMM providers on one shape; returns a result row."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x4 = torch.randint(-8, 8, (M, K), generator=g, dtype=torch.int8).to(device)
    w4 = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8).to(device)
    w8 = torch.randint(-128, 128, (N, K), generator=g, dtype=torch.int8).to(device)
    xs = (torch.rand(M, generator=g) + 0.5).to(device)
    ws = (torch.rand(N, generator=g) * 1e-3).to(device)
    wp = pack_int4(w4, backend="triton")
    a16 = torch.randn(M, K, generator=g).to(device, torch.bfloat16)
    b16 = torch.randn(N, K, generator=g).to(device, torch.bfloat16)
    out = torch.bfloat16
    timing = _timings(device, smoke)

    providers = {
        "bf16": lambda: torch.matmul(a16, b16.t()),
        "int_mm": lambda: torch._int_mm(x4, w8.t()),
        "w8a8": lambda: w8a8_matmul(x4, xs, w8, ws, out_dtype=out, backend="triton"),
        "w4a4": lambda: w4a4_matmul(x4, xs, wp, ws, out_dtype=out, backend="triton"),
    }
    row: dict = {"S": S, "M": M, "K": K, "N": N}
    for name, fn in providers.items():
        try:
            ms = median_ms(fn, **timing)
            row[f"{name}_ms"] = ms
            row[f"{name}_tops"] = 2 * M * N * K / ms * 1e-9
        except RuntimeError as e:  # e.g. torch._int_mm's shape limits (M > 16, K, N % 8)
            row[f"{name}_ms"] = row[f"{name}_tops"] = None
            row[f"{name}_error"] = str(e).splitlines()[0][:120]
    for name in ("w8a8", "w4a4", "int_mm"):
        if row.get(f"{name}_tops") and row.get("bf16_tops"):
            row[f"{name}_vs_bf16"] = row[f"{name}_tops"] / row["bf16_tops"]

    if smoke:  # correctness of the Triton path on this shape (interpreter)
        ref8 = w8a8_matmul_reference(x4, xs, w8, ws, out_dtype=torch.float32)
        ref4 = w4a4_matmul_reference(x4, xs, wp, ws, out_dtype=torch.float32)
        got8 = w8a8_matmul(x4, xs, w8, ws, out_dtype=torch.float32, backend="triton")
        got4 = w4a4_matmul(x4, xs, wp, ws, out_dtype=torch.float32, backend="triton")
        row["exact"] = bool(torch.equal(got8, ref8) and torch.equal(got4, ref4))
    return row


def bench_act_quant(S: int, M: int, K: int, device: str, smoke: bool) -> dict:
    """Bandwidth of the per-token quantizer (with/without fused FWHT) vs a copy."""
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(0)).to(device, torch.bfloat16)
    y = torch.empty_like(x)
    quant_bytes = M * K * (2 + 1) + 4 * M
    copy_bytes = M * K * (2 + 2)
    row: dict = {"S": S, "M": M, "K": K}
    timing = _timings(device, smoke)
    cases = {
        "copy": (lambda: y.copy_(x), copy_bytes),
        "quant": (lambda: quantize_per_token(x, 4, backend="triton"), quant_bytes),
        "quant_had": (
            lambda: quantize_per_token(x, 4, hadamard=True, backend="triton"),
            quant_bytes,
        ),
    }
    for name, (fn, nbytes) in cases.items():
        ms = median_ms(fn, **timing)
        row[f"{name}_ms"] = ms
        row[f"{name}_gbps"] = nbytes / ms * 1e-6
    for name in ("quant", "quant_had"):
        row[f"{name}_vs_copy"] = row[f"{name}_gbps"] / row["copy_gbps"]

    if smoke:
        ok = True
        for had in (False, True):
            q, s = quantize_per_token(x, 4, hadamard=had, backend="triton")
            qr, sr = quantize_per_token_reference(x, 4, hadamard=had)
            # FWHT sums in another order: allow rare off-by-one at rounding ties
            ok &= bool((q.int() - qr.int()).abs().max() <= (1 if had else 0))
            ok &= bool(torch.allclose(s, sr, rtol=1e-5, atol=0))
        row["exact"] = ok
    return row


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_tables(results: dict) -> str:
    """The two result tables in GitHub markdown."""
    lines = [
        f"Device: {results['device']}"
        + ("  (smoke: timings meaningless)" if results["smoke"] else ""),
        "",
    ]
    lines += [
        "| S | M | K | N | bf16 TOPS | _int_mm TOPS | W8A8 TOPS | W4A4 TOPS | W8A8 / bf16 | W4A4 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["gemm"]:
        lines.append(
            f"| {r['S']} | {r['M']} | {r['K']} | {r['N']} | {_fmt(r['bf16_tops'])} | "
            f"{_fmt(r['int_mm_tops'])} | {_fmt(r['w8a8_tops'])} | {_fmt(r['w4a4_tops'])} | "
            f"{_fmt(r.get('w8a8_vs_bf16'), 2)} | {_fmt(r.get('w4a4_vs_bf16'), 2)} |"
        )
    lines += [
        "",
        "| S | M | K | copy GB/s | quant GB/s | quant+H GB/s | quant / copy | quant+H / copy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["act_quant"]:
        lines.append(
            f"| {r['S']} | {r['M']} | {r['K']} | {_fmt(r['copy_gbps'], 0)} | {_fmt(r['quant_gbps'], 0)} | "
            f"{_fmt(r['quant_had_gbps'], 0)} | {_fmt(r['quant_vs_copy'], 2)} | "
            f"{_fmt(r['quant_had_vs_copy'], 2)} |"
        )
    return "\n".join(lines)


def run(smoke: bool = False, frames=FRAMES, json_path: str | None = None) -> dict:
    """Run the whole sweep and return ``{"device", "smoke", "gemm": [...], "act_quant": [...]}``.

    With ``json_path`` the results so far are rewritten after every row, and the GEMM table
    is printed as soon as the GEMMs are done, so a run cut short still leaves its numbers.
    """
    device = "cpu" if smoke else "cuda"
    if smoke:
        gemm_cases, act_cases = SMOKE_GEMM, SMOKE_ACT
    else:
        gemm_cases = [(s, s * TOKENS_PER_FRAME, k, n) for s in frames for (k, n) in LINEAR_SHAPES]
        act_cases = [(s, s * TOKENS_PER_FRAME, k) for s in frames for k in (1024, 4096)]
    name = "CPU (Triton interpreter)" if smoke else torch.cuda.get_device_name()
    results: dict = {"device": name, "smoke": smoke, "gemm": [], "act_quant": []}
    def save():
        if json_path:
            with open(json_path, "w") as f:
                json.dump(results, f, indent=2)

    for S, M, K, N in gemm_cases:
        results["gemm"].append(bench_gemm(S, M, K, N, device, smoke))
        print(f"gemm S={S} M={M} K={K} N={N}: done", file=sys.stderr, flush=True)
        save()
    print(markdown_tables({**results, "act_quant": []}), file=sys.stderr, flush=True)
    for S, M, K in act_cases:
        results["act_quant"].append(bench_act_quant(S, M, K, device, smoke))
        print(f"act_quant S={S} M={M} K={K}: done", file=sys.stderr, flush=True)
        save()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes on CPU via the Triton interpreter"
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAMES), help="values of S")
    args = parser.parse_args(argv)

    if not args.smoke and not torch.cuda.is_available():
        print(
            "qvggt_kernels.bench needs a CUDA GPU (Hopper for meaningful numbers); "
            "run with --smoke for a CPU correctness pass."
        )
        return 0
    try:
        import triton  # noqa: F401
    except ImportError:
        print("qvggt_kernels.bench needs the triton package.")
        return 0

    results = run(smoke=args.smoke, frames=tuple(args.frames), json_path=args.json)
    if args.smoke and not all(r["exact"] for r in results["gemm"] + results["act_quant"]):
        print(markdown_tables(results))
        print("smoke: a Triton result differs from its reference")
        return 1
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
