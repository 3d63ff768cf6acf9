"""qvggt_kernels: Triton kernels for W4A4 / W8A8 inference of VGGT on Hopper.

Each kernel module is a lesson (docstring with the math and a cost estimate, the kernel, a
wrapper, a pure-torch ``*_reference`` and ``get_autotune_configs()``):

* ``pack``      -- ``pack_int4`` / ``unpack_int4``: two signed nibbles per byte.
* ``fwht``      -- ``fwht``: orthonormal fast Walsh-Hadamard transform.
* ``act_quant`` -- ``quantize_per_token``: per-token quantization, optional fused rotation.
* ``gemm``      -- ``w4a4_matmul`` / ``w8a8_matmul``: int8 tensor-core GEMMs, int32 accumulation.

Benchmarking:

* ``bench``     -- ``python -m qvggt_kernels.bench``: per-GEMM benchmark at VGGT-1B shapes.
* ``timing``    -- ``measure`` / ``median_ms``: the benchmarks' timing (median ms, peak memory).

Every kernel wrapper takes ``backend="auto" | "triton" | "torch" | "cpu"``. ``auto`` runs
Triton when a tensor is on CUDA or ``TRITON_INTERPRET=1`` is set, and ``cpu`` otherwise: the
torch reference, except that the GEMMs run ``torch._int_mm`` (exact int32 accumulation, so the
same result bit for bit, much faster) and the fused activation quantization's FWHT runs as two
small matmuls (``fwht_kronecker``: agrees with the butterflies to fp32 rounding). ``backend="triton"`` on CPU tensors uses Triton's
interpreter.

Typical W4A4 linear layer::

    # R = diag(v) H, a random Hadamard: signs v (fp32 [K], +-1) first, then the FWHT
    # offline, once: rotate the weight rows (W R), quantize per output channel, pack
    w_q, w_scale = quantize_per_token(weight, 4, hadamard=True, pre_scale=v)
    w_packed = pack_int4(w_q)
    # online, per token: rotate (x R) and quantize; (x R)(W R)^T = x W^T since R R^T = I
    x_q, x_scale = quantize_per_token(x, 4, hadamard=True, pre_scale=v)
    y = w4a4_matmul(x_q, x_scale, w_packed, w_scale, bias, out_dtype=torch.bfloat16)
"""

from ._dispatch import BACKENDS, HAS_TRITON, _use_triton
from .act_quant import quantize_per_token, quantize_per_token_cpu, quantize_per_token_reference
from .fwht import fwht, fwht_kronecker, fwht_reference
from .gemm import (
    int_matmul_cpu,
    int_matmul_reference,
    w4a4_matmul,
    w4a4_matmul_reference,
    w8a8_matmul,
    w8a8_matmul_reference,
)
from .pack import pack_int4, pack_int4_reference, unpack_int4, unpack_int4_reference

__all__ = [
    "BACKENDS",
    "HAS_TRITON",
    "_use_triton",
    "fwht",
    "fwht_kronecker",
    "fwht_reference",
    "int_matmul_cpu",
    "int_matmul_reference",
    "pack_int4",
    "pack_int4_reference",
    "quantize_per_token",
    "quantize_per_token_cpu",
    "quantize_per_token_reference",
    "unpack_int4",
    "unpack_int4_reference",
    "w4a4_matmul",
    "w4a4_matmul_reference",
    "w8a8_matmul",
    "w8a8_matmul_reference",
]
