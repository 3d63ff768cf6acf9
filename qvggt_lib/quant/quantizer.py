"""Uniform quantizers: quantize, dequantize and fake-quantize with a straight-through estimator.

A b-bit uniform quantizer maps a real x to an integer q and back (Jacob et al., CVPR 2018):

    symmetric:   s = c * max|x| / (2^(b-1) - 1)      q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)
    asymmetric:  s = c * (max x - min x) / (2^b - 1)  z = round(-c * min x / s)
                                                      q = clamp(round(x / s) + z, 0, 2^b - 1)
    dequantize:  x_hat = (q - z) * s                  (z = 0 when symmetric)

The asymmetric range always contains 0, so zero is exactly representable. round() is
torch.round (half to even), like the Triton kernels. c in (0, 1] is a clipping factor:
1 by default, or learned as c = sigmoid(logit) (LWC for weights, LAC for activations;
OmniQuant, Shao et al., ICLR 2024). QuantVGGT (Feng et al., 2025) starts the logit at 4.0.
(At 8 bits that start clips the largest value by 1.8 %, 2.3 grid steps: more error than rounding.)

Which elements share one (s, z), for x of shape [..., K]:

    per_tensor   all of x                      scale shape [1, ..., 1]
    per_channel  each row of a weight [N, K]   scale shape [N, 1]
    per_token    each row of an activation     scale shape [..., 1]
    per_group    each run of group_size along K, scale shape [..., K // group_size, 1]

Gradients pass through round() unchanged (straight-through estimator, Bengio et al., 2013),
so fake_quantize is differentiable with respect to x and to the clipping factor c.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Granularity = Literal["per_tensor", "per_channel", "per_token", "per_group"]
GRANULARITIES = ("per_tensor", "per_channel", "per_token", "per_group")
CLIP_INIT_LOGIT = 4.0  # QuantVGGT's start of every learnable clip: c = sigmoid(4) = 0.982
NO_CLIP_LOGIT = 10.0  # c = sigmoid(10) = 0.99995: a learnable clip that starts at no clipping


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor.

    bits: 2..8. granularity: which elements share a scale (see the module docstring).
    group_size: elements per group along the last dim, only for "per_group".
    dynamic: True computes (s, z) from the tensor being quantized (always the case for
        weights; once per call for activations). False uses a range recorded beforehand
        by Quantizer.observe (static activations, per_tensor only).
    """

    bits: int
    granularity: Granularity
    symmetric: bool = True
    group_size: int | None = None
    dynamic: bool = True

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if self.granularity == "per_group":
            if self.group_size is None or self.group_size <= 0:
                raise ValueError(f"per_group needs a positive group_size, got {self.group_size!r}")
        elif self.group_size is not None:
            raise ValueError("group_size is only used with granularity='per_group'")
        if not self.dynamic and self.granularity != "per_tensor":
            raise ValueError("static quantization (dynamic=False) is supported per_tensor only")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1


