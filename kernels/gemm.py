r"""``w4a4_matmul`` / ``w8a8_matmul``: quantized GEMMs with exact int32 sums; kernel, references.

W4A4 and W8A8 GEMMs with int32 accumulation
===========================================

What
----
``out[m, n] = acc[m, n] * x_scale[m] * w_scale[n] + bias[n]`` with the *exact* integer dot
product

.. math::
    \mathrm{acc}[m, n] = \sum_k x_q[m, k] \, w_q[n, k] \in \mathbb{Z} \quad (\text{int32}),

for per-token activation scales (from ``quantize_per_token``) and per-output-channel
weight scales. ``w4a4_matmul`` reads int4 weights packed two per byte (``pack.py``);
``w8a8_matmul`` reads int8 weights. Both share one kernel body; the constexpr
``W_INT4`` selects the weight format at compile time.

Why: Hopper reality
-------------------
H100/H200 have no int4 tensor cores (an sm_90 ``mma ... s4`` is emulated by int8 MMAs
plus ~170 unpack instructions). So W4A4 here means *int4 storage, int8 math*:

1. load a ``[BLOCK_K/2, BLOCK_N]`` tile of packed bytes (the weight is ``[N, K]`` in
   memory, K-major: the B-operand layout 8-bit ``wgmma`` wants),
2. sign-extend each nibble to int8 in registers (two shifts, see ``pack.py``),
3. run int8 ``tl.dot`` with an int32 accumulator (``wgmma ... s32.s8.s8`` on sm_90),
4. apply both scales and the bias in the epilogue, in fp32, and store fp16/bf16/fp32.

The nibble order puts even columns in low nibbles and odd columns in high nibbles. Rather
than interleaving the unpacked weights back into ``[BLOCK_K, BLOCK_N]``, we split the
activation tile the same way (``x[:, 0::2]``, ``x[:, 1::2]``, a register-level ``tl.split``)
and accumulate two dots of depth ``BLOCK_K/2``:

.. math::
    \mathrm{acc} \mathrel{+}= x_{even} \cdot w_{lo}^\top + x_{odd} \cdot w_{hi}^\top .

The ceiling is the int8 rate: at most 2x the dense bf16 rate (1979 vs 989 TOPS, H100 SXM),
and W4A4 saves weight bytes, not tensor-core time.

Blocked algorithm
-----------------
::

    for each output tile (pid_m, pid_n), grouped by GROUP_M rows of tiles for L2 reuse:
        acc = zeros[BLOCK_M, BLOCK_N] (int32)
        for k0 in range(0, K, BLOCK_K):
            a = X[m-tile, k0 : k0 + BLOCK_K]                 # int8
            b = W[n-tile, k0 : k0 + BLOCK_K]  (unpacked)     # int8
            acc += a @ b^T                                    # int32, exact
        out = acc * x_scale[m-tile, None] * w_scale[None, n-tile] (+ bias)

Exactness: the wrappers accept any int8 activation codes, ``[-128, 127]``, and weight codes
in ``[-128, 127]`` (W8A8) or ``[-8, 7]`` (W4A4: what a nibble holds). A product then lies in
``[-16256, 16384]`` (W8A8) or ``[-1016, 1024]`` (W4A4), so every partial sum, in any order,
fits int32 for all codes while ``K * 16384 <= 2^31 - 1``, i.e. ``K <= 131071`` (W8A8), or
``K * 1024 <= 2^31 - 1``, i.e. ``K <= 2097151`` (W4A4, where K is even: ``K <= 2097150``).
The bounds are tight: all codes at their minimum (-128, and -8 for int4 weights) overflow at
the next K (131072, 2097152). Both wrappers raise ``ValueError`` above ``MAX_K_W8A8`` /
``MAX_K_W4A4``, on either backend. The epilogue converts ``acc`` to fp32 (exact below
``2^24``), then evaluates ``((acc * x_scale) * w_scale) + bias`` in that order without FMA
contraction, so results match the torch reference bit for bit.

Cost (M x N x K)
----------------
FLOPs ``2 M N K``. Bytes: ``M K`` (int8 activations) + ``N K / 2`` (W4) or ``N K`` (W8)
+ ``M N * s_out``. VGGT-1B at 20 frames (``M = 27480``, ``K = 1024``, ``N = 4096``):
230 GOP against ~0.2 GB of traffic: compute bound; the roofline is int8 wgmma.
"""

from __future__ import annotations

