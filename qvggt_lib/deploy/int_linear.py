"""Int4Linear / Int8Linear: a deployed linear, y = (Q(fwht(x * v) / s) W_q^T) s_x s_w + b on integer kernels.

The activation side is one fused pass of ``qvggt_kernels.quantize_per_token`` (signs v as the
pre-scale, FWHT, divide by s, per-token max, clip c, round), the product an int8 GEMM with
int32 accumulation, the epilogue acc * s_x * s_w + b in fp32. docs/deployment.md explains
what goes where and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from qvggt_kernels import quantize_per_token, unpack_int4, w4a4_matmul, w8a8_matmul
from torch import Tensor, nn
from torch.profiler import record_function

from ..quant.hadamard import is_power_of_two

_FP32_BUFFERS = ("weight_scale", "bias", "act_signs", "act_divisor", "input_divisor")


@dataclass(frozen=True)
class IntLinearSpec:
    """The shape of a deployed layer: sizes, bits, and which optional buffers it holds.

    hadamard: the fused online FWHT. act_signs: the Hadamard signs v [K], the kernel's
    pre-scale. act_divisor: s [K] dividing the rotated row inside the kernel. input_divisor:
    s [K] applied before the rotation (order smooth_then_rotate, not folded into a LayerNorm),
    an unfused division. act_clip: the LAC ratio c, or None.
    """

    in_features: int
    out_features: int
    weight_bits: int
    act_bits: int
    bias: bool = True
    hadamard: bool = False
    act_divisor: bool = False
    input_divisor: bool = False
    act_signs: bool = False
    act_clip: float | None = None


class IntLinear(nn.Module):
    """Shared body of Int4Linear / Int8Linear, built from an IntLinearSpec.

    Buffers: weight (int codes: uint8 [N, K/2] packed or int8 [N, K]), weight_scale fp32 [N],
    and, as the spec says, bias, act_signs, act_divisor, input_divisor (fp32 [N] or [K]). The
    fp32 buffers stay fp32 when the model is cast (model.bfloat16()): only their device follows.
    """

    packed: ClassVar[bool]
    max_weight_bits: ClassVar[int]

    def __init__(self, spec: IntLinearSpec, backend: str = "auto", device=None):
        super().__init__()
        k, n = spec.in_features, spec.out_features
        if not 2 <= spec.weight_bits <= self.max_weight_bits:
            raise ValueError(f"{type(self).__name__} stores 2..{self.max_weight_bits}-bit weights, "
                             f"got {spec.weight_bits}")
        if not 2 <= spec.act_bits <= 8:
            raise ValueError(f"act_bits must be in 2..8 (int8 codes), got {spec.act_bits}")
        if self.packed and k % 2:
            raise ValueError(f"int4 packing needs an even in_features, got {k}")
        if spec.hadamard and not is_power_of_two(k):
            raise ValueError(f"the fused FWHT needs a power-of-two in_features, got {k}")
        self.spec, self.backend = spec, backend
        self.in_features, self.out_features = k, n
        self.weight_bits, self.act_bits = spec.weight_bits, spec.act_bits
        self.hadamard, self.act_clip = spec.hadamard, spec.act_clip
        shape = (n, k // 2) if self.packed else (n, k)
        dtype = torch.uint8 if self.packed else torch.int8
        fp32 = {"dtype": torch.float32, "device": device}
        self.register_buffer("weight", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("weight_scale", torch.ones(n, **fp32))
        self.register_buffer("bias", torch.zeros(n, **fp32) if spec.bias else None)
        for name in ("act_divisor", "input_divisor", "act_signs"):
            self.register_buffer(name, torch.ones(k, **fp32) if getattr(spec, name) else None)

    def quantize_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [..., K] -> (int8 codes [M, K], fp32 scales [M]): the whole activation side."""
        x = x.reshape(-1, self.in_features)
        if self.input_divisor is not None:
            x = x / self.input_divisor.to(x.dtype)  # as the simulation: x / s before R
        return quantize_per_token(
            x.contiguous(), self.act_bits, self.hadamard, self.act_divisor, self.act_clip,
            backend=self.backend,
            pre_scale=self.act_signs,  # fwht(x * v) / s: the signs first, on load
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected [..., {self.in_features}] inputs, got {list(x.shape)}")
        with record_function("qvggt::activation_quant"):  # labels for bench.block_breakdown
            q, scale = self.quantize_input(x)  # [M, K] int8, [M] fp32
        gemm = w4a4_matmul if self.packed else w8a8_matmul
        with record_function("qvggt::gemm"):
            y = gemm(q, scale, self.weight, self.weight_scale, self.bias, out_dtype=x.dtype,
                     backend=self.backend)  # [M, N]
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):
        saved = {n: self._buffers[n] for n in _FP32_BUFFERS if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for name, old in saved.items():
            new = self._buffers[name]
            if new.dtype != torch.float32:  # a dtype cast: keep full precision, follow the device
                self._buffers[name] = old.to(new.device)
        return self

    def layer_config(self) -> dict:
        """JSON-ready {"type": class name, **spec}: load_deployed rebuilds the skeleton from it."""
        return {"type": type(self).__name__, **asdict(self.spec)}

    @classmethod
    def from_layer_config(cls, config: dict, backend: str = "auto", device=None) -> IntLinear:
        spec = IntLinearSpec(**{k: v for k, v in config.items() if k != "type"})
        return cls(spec, backend=backend, device=device)

    def dequantized_weight(self) -> Tensor:
        """codes * s_w [N, K] fp32: equals the simulated QuantLinear's quantized_weight."""
        codes = unpack_int4(self.weight, backend="torch") if self.packed else self.weight
        return codes.float() * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"w{self.weight_bits}a{self.act_bits}, hadamard={self.hadamard}, "
            f"act_signs={self.act_signs is not None}, "
            f"act_divisor={self.act_divisor is not None}, "
            f"input_divisor={self.input_divisor is not None}, act_clip={self.act_clip}, "
            f"backend={self.backend!r}"
        )


class Int4Linear(IntLinear):
    """W4A4 (or W4A8, ...): int4 weight codes packed two per byte [N, K/2], int4 GEMM."""

    packed = True
    max_weight_bits = 4


class Int8Linear(IntLinear):
    """W8A8 (or W6A6, W8A4, ...): int8 weight codes [N, K], int8 GEMM."""

    packed = False
    max_weight_bits = 8


LAYER_TYPES = {cls.__name__: cls for cls in (Int4Linear, Int8Linear)}


def linear_storage_bytes(
    in_features: int,
    out_features: int,
    weight_bits: int,
    bias: bool = True,
    act_divisor: bool = True,
    act_signs: bool = True,
) -> int:
    """Bytes of one deployed layer's state: codes (4-bit: K/2 bytes per row; 5..8-bit: K),
    fp32 weight scales [N], fp32 bias [N], fp32 activation divisor [K] (s, when the layer
    smooths), fp32 Hadamard signs [K] (v, the kernel's pre-scale, when it rotates). The
    defaults describe DSFQ (both). Tests check it against real deployed modules."""
    codes = out_features * (math.ceil(in_features / 2) if weight_bits <= 4 else in_features)
    return (
        codes
        + 4 * out_features
        + (4 * out_features if bias else 0)
        + (4 * in_features if act_divisor else 0)
        + (4 * in_features if act_signs else 0)
    )
