r"""``quantize_per_token``: per-token int quantization, optional fused FWHT; kernel, reference.

Per-token activation quantization, with an optional fused Hadamard rotation
===========================================================================

What
----
For every row (token) ``x`` of an ``[M, K]`` activation matrix:

.. math::
    y = x \odot p\ \text{(optional pre-scale)}, \qquad
    y \leftarrow \mathrm{fwht}(y)\ \text{(optional)}, \qquad
    y_k \leftarrow y_k / s_k\ \text{(optional smoothing)}, \\
    \Delta = (c \cdot \max_k |y_k|) / q_{max}, \qquad
    q_k = \mathrm{clamp}(\mathrm{round}(y_k / \Delta), -q_{max}-1, q_{max}),
    \qquad q_{max} = 2^{b-1} - 1,

with ``round`` = round half to even (``torch.round``) and ``c`` an optional clipping ratio
(default 1; a learnable activation clip, LAC, is a per-layer ``c`` in (0, 1]: the largest
values of a row then saturate at the range ends). The dequantized row is
``q * scale``. Outputs: ``q`` int8 ``[M, K]`` (values in the ``b``-bit range) and
``scale = Delta`` fp32 ``[M]``.

*All-zero rows*: ``max|y| = 0`` gives ``Delta = 0``; we store ``scale = 1.0`` instead
(likewise when ``max|y| / q_max`` underflows to 0), so ``q = 0`` and nothing divides by
zero.

*Non-finite rows* (the contract, the same in both backends): a row whose ``y`` holds a NaN or
an Inf (in ``x``, or made by the pre-scale, rotation or smoothing) gets ``scale = NaN`` and
``q = 0``, so its dequantized row, and every output the GEMM computes from it, is NaN: the
fault stays visible instead of turning into plausible numbers. The test is
``sum_k (y_k * 0) != 0``, which is NaN exactly when some ``y_k`` is NaN or Inf.

Why
---
This is the producer of every W4A4/W8A8 linear layer: the GEMM consumes ``q`` and applies
``scale`` in its epilogue. QuaRot-style rotation and SmoothQuant-style smoothing happen in
the same pass: a random Hadamard ``R = diag(v) H`` is ``pre_scale=v`` (the signs, multiplied
on load) plus ``hadamard=True`` (the FWHT), and DSFQ's smoothing is ``smooth=s``. Everything
is row-local, so the row is read from memory once, sign-flipped, rotated, divided, reduced,
quantized and written, with no intermediate in device memory.

Rounding without libdevice
--------------------------
``rint`` lives in CUDA's libdevice, which Triton's CPU interpreter does not have. We use
exact arithmetic instead: ``f = floor(v)``, ``d = v - f`` (exact for ``|v| < 2^23``) and
``round(v) = f + [d > 1/2] + [d = 1/2] * (f mod 2)``. Divisions use ``div_rn`` (IEEE
rounding; Triton's ``/`` on GPU is an approximate division) so the kernel reproduces
``torch`` bit for bit when ``hadamard=False``. With ``hadamard=True`` it does not: the
kernel's FWHT (radix-R ``tl.dot`` stages, see ``fwht.py``) sums in another order than the
reference's butterflies, so the scales agree to rounding error, not bit for bit, and a code
can differ by one step where ``y / scale`` lies within that error of a ``.5`` tie (rare; the
tests allow 1e-5 relative on scales and one step on codes).

Cost (per row, bf16 input, K = 4096)
------------------------------------
* Bytes: read ``2K`` + write ``K`` (int8) + 4 (scale) = ``3K`` bytes: memory bound; the
  target is copy speed (``y.copy_(x)`` moves ``4K`` bytes for the same row).
* FLOPs: ~10 per element for the quantization; the fused FWHT adds ~``2 R log_R K`` per
  element on tensor cores (see ``fwht.py``).
"""

from __future__ import annotations

import math

import torch

