r"""``fwht``: the orthonormal fast Walsh-Hadamard transform; Triton kernel, wrapper, reference.

Fast Walsh-Hadamard transform (FWHT)
====================================

What
----
``fwht(x)`` applies the *orthonormal* Walsh-Hadamard transform along the last dimension,

.. math::
    y = x \, H_n / \sqrt{n}, \qquad H_1 = [1], \quad
    H_{2m} = \begin{bmatrix} H_m & H_m \\ H_m & -H_m \end{bmatrix}

(Sylvester / natural ordering, the same matrix as ``scipy.linalg.hadamard(n)``).
:math:`H_n/\sqrt{n}` is symmetric and orthogonal, so ``fwht(fwht(x)) == x`` up to rounding.

Why
---
Rotation-based PTQ (QuaRot, QuantVGGT) multiplies activations by a Hadamard matrix before
quantizing them: an outlier channel gets spread over all channels, so the per-token
max shrinks and 4-bit rounding loses less. The weights absorb :math:`H^\top` offline, and
the activation side needs this transform online, so it must be cheap.

Math: two ways to get O(n log n)
--------------------------------
* **Radix-2 butterflies** (the torch reference). View a row as ``[n/(2h), 2, h]``; one stage
  maps each pair ``(a, b) -> (a + b, a - b)``. ``log2 n`` stages give ``x H_n``.
* **Kronecker factors** (the Triton kernel). ``H_{pq} = H_p \otimes H_q``, and the entries
  are known in closed form, :math:`H_n[i, j] = (-1)^{\mathrm{popcount}(i \,\&\, j)}`.
  Write the row index in mixed radix ``(d_1, ..., d_k)``. A stage applies a small
  :math:`H_R` along the *last* digit with one ``tl.dot`` (``[rows, R] @ [R, R]``) and then
  moves that digit to the front (a transpose of ``[n/R, R]`` to ``[R, n/R]``). After every
  digit was treated once, the digits are back in their original order, no bit-reversal.
  With ``R = 16``: ``n = 4096`` is 3 stages, ``n = 1024`` is 2 stages plus 2 radix-2 stages.

Cost (one row of n elements)
----------------------------
* Bytes: read ``n * s_in`` + write ``n * s_out`` (bf16: ``4n`` bytes); it should run near
  copy speed (Dao-AILab's CUDA kernel reaches <= 1.2x memcpy time for n <= 8192).
* FLOPs: butterflies ``n log2 n`` adds; radix-R dots ``2 R n`` per stage, done on tensor
  cores on GPU (``tf32x3``: three TF32 passes, close to fp32 accuracy). With ``R = 16``,
  ``n = 4096`` costs ~96 flop/element: far below the H100 tensor-core roofline at
  3.35 TB/s, so the kernel stays memory bound.

Limits: n a power of two, ``n <= 32768`` (the row is held in registers). The QuaRot-style
``H_12 \otimes H_{2^m}`` for non-powers of two is not implemented: padding + truncation
(Dao's fallback) would not be orthogonal, so we raise instead.
"""

from __future__ import annotations

import math

import torch