import functools

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
from .pack import unpack_int4_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BIAS_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Largest K with no possible int32 overflow (module docstring): K * max|product| <= 2^31 - 1
# with max|product| = 128 * 128 (int8 weights) or 128 * 8 (int4 weights), int8 activations.
INT32_MAX = 2**31 - 1
MAX_K_W8A8 = INT32_MAX // (128 * 128)  # 131071
MAX_K_W4A4 = INT32_MAX // (128 * 8)  # 2097151; K is even there, so 2097150 in practice


# %%
# Compute kernel
# --------------
if HAS_TRITON:

    @triton.jit
    def _qgemm_kernel(
        x_ptr,  # *int8 [M, K] quantized activations, row-major (stride_xm, 1)
        xs_ptr,  # *fp32 [M] per-token activation scales
        w_ptr,  # *uint8 [N, K/2] packed int4 (W_INT4) or *int8 [N, K]; row stride stride_wn
        ws_ptr,  # *fp32 [N] per-output-channel weight scales
        bias_ptr,  # *fp16/bf16/fp32 [N] bias (read only if HAS_BIAS)
        out_ptr,  # *fp16/bf16/fp32 [M, N] output, row-major (stride_om, 1)
        M,  # rows of x / out (tokens)
        N,  # rows of w, columns of out (output channels)
        K,  # reduction length in values (not bytes), even
        stride_xm,  # elements between rows of x
        stride_wn,  # bytes between rows of w
        stride_om,  # elements between rows of out
        W_INT4: tl.constexpr,  # True: packed int4 weights; False: int8 weights
        HAS_BIAS: tl.constexpr,  # add bias[n] in the epilogue
        BLOCK_M: tl.constexpr,  # output tile rows
        BLOCK_N: tl.constexpr,  # output tile columns
        BLOCK_K: tl.constexpr,  # reduction values per step (bytes per step: BLOCK_K/2 for W4)
        GROUP_M: tl.constexpr,  # tile rows per group in the L2-friendly launch order
    ):
        # 1. program id -> output tile, grouped so consecutive programs share weight tiles
        pid = tl.program_id(0)
        num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
        num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
        num_pid_in_group = GROUP_M * num_pid_n
        group_id = pid // num_pid_in_group
        first_pid_m = group_id * GROUP_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
        pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
        pid_n = (pid % num_pid_in_group) // group_size_m

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = offs_m < M
        n_ok = offs_n < N
        offs_k = tl.arange(0, BLOCK_K)

        # 2. pointers to the first K-step; the weight tile is loaded transposed, [K, N]
        x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :]
        if W_INT4:
            offs_kb = tl.arange(0, BLOCK_K // 2)  # one byte = two K values
            w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_kb[:, None]
        else:
            w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]

        # 3. main loop: int8 x int8 -> int32, exact
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(x_ptrs, mask=m_ok[:, None] & (offs_k[None, :] < K - k0), other=0)
            if W_INT4:
                w_mask = (offs_kb[:, None] < (K - k0) // 2) & n_ok[None, :]
                wb = tl.load(w_ptrs, mask=w_mask, other=0).to(tl.int8, bitcast=True)
                w_lo = (wb << 4) >> 4  # [BLOCK_K/2, BLOCK_N] = W[n, k0 + 2j]
                w_hi = wb >> 4  # [BLOCK_K/2, BLOCK_N] = W[n, k0 + 2j + 1]
                a_even, a_odd = tl.split(tl.reshape(a, (BLOCK_M, BLOCK_K // 2, 2)))
                acc = tl.dot(a_even, w_lo, acc, out_dtype=tl.int32)
                acc = tl.dot(a_odd, w_hi, acc, out_dtype=tl.int32)
                w_ptrs += BLOCK_K // 2
            else:
                w_mask = (offs_k[:, None] < K - k0) & n_ok[None, :]
                w = tl.load(w_ptrs, mask=w_mask, other=0)
                acc = tl.dot(a, w, acc, out_dtype=tl.int32)
                w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K

        # 4. epilogue in fp32: ((acc * x_scale) * w_scale) + bias
        xs = tl.load(xs_ptr + offs_m, mask=m_ok, other=0.0)
        ws = tl.load(ws_ptr + offs_n, mask=n_ok, other=0.0)
        out = acc.to(tl.float32) * xs[:, None] * ws[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]

        # 5. masked store in the output dtype
        out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def get_autotune_configs():
    """Hopper (sm_90) tiles for the int8 wgmma path, keyed on (M, N, K).

    wgmma wants BLOCK_M a multiple of 64 per warpgroup (4 warps) and 8-bit operands with a
    K-depth of 32 per instruction; with W4 each dot has depth BLOCK_K/2.
    """
    cfg = lambda bm, bn, bk, st, w: triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=st, num_warps=w
    )
    return [
        cfg(128, 256, 128, 3, 8),
        cfg(256, 128, 128, 3, 8),
        cfg(128, 128, 128, 4, 8),
        cfg(128, 128, 128, 4, 4),
        cfg(128, 128, 256, 3, 8),
        cfg(128, 64, 128, 4, 4),
        cfg(64, 128, 128, 4, 4),
        cfg(64, 64, 128, 5, 4),
        cfg(64, 64, 256, 4, 4),
    ]


# One small config for Triton's CPU interpreter (autotuning there would be slow, and
# timing meaningless). Not a multiple of the test shapes, so the masks are exercised.
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4}


# %%
# References
# ----------
def int_matmul_reference(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Exact ``xq @ wq.T`` as int32 ``[M, N]`` when the result fits int32; any device.

    fp64 is exact here: every product and partial sum is an integer below 2^53. Nothing here
    checks the int32 range; the wrappers' K limits (``MAX_K_W8A8``, ``MAX_K_W4A4``) do.
    """
    acc = xq.to(torch.float64) @ wq.to(torch.float64).T
    return acc.to(torch.int32)


@functools.cache
def int_mm_is_exact_here(max_abs_weight: int = 128) -> bool:
    """Whether ``torch._int_mm`` sums int8 products exactly on this CPU for weight codes in
    ``[-max_abs_weight, max_abs_weight]``; checked once per process and bound.

    With VNNI or AMX, oneDNN accumulates in int32. Without them (AVX2 alone, or the ISA capped by
    ``ONEDNN_MAX_CPU_ISA``) it shifts the activations to u8 and adds pairs of u8 x s8 products in
    int16 with saturation: full-range int8 weights overflow (255 * 127 * 2 > 32767), weights within
    +-8 (int4 codes) cannot (255 * 8 * 2 = 4080). Extreme and random codes at a few shapes expose it."""
    generator = torch.Generator().manual_seed(0)
    w_max = min(max_abs_weight, 127)
    for m, k, n in ((1, 64, 64), (5, 4096, 8), (37, 100, 45), (128, 512, 128)):
        for x_fill, w_low in ((127, w_max - 7), (-128, w_max - 7), (None, -w_max)):
            x = (torch.full((m, k), x_fill, dtype=torch.int8) if x_fill is not None
                 else torch.randint(-128, 128, (m, k), generator=generator, dtype=torch.int8))
            w = torch.randint(w_low, w_max + 1, (n, k), generator=generator, dtype=torch.int8)
            try:
                if not torch.equal(torch._int_mm(x, w.t()), int_matmul_reference(x, w)):
                    return False
            except (RuntimeError, NotImplementedError):  # no CPU support in this torch
                return False
    return True


def int_matmul_cpu(xq: torch.Tensor, wq: torch.Tensor, max_abs_weight: int = 128) -> torch.Tensor:
    """Exact ``xq @ wq.T`` as int32 ``[M, N]`` on the CPU for weight codes within
    ``+-max_abs_weight``, by the fastest exact route (see ``int_mm_is_exact_here``):

    1. ``torch._int_mm`` (oneDNN's int8 GEMM) where it is exact for these weights;
    2. else, where it is exact for codes within +-8 (AVX2 without VNNI), two such GEMMs on the
       split ``w = 16 w_hi + w_lo`` with ``w_hi = round(w / 16)``, both within +-8:
       ``x w^T = 16 x w_hi^T + x w_lo^T``;
    3. else, and for shapes oneDNN refuses, ``int_matmul_reference``."""
    try:
        if int_mm_is_exact_here(max_abs_weight):
            return torch._int_mm(xq, wq.t())
        if max_abs_weight > 8 and int_mm_is_exact_here(8):
            w_hi = torch.round(wq.to(torch.float32) / 16).to(torch.int8)
            w_lo = (wq.to(torch.int16) - 16 * w_hi.to(torch.int16)).to(torch.int8)
            return torch._int_mm(xq, w_hi.t()).mul_(16).add_(torch._int_mm(xq, w_lo.t()))
    except (RuntimeError, NotImplementedError):  # arguments are checked: only support is missing
        pass
    return int_matmul_reference(xq, wq)


def _epilogue_reference(acc, x_scale, w_scale, bias, out_dtype):
    out = acc.to(torch.float32) * x_scale[:, None] * w_scale[None, :]
    if bias is not None:
        out = out + bias.to(torch.float32)[None, :]
    return out.to(out_dtype)


def w8a8_matmul_reference(xq, x_scale, wq, w_scale, bias=None, out_dtype=torch.float32):
    """Pure-torch twin of ``w8a8_matmul`` (bit-exact in fp32)."""
    return _epilogue_reference(int_matmul_reference(xq, wq), x_scale, w_scale, bias, out_dtype)


def w4a4_matmul_reference(xq, x_scale, w_packed, w_scale, bias=None, out_dtype=torch.float32):
    """Pure-torch twin of ``w4a4_matmul``: unpack, then the W8A8 reference."""
    wq = unpack_int4_reference(w_packed)
    return _epilogue_reference(int_matmul_reference(xq, wq), x_scale, w_scale, bias, out_dtype)


# %%
# Wrappers
# --------
def _check_gemm_args(xq, x_scale, w, w_scale, bias, out_dtype, w_int4):
    for name, t in (("xq", xq), ("x_scale", x_scale), ("w", w), ("w_scale", w_scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    wname = "w_packed" if w_int4 else "wq"
    check_dtype("xq", xq, (torch.int8,))
    check_dtype(wname, w, (torch.uint8,) if w_int4 else (torch.int8,))
    check_dtype("x_scale", x_scale, (torch.float32,))
    check_dtype("w_scale", w_scale, (torch.float32,))
    if bias is not None:
        check_dtype("bias", bias, BIAS_DTYPES)
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype must be one of float16, bfloat16, float32; got {out_dtype}")
    if xq.dim() != 2 or w.dim() != 2:
        raise ValueError(f"xq and {wname} must be 2-D, got {list(xq.shape)} and {list(w.shape)}")
    m, k = xq.shape
    n = w.shape[0]
    if k % 2 != 0 and w_int4:
        raise ValueError(f"K must be even for packed int4 weights, got K={k}; pad K")
    k_w = 2 * w.shape[1] if w_int4 else w.shape[1]
    if k_w != k:
        what = f"w_packed.shape[1] * 2 = {k_w}" if w_int4 else f"wq.shape[1] = {k_w}"
        raise ValueError(f"K mismatch: xq.shape[1] = {k} but {what}")
    k_max, name, w_max = (MAX_K_W4A4, "W4A4", 8) if w_int4 else (MAX_K_W8A8, "W8A8", 128)
    if k > k_max:
        raise ValueError(
            f"K = {k} is above the {name} limit K <= {k_max}: int8 activation codes times "
            f"{'int4' if w_int4 else 'int8'} weight codes can overflow the int32 accumulator "
            f"(K * 128 * {w_max} > 2^31 - 1). Split K into chunks of at most {k_max} columns "
            "(of xq and the weight), call once per chunk with out_dtype=torch.float32 (bias in "
            "one call only) and add the outputs"
        )
    if x_scale.shape != (m,):
        raise ValueError(f"x_scale must have shape [M] = [{m}], got {list(x_scale.shape)}")
    if w_scale.shape != (n,):
        raise ValueError(f"w_scale must have shape [N] = [{n}], got {list(w_scale.shape)}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must have shape [N] = [{n}], got {list(bias.shape)}")
    check_same_device(xq=xq, x_scale=x_scale, w=w, w_scale=w_scale, bias=bias)
    check_contiguous(xq=xq, x_scale=x_scale, **{wname: w}, w_scale=w_scale, bias=bias)
    return m, n, k


def _qgemm(xq, x_scale, w, w_scale, bias, out_dtype, w_int4, backend):
    # 1. checks
    m, n, k = _check_gemm_args(xq, x_scale, w, w_scale, bias, out_dtype, w_int4)
    if not _use_triton([xq, w], backend):
        if backend in ("auto", "cpu") and xq.device.type == "cpu" and m * n:  # int4 stored, int8 math
            wq = unpack_int4_reference(w) if w_int4 else w
            acc = int_matmul_cpu(xq, wq, max_abs_weight=8 if w_int4 else 128)
            return _epilogue_reference(acc, x_scale, w_scale, bias, out_dtype)
        ref = w4a4_matmul_reference if w_int4 else w8a8_matmul_reference
        return ref(xq, x_scale, w, w_scale, bias, out_dtype)
    # 2. allocate
    out = torch.empty((m, n), dtype=out_dtype, device=xq.device)
    if out.numel() == 0:
        return out
    # 3. launch (a 1-D grid of output tiles; the kernel maps it to (pid_m, pid_n))
    kernel = launchable(_qgemm_kernel, xq, w)
    args = (xq, x_scale, w, w_scale, bias if bias is not None else w_scale, out, m, n, k)
    args += (xq.stride(0), w.stride(0), out.stride(0))
    flags = {"W_INT4": w_int4, "HAS_BIAS": bias is not None}
    if is_interpreted(kernel):
        c = INTERPRETER_CONFIG
        grid = (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)
        kernel[grid](*args, **flags, **c)
    else:
        grid = lambda META: (triton.cdiv(m, META["BLOCK_M"]) * triton.cdiv(n, META["BLOCK_N"]),)
        # no FMA contraction in the epilogue: keeps results bit-identical to the reference
        _autotuned_qgemm()[grid](*args, **flags, enable_fp_fusion=False)
    return out


def w4a4_matmul(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """W4A4 GEMM: ``(xq @ unpack(w_packed).T) * x_scale[:, None] * w_scale[None, :] + bias``.

    Args:
        xq: int8 ``[M, K]``, values in the int4 range ``[-8, 7]`` (from
            ``quantize_per_token(x, 4)``); larger int8 values still give the exact product.
        x_scale: fp32 ``[M]``.
        w_packed: uint8 ``[N, K/2]`` from ``pack_int4`` (even k in the low nibble).
        w_scale: fp32 ``[N]``.
        bias: optional ``[N]`` fp16/bf16/fp32.
        out_dtype: float16, bfloat16 or float32.
        backend: ``"auto"``, ``"triton"``, ``"torch"`` (the reference) or ``"cpu"``
            (``int_matmul_cpu``: the weights unpacked to int8, then ``torch._int_mm``).

    Returns:
        ``[M, N]`` in ``out_dtype``; the integer accumulation is exact (int32), so the
        ``"cpu"`` backend gives the reference's result bit for bit.

    Raises:
        ValueError: ``K > MAX_K_W4A4`` (2097151; even K, so at most 2097150), where int8
            activations times int4 weights could overflow int32.
    """
    return _qgemm(xq, x_scale, w_packed, w_scale, bias, out_dtype, True, backend)


def w8a8_matmul(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """W8A8 GEMM: ``(xq @ wq.T) * x_scale[:, None] * w_scale[None, :] + bias``.

    Same contract as ``w4a4_matmul`` with int8 weights ``wq [N, K]``, and the limit
    ``K <= MAX_K_W8A8 = 131071`` (``ValueError`` above: ``K * 128 * 128 > 2^31 - 1``).
    """
    return _qgemm(xq, x_scale, wq, w_scale, bias, out_dtype, False, backend)


_TUNED = None


def _autotuned_qgemm():
    global _TUNED
    if _TUNED is None:
        _TUNED = triton.autotune(configs=get_autotune_configs(), key=["M", "N", "K", "W_INT4"])(
            _qgemm_kernel
        )
    return _TUNED


# %%
# Benchmark (GPU): one VGGT-1B shape; the full sweep is ``python -m qvggt_kernels.bench``
# ----------------------------------------------------------------------------------------
if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("gemm benchmark needs CUDA; nothing to do")
        raise SystemExit(0)

    @triton.testing.perf_report(
        triton.testing.Benchmark(
            x_names=["M"],
            x_vals=[1374, 13740, 27480, 54960],
            line_arg="provider",
            line_vals=["w4a4", "w8a8", "bf16"],
            line_names=["W4A4 (Triton)", "W8A8 (Triton)", "torch.matmul bf16"],
            ylabel="TOPS",
            plot_name="qgemm-K1024-N4096",
            args={"K": 1024, "N": 4096},
        )
    )
    def bench_qgemm(M, N, K, provider):
        dev = "cuda"
        xq = torch.randint(-8, 8, (M, K), dtype=torch.int8, device=dev)
        xs = torch.rand(M, device=dev)
        ws = torch.rand(N, device=dev)
        if provider == "w4a4":
            from .pack import pack_int4

            wp = pack_int4(torch.randint(-8, 8, (N, K), dtype=torch.int8, device=dev))
            fn = lambda: w4a4_matmul(xq, xs, wp, ws, out_dtype=torch.bfloat16)
        elif provider == "w8a8":
            wq = torch.randint(-128, 128, (N, K), dtype=torch.int8, device=dev)
            fn = lambda: w8a8_matmul(xq, xs, wq, ws, out_dtype=torch.bfloat16)
        else:
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            b = torch.randn(K, N, device=dev, dtype=torch.bfloat16)
            fn = lambda: torch.matmul(a, b)
        ms, lo, hi = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        tops = lambda t: 2 * M * N * K / t * 1e-9
        return tops(ms), tops(hi), tops(lo)

    bench_qgemm.run(print_data=True)