def round_ste(x: Tensor) -> Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _grouped(x: Tensor, spec: QuantSpec) -> Tensor:
    """x [..., K] -> [..., K // group_size, group_size] for per_group, x unchanged otherwise."""
    if spec.granularity != "per_group":
        return x
    num_channels = x.shape[-1]
    if num_channels % spec.group_size != 0:
        raise ValueError(
            f"group_size {spec.group_size} does not divide the last dim {num_channels}"
        )
    return x.unflatten(-1, (num_channels // spec.group_size, spec.group_size))


def qparams_from_range(
    x_min: Tensor, x_max: Tensor, spec: QuantSpec, clip: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """Scale and zero point from a range [x_min, x_max] (any matching shapes).

    clip: scalar, or per row with shape x_min.shape[:-1] + (1,) (for per_group, per row of
    the weight, e.g. [N, 1]). Zero ranges get scale 1, so nothing divides by zero.
    """
    if clip is not None:
        if not torch.is_tensor(clip):
            clip = torch.tensor(clip)
        clip = clip.to(device=x_min.device, dtype=x_min.dtype)
        if spec.granularity == "per_group" and clip.ndim > 0:
            clip = clip.unsqueeze(-1)  # [N, 1] -> [N, 1, 1] against [N, groups, 1]
    if spec.symmetric:
        x_max = torch.maximum(x_min.abs(), x_max.abs())
        x_min = torch.zeros_like(x_max)
    else:
        x_min, x_max = x_min.clamp(max=0), x_max.clamp(min=0)
    if clip is not None:
        x_min, x_max = x_min * clip, x_max * clip
    levels = spec.qmax if spec.symmetric else spec.qmax - spec.qmin
    scale = (x_max - x_min) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.zeros_like(scale) if spec.symmetric else round_ste(-x_min / scale)
    return scale, zero_point


def compute_qparams(
    x: Tensor, spec: QuantSpec, clip: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) of x for spec's granularity; shapes as in the module docstring."""
    if spec.granularity == "per_tensor":
        all_dims = tuple(range(x.ndim))
        x_min, x_max = x.amin(dim=all_dims, keepdim=True), x.amax(dim=all_dims, keepdim=True)
    else:
        grouped = _grouped(x, spec)
        x_min, x_max = grouped.amin(dim=-1, keepdim=True), grouped.amax(dim=-1, keepdim=True)
    return qparams_from_range(x_min, x_max, spec, clip)


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, spec: QuantSpec) -> Tensor:
    """Integer codes q (as floats in x's dtype, shape of x) for the given qparams."""
    q = torch.clamp(round_ste(_grouped(x, spec) / scale) + zero_point, spec.qmin, spec.qmax)
    return q.reshape(x.shape)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, spec: QuantSpec) -> Tensor:
    """x_hat = (q - z) * s, shape of q."""
    return ((_grouped(q, spec) - zero_point) * scale).reshape(q.shape)


def fake_quantize(x: Tensor, spec: QuantSpec, clip: Tensor | float | None = None) -> Tensor:
    """Quantize-dequantize x [..., K] with qparams computed from x itself."""
    scale, zero_point = compute_qparams(x, spec, clip)
    return dequantize(quantize(x, scale, zero_point, spec), scale, zero_point, spec)


class LearnableClip(nn.Module):
    """Clipping factor c = sigmoid(logit) in (0, 1).

    shape (): one factor per layer (LAC on activations, as QuantVGGT's code does).
    shape (N, 1): one factor per output channel of a weight [N, K] (LWC).
    """

    def __init__(self, shape: tuple[int, ...] = (), init_logit: float = CLIP_INIT_LOGIT, device=None):
        super().__init__()
        self.logit = nn.Parameter(torch.full(shape, float(init_logit), device=device))

    def forward(self) -> Tensor:
        return torch.sigmoid(self.logit)


class Quantizer(nn.Module):
    """Fake-quantizer holding a QuantSpec and an optional LearnableClip.

    Dynamic specs compute (s, z) from each input. Static specs use the running
    [min, max] recorded by observe() during calibration.
    """

    def __init__(self, spec: QuantSpec, clip: LearnableClip | None = None):
        super().__init__()
        self.spec = spec
        self.clip = clip
        if not spec.dynamic:
            self.register_buffer("observed_min", torch.tensor(float("inf")))
            self.register_buffer("observed_max", torch.tensor(float("-inf")))

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Widen the static range to cover x (static specs only)."""
        if self.spec.dynamic:
            raise RuntimeError("observe() is only for static quantizers (dynamic=False)")
        self.observed_min = torch.minimum(self.observed_min, x.amin().to(self.observed_min))
        self.observed_max = torch.maximum(self.observed_max, x.amax().to(self.observed_max))

    def qparams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        clip = None if self.clip is None else self.clip()
        if self.spec.dynamic:
            return compute_qparams(x, self.spec, clip)
        if not torch.isfinite(self.observed_max):
            raise RuntimeError(
                "static quantizer has no range yet: call observe() on calibration data"
            )
        shape = [1] * x.ndim
        x_min, x_max = (
            self.observed_min.to(x).reshape(shape),
            self.observed_max.to(x).reshape(shape),
        )
        return qparams_from_range(x_min, x_max, self.spec, clip)

    def forward(self, x: Tensor) -> Tensor:
        scale, zero_point = self.qparams(x)
        return dequantize(quantize(x, scale, zero_point, self.spec), scale, zero_point, self.spec)

    def extra_repr(self) -> str:
        s = self.spec
        group = f", group_size={s.group_size}" if s.granularity == "per_group" else ""
        return (
            f"bits={s.bits}, {s.granularity}{group}, symmetric={s.symmetric}, dynamic={s.dynamic}"
        )
