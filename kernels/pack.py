r"""``pack_int4`` / ``unpack_int4``: two signed int4 values per byte; Triton kernels, references.

Packing signed int4 values two to a byte
========================================

What
----
``pack_int4(q)`` turns an int8 matrix ``q [N, K]`` with values in ``[-8, 7]`` into a
uint8 matrix ``[N, K/2]``; ``unpack_int4`` is its exact inverse.

Nibble order (QuaRot / CUTLASS order): byte ``j`` of row ``n`` holds

.. math::
    \text{packed}[n, j] = (q[n, 2j] \;\&\; \mathtt{0xF}) \;|\; (q[n, 2j+1] \ll 4),

i.e. the *even* column in the **low** nibble and the *odd* column in the **high** nibble,
each in 4-bit two's complement (``-8 = 0b1000``, ``-1 = 0b1111``, ``7 = 0b0111``).

Why
---
A W4A4 linear layer stores its weight as ``[N, K]`` (K-major, the layout the tensor-core
B operand wants) at half a byte per value: 4x less memory and memory traffic than bf16.
Hopper has no int4 tensor cores, so the GEMM unpacks each byte to two int8 values in
registers and runs an int8 ``tl.dot`` (see ``gemm.py``).

Math: sign extension with two shifts
------------------------------------
Reinterpret the byte as int8 ``b``. Then ``(b << 4) >> 4`` moves the low nibble to the
top and shifts it back *arithmetically*, copying its sign bit: that is ``q[2j]``.
``b >> 4`` (arithmetic) is ``q[2j+1]``. Two ALU ops per value, no lookup table.

Cost
----
Packing is offline (once per weight). Bytes: read ``N K``, write ``N K / 2``; no FLOPs.
"""

from __future__ import annotations

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


# %%
# Compute kernels
# ---------------
if HAS_TRITON:

    @triton.jit
    def _pack_int4_kernel(
        q_ptr,  # *int8 [N, K] values in [-8, 7], row-major contiguous
        p_ptr,  # *uint8 [N, K/2] packed output
        N,  # rows
        KH,  # K / 2, bytes per packed row
        BLOCK_N: tl.constexpr,  # rows per program
        BLOCK_KH: tl.constexpr,  # packed bytes per program along a row
    ):
        # 1. program ids -> tile of [BLOCK_N, BLOCK_KH] output bytes
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        bytes_ = tl.program_id(1) * BLOCK_KH + tl.arange(0, BLOCK_KH)
        mask = (rows < N)[:, None] & (bytes_ < KH)[None, :]
        # 2. load the even/odd columns 2j and 2j+1 (int64 offsets: N*K may exceed 2^31)
        even = rows[:, None].to(tl.int64) * (2 * KH) + 2 * bytes_[None, :]
        lo = tl.load(q_ptr + even, mask=mask, other=0)
        hi = tl.load(q_ptr + even + 1, mask=mask, other=0)
        # 3. two's-complement nibbles: low = q[2j] & 0xF, high = q[2j+1] << 4
        packed = (lo & 0xF) | (hi << 4)
        out = rows[:, None].to(tl.int64) * KH + bytes_[None, :]
        tl.store(p_ptr + out, packed.to(tl.uint8, bitcast=True), mask=mask)

    @triton.jit
    def _unpack_int4_kernel(
        p_ptr,  # *uint8 [N, K/2] packed input
        q_ptr,  # *int8 [N, K] output
        N,  # rows
        KH,  # K / 2
        BLOCK_N: tl.constexpr,  # rows per program
        BLOCK_KH: tl.constexpr,  # packed bytes per program along a row
    ):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        bytes_ = tl.program_id(1) * BLOCK_KH + tl.arange(0, BLOCK_KH)
        mask = (rows < N)[:, None] & (bytes_ < KH)[None, :]
        src = rows[:, None].to(tl.int64) * KH + bytes_[None, :]
        b = tl.load(p_ptr + src, mask=mask, other=0).to(tl.int8, bitcast=True)
        # sign-extend each nibble with an arithmetic shift
        lo = (b << 4) >> 4
        hi = b >> 4
        even = rows[:, None].to(tl.int64) * (2 * KH) + 2 * bytes_[None, :]
        tl.store(q_ptr + even, lo, mask=mask)
        tl.store(q_ptr + even + 1, hi, mask=mask)