from ._dispatch import (
    HAS_TRITON,
    _use_triton,
    check_contiguous,
    check_dtype,
    check_same_device,
    is_interpreted,
    launchable,
)
from .fwht import FLOAT_DTYPES, check_hadamard_size, fwht_kronecker, fwht_reference, min_block_m

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .fwht import fwht_block

MAX_ROW = 32768  # the whole row lives in registers


# %%
# Compute kernel
# --------------
if HAS_TRITON:

    @triton.jit
    def _act_quant_kernel(
        x_ptr,  # *fp32/fp16/bf16 [M, K] activations, row-major contiguous
        smooth_ptr,  # *fp32 [K] per-channel divisors (read only if HAS_SMOOTH)
        pre_scale_ptr,  # *fp32 [K] per-channel factors applied on load (read only if HAS_PRE_SCALE)
        q_ptr,  # *int8 [M, K] quantized output
        scale_ptr,  # *fp32 [M] per-row scale output
        M,  # rows (tokens)
        K,  # channels
        norm,  # fp32 1/sqrt(K), the FWHT normalization (used only if HADAMARD)
        clip,  # fp32 clipping ratio c multiplying the row max (1.0: no clipping)
        QMAX: tl.constexpr,  # 2^(bits-1) - 1
        BLOCK_M: tl.constexpr,  # rows per program
        BLOCK_K: tl.constexpr,  # next power of two >= K (== K when HADAMARD)
        HADAMARD: tl.constexpr,  # fuse the orthonormal FWHT before quantizing
        HAS_SMOOTH: tl.constexpr,  # divide by smooth[k] after the rotation
        HAS_PRE_SCALE: tl.constexpr,  # multiply by pre_scale[k] before the rotation
        RADIX: tl.constexpr,  # FWHT radix (see fwht.py)
        DOT_PRECISION: tl.constexpr,  # FWHT tl.dot precision (see fwht.py)
    ):
        # 1. program id -> block of rows; the whole row is one register tile
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_K)
        row_ok = rows < M
        mask = row_ok[:, None] & (cols < K)[None, :]
        offs = rows[:, None].to(tl.int64) * K + cols[None, :]

        # 2. read the rows once, in fp32; the pre-scale (e.g. Hadamard signs) applies on load
        y = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_PRE_SCALE:
            p = tl.load(pre_scale_ptr + cols, mask=cols < K, other=1.0)
            y = y * tl.broadcast_to(p[None, :], (BLOCK_M, BLOCK_K))

        # 3. optional rotation and smoothing, still in registers
        if HADAMARD:
            y = fwht_block(y, BLOCK_M, BLOCK_K, RADIX, DOT_PRECISION) * norm
        if HAS_SMOOTH:
            s = tl.load(smooth_ptr + cols, mask=cols < K, other=1.0)
            y = tl.math.div_rn(y, tl.broadcast_to(s[None, :], (BLOCK_M, BLOCK_K)))

        # 4. per-row scale = (clip * max|y|) / QMAX (1.0 for an all-zero row)
        amax = tl.max(tl.abs(y), axis=1) * clip  # [BLOCK_M]; * 1.0 is exact
        scale = tl.math.div_rn(amax, tl.full((BLOCK_M,), QMAX, tl.float32))
        scale = tl.where(scale > 0.0, scale, 1.0)
        bad = tl.sum(y * 0.0, axis=1) != 0.0  # NaN (so True) iff the row holds a NaN or an Inf
        scale = tl.where(bad, float("nan"), scale)

        # 5. q = clamp(round_half_to_even(y / scale)), exact arithmetic rounding
        v = tl.math.div_rn(y, tl.broadcast_to(scale[:, None], (BLOCK_M, BLOCK_K)))
        f = tl.floor(v)
        d = v - f  # fractional part in [0, 1), exact
        f_odd = f - 2.0 * tl.floor(f * 0.5)  # 1.0 if f is odd else 0.0
        r = f + tl.where(d > 0.5, 1.0, 0.0) + tl.where(d == 0.5, f_odd, 0.0)
        r = tl.minimum(tl.maximum(r, -QMAX - 1.0), QMAX * 1.0)
        r = tl.where(bad[:, None], 0.0, r)  # non-finite rows: codes 0, scale NaN

        # 6. masked stores
        tl.store(q_ptr + offs, r.to(tl.int8), mask=mask)
        tl.store(scale_ptr + rows, scale, mask=row_ok)