from ._dispatch import (
    HAS_TRITON,
    _use_triton,
    check_contiguous,
    check_dtype,
    is_interpreted,
    launchable,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_FWHT_SIZE = 32768


# %%
# Compute kernel
# --------------
if HAS_TRITON:

    @triton.constexpr_function
    def _log2(n):
        return int(n).bit_length() - 1

    @triton.jit
    def fwht_block(
        x,  # fp32 [BLOCK_M, N]: BLOCK_M rows in registers
        BLOCK_M: tl.constexpr,  # rows per program
        N: tl.constexpr,  # transform width, a power of two
        RADIX: tl.constexpr,  # size of the small Hadamard applied by one tl.dot (16, 32, 64)
        DOT_PRECISION: tl.constexpr,  # "ieee" (exact fp32 FMAs) or "tf32x3" (tensor cores)
    ):
        """Unnormalized ``x @ H_N`` on a register tile (the caller scales by 1/sqrt(N)).

        Shared by ``_fwht_kernel`` and the fused activation-quantization kernel.
        Requires ``BLOCK_M * N // RADIX >= 16`` when ``N >= RADIX`` (tl.dot's minimum M).
        """
        # Digits of the row index: N = RADIX^NUM_DOT_STAGES * 2^NUM_PAIR_STAGES.
        NUM_DOT_STAGES: tl.constexpr = _log2(N) // _log2(RADIX)
        NUM_PAIR_STAGES: tl.constexpr = _log2(N) - NUM_DOT_STAGES * _log2(RADIX)

        # H_RADIX[i, j] = (-1)^popcount(i & j); the parity of an 8-bit value by xor folding.
        idx = tl.arange(0, RADIX)
        bits = idx[:, None] & idx[None, :]
        bits = bits ^ (bits >> 4)
        bits = bits ^ (bits >> 2)
        bits = bits ^ (bits >> 1)
        h = (1 - 2 * (bits & 1)).to(tl.float32)  # [RADIX, RADIX], symmetric, entries +-1

        # Radix-R stages: transform the last digit with one matmul, then rotate it to the front.
        for _ in tl.static_range(NUM_DOT_STAGES):
            x = tl.reshape(x, (BLOCK_M * N // RADIX, RADIX))
            x = tl.dot(x, h, input_precision=DOT_PRECISION)  # fp32 accumulation
            x = tl.reshape(x, (BLOCK_M, N // RADIX, RADIX))
            x = tl.permute(x, (0, 2, 1))
            x = tl.reshape(x, (BLOCK_M, N))

        # Radix-2 stages for what is left (N not a power of RADIX): butterflies.
        for _ in tl.static_range(NUM_PAIR_STAGES):
            x = tl.reshape(x, (BLOCK_M * N // 2, 2))
            a, b = tl.split(x)
            x = tl.join(a + b, a - b)
            x = tl.reshape(x, (BLOCK_M, N // 2, 2))
            x = tl.permute(x, (0, 2, 1))
            x = tl.reshape(x, (BLOCK_M, N))
        return x

    @triton.jit
    def _fwht_kernel(
        x_ptr,  # *fp32/fp16/bf16 [M, N] input, row-major contiguous
        y_ptr,  # *same dtype [M, N] output
        M,  # number of rows
        norm,  # fp32 scalar 1/sqrt(N)
        N: tl.constexpr,  # row length, power of two
        BLOCK_M: tl.constexpr,  # rows per program
        RADIX: tl.constexpr,  # see fwht_block
        DOT_PRECISION: tl.constexpr,  # see fwht_block
    ):
        # 1. program id -> block of rows
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, N)
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]
        mask = rows[:, None] < M
        # 2. load the rows once, compute in fp32
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # 3. transform in registers, normalize
        y = fwht_block(x, BLOCK_M, N, RADIX, DOT_PRECISION) * norm
        # 4. masked store in the input dtype
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def get_autotune_configs():
    """Hopper configs for ``_fwht_kernel`` (pruned per N by ``_prune_configs``)."""
    return [
        triton.Config({"BLOCK_M": bm, "RADIX": r}, num_warps=w, num_stages=1)
        for bm in (1, 2, 4, 8, 16, 32, 64)
        for r in (16, 32)
        for w in (4, 8, 16)
    ]


def _prune_configs(configs, named_args, **kwargs):
    """Drop configs that cannot compile for this N, then those that waste threads."""
    n = kwargs.get("N", named_args.get("N"))

    def valid(c):
        bm, r = c.kwargs["BLOCK_M"], c.kwargs["RADIX"]
        dot_ok = n < r or bm * n // r >= 16  # tl.dot needs >= 16 rows
        return dot_ok and bm * n <= 32768  # at most 128 KiB of fp32 row data per program

    valid_configs = [c for c in configs if valid(c)]
    busy = [c for c in valid_configs if c.num_warps * 32 * 4 <= c.kwargs["BLOCK_M"] * n]
    return busy or valid_configs[:1]


def min_block_m(n: int, radix: int) -> int:
    """Smallest BLOCK_M for which the radix-R ``tl.dot`` has at least 16 rows."""
    if n < radix:
        return 1
    return max(1, (16 * radix) // n)


def check_hadamard_size(n: int, what: str = "the last dimension") -> None:
    if n < 1 or n & (n - 1) != 0:
        raise ValueError(
            f"Hadamard transform needs {what} to be a power of two, got {n}; "
            "pad the channels or use a block-diagonal Hadamard of the largest power-of-two divisor"
        )
    if n > MAX_FWHT_SIZE:
        raise ValueError(f"Hadamard transform supports sizes up to {MAX_FWHT_SIZE}, got {n}")


# %%
# Reference
# ---------
def fwht_reference(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal FWHT along the last dim by radix-2 butterflies, O(n log n), fp32 math.

    Returns a tensor of ``x``'s dtype and shape.
    """
    n = x.shape[-1]
    check_hadamard_size(n)
    y = x.to(torch.float32).reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(y.shape[0], n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    y = y.reshape(x.shape) * (1.0 / math.sqrt(n))
    return y.to(x.dtype)


_SYLVESTER: dict[tuple[int, str], torch.Tensor] = {}


def _sylvester(n: int, device: torch.device) -> torch.Tensor:
    """The unnormalised Sylvester Hadamard matrix H_n (+-1, fp32, symmetric), cached per device."""
    key = (n, str(device))
    if key not in _SYLVESTER:
        h = torch.ones(1, 1)
        while h.shape[0] < n:  # H_2m = [[H_m, H_m], [H_m, -H_m]]
            h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
        _SYLVESTER[key] = h.to(device)
    return _SYLVESTER[key]


def fwht_kronecker(x: torch.Tensor) -> torch.Tensor:
    """The same orthonormal FWHT as two small matmuls, the CPU's fast path.

    H_n = H_a (x) H_b for n = a b (Sylvester ordering), so for a row x reshaped to X [a, b],
    x H_n = vec(H_a X H_b): 2 n (a + b) multiply-adds per row in BLAS instead of log2(n)
    elementwise passes over memory (measured 3-8x faster at n = 128..4096 on 2 cores). The sums
    run in another order than ``fwht_reference``'s, so results agree to fp32 rounding, not bit
    for bit. Returns a tensor of ``x``'s dtype and shape.
    """
    n = x.shape[-1]
    check_hadamard_size(n)
    a = 1 << (n.bit_length() - 1) // 2
    b = n // a
    y = x.to(torch.float32).reshape(-1, a, b)
    y = torch.matmul(torch.matmul(_sylvester(a, x.device), y), _sylvester(b, x.device))
    return (y.reshape(x.shape) * (1.0 / math.sqrt(n))).to(x.dtype)


# %%
# Wrapper
# -------
def fwht(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform along the last dimension.

    Args:
        x: ``[..., n]`` fp32/fp16/bf16, contiguous, ``n`` a power of two ``<= 32768``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see ``qvggt_kernels``).

    Returns:
        ``x @ H_n / sqrt(n)`` with ``x``'s shape and dtype (math in fp32).
    """
    # 1. checks
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_dtype("x", x, FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    n = x.shape[-1]
    check_hadamard_size(n)
    check_contiguous(x=x)
    if not _use_triton([x], backend):
        return fwht_reference(x)

    # 2. allocate
    x2 = x.reshape(-1, n)
    m = x2.shape[0]
    y = torch.empty_like(x2)
    if m == 0:
        return y.reshape(x.shape)

    # 3. launch
    kernel = launchable(_fwht_kernel, x2)
    norm = 1.0 / math.sqrt(n)
    if is_interpreted(kernel):
        # one small config; big row blocks keep the number of (slow, numpy) programs low
        radix = 16
        block_m = max(min_block_m(n, radix), min(triton.next_power_of_2(m), max(1, 4096 // n)))
        grid = (triton.cdiv(m, block_m),)
        kernel[grid](x2, y, m, norm, N=n, BLOCK_M=block_m, RADIX=radix, DOT_PRECISION="ieee")
    else:
        tuned = _autotuned_fwht()
        grid = lambda META: (triton.cdiv(m, META["BLOCK_M"]),)
        tuned[grid](x2, y, m, norm, N=n, DOT_PRECISION="tf32x3", enable_fp_fusion=False)
    return y.reshape(x.shape)


_TUNED = None


def _autotuned_fwht():
    global _TUNED
    if _TUNED is None:
        _TUNED = triton.autotune(
            configs=get_autotune_configs(),
            key=["N"],
            prune_configs_by={"early_config_prune": _prune_configs},
        )(_fwht_kernel)
    return _TUNED


# %%
# Benchmark (GPU): fwht vs a device-to-device copy of the same tensor
# -------------------------------------------------------------------
if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("fwht benchmark needs CUDA; nothing to do")
        raise SystemExit(0)

    @triton.testing.perf_report(
        triton.testing.Benchmark(
            x_names=["n"],
            x_vals=[2**i for i in range(6, 16)],
            line_arg="provider",
            line_vals=["triton", "copy"],
            line_names=["fwht (Triton)", "copy_"],
            ylabel="GB/s",
            plot_name="fwht-bf16-16384rows",
            args={"rows": 16384},
        )
    )
    def bench_fwht(rows, n, provider):
        x = torch.randn(rows, n, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        fn = (lambda: fwht(x, backend="triton")) if provider == "triton" else (lambda: y.copy_(x))
        ms, lo, hi = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        gbps = lambda t: 2 * x.numel() * x.element_size() / t * 1e-6
        return gbps(ms), gbps(hi), gbps(lo)

    bench_fwht.run(print_data=True)