def get_autotune_configs():
    """Packing is offline and tiny; a fixed tile is fine. Listed for uniformity."""
    return [triton.Config({"BLOCK_N": 16, "BLOCK_KH": 128}, num_warps=4)]


# %%
# References
# ----------
def pack_int4_reference(q: torch.Tensor) -> torch.Tensor:
    """Pure-torch ``pack_int4`` (same nibble order)."""
    lo = q[:, 0::2] & 0xF
    hi = q[:, 1::2] << 4  # int8 shift: wraps exactly like the 4-bit two's complement
    return (lo | hi).view(torch.uint8).contiguous()


def unpack_int4_reference(packed: torch.Tensor) -> torch.Tensor:
    """Pure-torch ``unpack_int4``: uint8 ``[N, K/2]`` -> int8 ``[N, K]``."""
    b = packed.view(torch.int8)
    lo = (b << 4) >> 4  # arithmetic shifts sign-extend the nibble
    hi = b >> 4
    return torch.stack((lo, hi), dim=-1).reshape(packed.shape[0], 2 * packed.shape[1])


# %%
# Wrappers
# --------
def _launch(kernel, src, dst, n, kh):
    kernel = launchable(kernel, src)
    cfg = get_autotune_configs()[0] if not is_interpreted(kernel) else None
    block_n, block_kh = (cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_KH"]) if cfg else (16, 64)
    grid = (triton.cdiv(n, block_n), triton.cdiv(kh, block_kh))
    kernel[grid](src, dst, n, kh, BLOCK_N=block_n, BLOCK_KH=block_kh)


def pack_int4(q: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Pack int8 ``[N, K]`` values in ``[-8, 7]`` into uint8 ``[N, K/2]``.

    Byte ``j`` holds ``q[:, 2j]`` in its low nibble and ``q[:, 2j+1]`` in its high nibble
    (two's complement), see the module docstring.

    Raises:
        TypeError: ``q`` is not int8.  ValueError: not 2-D, K odd, values outside
        ``[-8, 7]``, or not contiguous.
    """
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor, got {type(q).__name__}")
    check_dtype("q", q, (torch.int8,))
    if q.dim() != 2:
        raise ValueError(f"q must be 2-D [N, K], got shape {list(q.shape)}")
    n, k = q.shape
    if k % 2 != 0:
        raise ValueError(f"K must be even to pack two int4 values per byte, got K={k}; pad K")
    check_contiguous(q=q)
    if q.numel() > 0:
        lo, hi = int(q.min()), int(q.max())
        if lo < -8 or hi > 7:
            raise ValueError(
                f"int4 values must lie in [-8, 7], got min={lo}, max={hi}; quantize with bits=4 first"
            )
    if not _use_triton([q], backend):
        return pack_int4_reference(q)
    packed = torch.empty((n, k // 2), dtype=torch.uint8, device=q.device)
    if packed.numel() > 0:
        _launch(_pack_int4_kernel, q, packed, n, k // 2)
    return packed


def unpack_int4(packed: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Exact inverse of ``pack_int4``: uint8 ``[N, K/2]`` -> int8 ``[N, K]`` in ``[-8, 7]``."""
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"packed must be a torch.Tensor, got {type(packed).__name__}")
    check_dtype("packed", packed, (torch.uint8,))
    if packed.dim() != 2:
        raise ValueError(f"packed must be 2-D [N, K/2], got shape {list(packed.shape)}")
    check_contiguous(packed=packed)
    if not _use_triton([packed], backend):
        return unpack_int4_reference(packed)
    n, kh = packed.shape
    q = torch.empty((n, 2 * kh), dtype=torch.int8, device=packed.device)
    if q.numel() > 0:
        _launch(_unpack_int4_kernel, packed, q, n, kh)
    return q


if __name__ == "__main__":
    q = torch.randint(-8, 8, (4, 8), dtype=torch.int8)
    p = pack_int4(q)
    assert torch.equal(unpack_int4(p), q)
    print("q[0] =", q[0].tolist(), "\npacked[0] =", [f"0x{b:02x}" for b in p[0].tolist()])