def get_autotune_configs():
    """Hopper configs for ``_act_quant_kernel`` (pruned per K by ``_prune_configs``).

    Kept small on purpose: each config is a separate compile of the FWHT-fused kernel, and
    a 56-config sweep took minutes per key on an H200 (2026-11-26), more than a benchmark's
    whole time slot. Rows per program x radix x warps, from one row to 32 rows of K=1024.
    """
    return [
        triton.Config({"BLOCK_M": bm, "RADIX": r}, num_warps=w, num_stages=1)
        for bm, r, w in ((1, 32, 4), (2, 32, 4), (4, 32, 4), (8, 32, 8),
                         (16, 32, 8), (32, 32, 8), (4, 16, 4), (16, 16, 8))
    ]


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs that cannot compile for this K, then those that waste threads."""
    block_k, hadamard = kwargs["BLOCK_K"], kwargs["HADAMARD"]

    def valid(c):
        bm, r = c.kwargs["BLOCK_M"], c.kwargs["RADIX"]
        if not hadamard:
            return r == 16  # RADIX is unused: keep one value
        dot_ok = block_k < r or bm * block_k // r >= 16  # tl.dot needs >= 16 rows
        return dot_ok and bm * block_k <= 32768  # register budget

    valid_configs = [c for c in configs if valid(c) and c.kwargs["BLOCK_M"] * block_k <= 32768]
    busy = [c for c in valid_configs if c.num_warps * 32 * 4 <= c.kwargs["BLOCK_M"] * block_k]
    return busy or valid_configs[:1]


# %%
# Reference
# ---------
def round_half_to_even(v: torch.Tensor) -> torch.Tensor:
    """``torch.round`` already rounds halves to even; named here for readers."""
    return torch.round(v)


def quantize_per_token_reference(
    x: torch.Tensor,
    bits: int,
    hadamard: bool = False,
    smooth: torch.Tensor | None = None,
    clip: float | None = None,
    pre_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch twin of the kernel: same math, same order of fp32 operations, except the FWHT
    (``hadamard=True``), which sums in another order than the kernel's (module docstring)."""
    k = x.shape[-1]
    y = x.reshape(-1, k).to(torch.float32)
    if pre_scale is not None:
        y = y * pre_scale
    if hadamard:
        with torch.profiler.record_function("qvggt::hadamard"):  # a profiler label (microseconds)
            y = fwht_reference(y)
    if smooth is not None:
        y = y / smooth
    qmax = 2 ** (bits - 1) - 1
    amax = y.abs().amax(dim=1) if k > 0 else y.new_zeros(y.shape[0])
    if clip is not None:
        amax = amax * clip  # an fp32 product, as in the kernel
    # a tensor divisor: CUDA turns division by a Python scalar into a * (1 / b), which is not the
    # kernel's correctly rounded division
    scale = amax / torch.full_like(amax, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    bad = (y * 0).sum(dim=1) != 0  # NaN (so True) iff the row holds a NaN or an Inf
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    q = round_half_to_even(y / scale[:, None]).clamp_(-qmax - 1, qmax)
    q = torch.where(bad[:, None], torch.zeros_like(q), q)  # non-finite rows: codes 0, scale NaN
    return q.to(torch.int8), scale


def quantize_per_token_cpu(
    x: torch.Tensor,
    bits: int,
    hadamard: bool = False,
    smooth: torch.Tensor | None = None,
    clip: float | None = None,
    pre_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU path: the reference's arithmetic in the same order, but in place on one fp32
    buffer (each step of the reference allocates a new [M, K] tensor, which costs as much as
    the step), and the FWHT as two small matmuls (``fwht_kronecker``). Without the Hadamard it
    is the reference bit for bit; with it, scales agree to fp32 rounding (module docstring)."""
    k = x.shape[-1]
    y = x.reshape(-1, k).to(torch.float32)
    own = False  # may y be written in place (not a view of x)?
    if pre_scale is not None:
        y, own = y * pre_scale, True
    if hadamard:
        with torch.profiler.record_function("qvggt::hadamard"):
            y, own = fwht_kronecker(y), True
    if smooth is not None:
        y, own = (y.div_(smooth) if own else y / smooth), True
    qmax = 2 ** (bits - 1) - 1
    amax = y.abs().amax(dim=1) if k > 0 else y.new_zeros(y.shape[0])
    bad = ~torch.isfinite(amax)  # a NaN or an Inf in the row makes its max of |y| non-finite
    if clip is not None:
        amax = amax * clip
    scale = amax / torch.full_like(amax, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    q = (y.div_(scale[:, None]) if own else y / scale[:, None]).round_().clamp_(-qmax - 1, qmax)
    if bool(bad.any()):
        q[bad] = 0  # non-finite rows: codes 0, scale NaN
    return q.to(torch.int8), scale


# %%
# Wrapper
# -------
def quantize_per_token(
    x: torch.Tensor,
    bits: int,
    hadamard: bool = False,
    smooth: torch.Tensor | None = None,
    clip: float | None = None,
    backend: str = "auto",
    pre_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row (per-token) quantization, optionally rotated, smoothed and clipped.

    Computes ``y = fwht(x * pre_scale) / smooth`` (each step optional) and quantizes ``y``
    per row; a random Hadamard ``R = diag(v) H`` is ``pre_scale=v, hadamard=True``.

    Args:
        x: ``[..., K]`` fp32/fp16/bf16, contiguous; leading dims are flattened to ``M``.
        bits: 2..8 (4 for W4A4, 8 for W8A8).
        hadamard: apply the orthonormal FWHT along K first (K must be a power of two). The
            backends then agree to rounding error, not bit for bit: a code can differ by one
            step near a rounding tie (module docstring). Triton and ``"cpu"`` (and ``"auto"`` on
            CPU tensors, which runs ``fwht_kronecker``) each sum in their own order; ``"torch"``
            is the reference butterflies.
        smooth: optional fp32 ``[K]``; the (rotated) row is divided by it. Entries should be
            finite and non-zero (negative values are allowed); a zero or non-finite entry makes
            every row non-finite (see below). Not checked here: that would cost a device sync
            per call; ``qvggt_lib.deploy`` checks the divisors once, when it builds a layer.
        clip: optional ratio ``c > 0`` (a Python float, e.g. a learned LAC factor):
            ``scale = (c * max|y|) / qmax``; with ``c < 1`` the largest values clamp to
            the range ends. ``None`` means ``c = 1``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
        pre_scale: optional fp32 ``[K]``; the row is multiplied by it on load, *before* the
            rotation (e.g. the signs ``v`` of a random Hadamard ``diag(v) H``; with ``+-1``
            entries the product is exact). Applied inside the kernel: no extra pass.

    Returns:
        ``(q, scale)``: int8 ``[M, K]`` in ``[-2^(bits-1), 2^(bits-1)-1]`` and fp32 ``[M]``,
        such that ``q * scale[:, None]`` approximates the (pre-scaled, rotated, smoothed) rows.
        A row holding a NaN or an Inf gets ``q = 0`` and ``scale = NaN`` (both backends).
    """
    # 1. checks
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_dtype("x", x, FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension [..., K]")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8] (int8 storage), got {bits!r}")
    k = x.shape[-1]
    if hadamard:
        check_hadamard_size(k, "K (the last dimension of x)")
    if k > MAX_ROW:
        raise ValueError(f"K must be <= {MAX_ROW} (one row per register tile), got {k}")
    for name, vec in (("smooth", smooth), ("pre_scale", pre_scale)):
        if vec is None:
            continue
        if not isinstance(vec, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [K] or None")
        check_dtype(name, vec, (torch.float32,))
        if vec.shape != (k,):
            raise ValueError(f"{name} must have shape [K] = [{k}], got {list(vec.shape)}")
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip must be a Python float or None, got {type(clip).__name__}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a finite ratio > 0, got {clip!r}")
        clip = float(clip)
    check_same_device(x=x, smooth=smooth, pre_scale=pre_scale)
    check_contiguous(x=x, smooth=smooth, pre_scale=pre_scale)
    if not _use_triton([x, smooth, pre_scale], backend):
        if backend in ("auto", "cpu") and x.device.type == "cpu":
            return quantize_per_token_cpu(x, bits, hadamard, smooth, clip, pre_scale)
        return quantize_per_token_reference(x, bits, hadamard, smooth, clip, pre_scale)

    # 2. allocate
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m == 0 or k == 0:
        return q, scale.fill_(1.0)

    # 3. launch
    kernel = launchable(_act_quant_kernel, x2)
    block_k = triton.next_power_of_2(k)
    norm, ratio = 1.0 / math.sqrt(k), 1.0 if clip is None else clip
    smooth_arg = smooth if smooth is not None else x2  # dummy pointers, never read
    pre_arg = pre_scale if pre_scale is not None else x2
    args = (x2, smooth_arg, pre_arg, q, scale, m, k, norm, ratio)
    flags = {
        "QMAX": 2 ** (bits - 1) - 1,
        "BLOCK_K": block_k,
        "HADAMARD": bool(hadamard),
        "HAS_SMOOTH": smooth is not None,
        "HAS_PRE_SCALE": pre_scale is not None,
    }
    if is_interpreted(kernel):
        radix = 16
        floor_m = min_block_m(block_k, radix) if hadamard else 1
        block_m = max(floor_m, min(triton.next_power_of_2(m), max(1, 4096 // block_k)))
        grid = (triton.cdiv(m, block_m),)
        kernel[grid](*args, **flags, BLOCK_M=block_m, RADIX=radix, DOT_PRECISION="ieee")
    else:
        grid = lambda META: (triton.cdiv(m, META["BLOCK_M"]),)
        # no FMA contraction: same fp32 rounding steps as the reference
        _autotuned_act_quant()[grid](*args, **flags, DOT_PRECISION="tf32x3", enable_fp_fusion=False)
    return q, scale


_TUNED = None


def _autotuned_act_quant():
    global _TUNED
    if _TUNED is None:
        _TUNED = triton.autotune(
            configs=get_autotune_configs(),
            key=["BLOCK_K", "HADAMARD", "HAS_SMOOTH", "HAS_PRE_SCALE"],
            prune_configs_by={"early_config_prune": _prune_configs},
        )(_act_quant_kernel)
    return _TUNED


# %%
# Benchmark (GPU): GB/s of the quantizer vs a device-to-device copy
# ----------------------------------------------------------------
if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("act_quant benchmark needs CUDA; nothing to do")
        raise SystemExit(0)

    @triton.testing.perf_report(
        triton.testing.Benchmark(
            x_names=["K"],
            x_vals=[1024, 4096],
            line_arg="provider",
            line_vals=["quant", "quant+hadamard", "copy"],
            line_names=["quantize_per_token", "quantize_per_token(hadamard)", "copy_"],
            ylabel="GB/s",
            plot_name="act-quant-bf16-M27480",
            args={"M": 20 * 1374},
        )
    )
    def bench_act_quant(M, K, provider):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        if provider == "copy":
            fn, nbytes = (lambda: y.copy_(x)), 2 * x.numel() * 2
        else:
            had = provider == "quant+hadamard"
            fn = lambda: quantize_per_token(x, 4, hadamard=had, backend="triton")
            nbytes = x.numel() * 2 + x.numel() + 4 * M
        ms, lo, hi = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        gbps = lambda t: nbytes / t * 1e-6
        return gbps(ms), gbps(hi), gbps(lo)

    bench_act_quant.run(print_data=True)
