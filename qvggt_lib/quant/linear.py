"""QuantLinear, the simulated (fake-quant) DSFQ layer: y = Q_a((x R) / s) Q_w((W R) * s)^T + b.

QuantVGGT (Feng et al., 2025), with a rotation R = H diag(v) and smoothing factors s [K]. It
equals x W^T + b when nothing is quantized. For the ablation's other order
(Order.SMOOTH_THEN_ROTATE, smoothing.py) it computes Q_a((x / s) R) Q_w((W * s) R)^T + b.
Q_a and Q_w follow their QuantSpecs (the paper: dynamic per-token and per-output-channel,
both symmetric), each with an optional learnable clip factor. To run GPTQ, feed it
transformed_weight() and the Hessian of transform_input(x), then hand the result to
set_quantized_weight.
W R is fused once at construction (rotate_then_smooth; smooth_then_rotate keeps W and
rotates W * s on every recomputation); Q_w((W R) * s) is cached in the buffer
quantized_weight and reused in eval mode. In train mode (calibrating s and the clip factors
by gradient descent through the straight-through estimator) it is recomputed every call,
and switching back to eval mode refreshes the cache.
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hadamard import RandomHadamard, rotate_linear_input
from .quantizer import CLIP_INIT_LOGIT, LearnableClip, Quantizer, QuantSpec, dequantize, quantize
from .smoothing import Order


class QuantLinear(nn.Module):
    """Fake-quantized linear; build it with QuantLinear.from_float.

    Buffers: weight [N, K] = W R (float, frozen; W for smooth_then_rotate), bias [N],
    quantized_weight [N, K].
    Parameters (what calibration trains): smooth [K] and the clip logits, when present.
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        weight_quantizer: Quantizer | None,
        act_quantizer: Quantizer | None,
        rotation: RandomHadamard | None = None,
        smooth: Tensor | None = None,
        order: Order = Order.ROTATE_THEN_SMOOTH,
    ):
        super().__init__()
        self.order = Order.check(order)
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.rotation = rotation
        self.register_parameter(
            "smooth", None if smooth is None else nn.Parameter(smooth.detach().clone().to(weight))
        )
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        self.register_buffer("quantized_weight", torch.empty_like(weight))
        self.refresh()

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        weight_spec: QuantSpec | None = None,
        act_spec: QuantSpec | None = None,
        rotation: RandomHadamard | None = None,
        smooth: Tensor | None = None,
        learnable_weight_clip: bool = False,
        learnable_act_clip: bool = False,
        clip_init_logit: float | tuple[float, float] = CLIP_INIT_LOGIT,
        order: Order = Order.ROTATE_THEN_SMOOTH,
    ) -> "QuantLinear":
        """Copy linear into a QuantLinear; linear itself is left untouched.

        weight_spec / act_spec: None keeps that side in float. rotation: applied online to x
        and fused into W. smooth: initial s [K], computed in the rotated space (see
        smoothing.py). learnable_weight_clip: one sigmoid factor per output channel [N, 1];
        learnable_act_clip: one per layer. Both start at sigmoid(clip_init_logit), or at
        sigmoid of its (weight, activation) entries.
        order: "rotate_then_smooth" (DSFQ) or "smooth_then_rotate" (ablation; then smooth
        is computed from the unrotated statistics, see smoothing.py).
        The new layer starts in the source's train/eval mode.
        """
        if learnable_weight_clip and weight_spec is None:
            raise ValueError("learnable_weight_clip needs a weight_spec")
        if learnable_act_clip and act_spec is None:
            raise ValueError("learnable_act_clip needs an act_spec")
        weight_logit, act_logit = (clip_init_logit if isinstance(clip_init_logit, tuple)
                                   else (clip_init_logit, clip_init_logit))
        fuse_rotation = rotation is not None and Order.check(order) is Order.ROTATE_THEN_SMOOTH
        source = rotate_linear_input(linear, rotation) if fuse_rotation else linear
        weight = source.weight.detach().clone()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        device = weight.device
        weight_quantizer = act_quantizer = None
        if weight_spec is not None:
            weight_clip = None
            if learnable_weight_clip:
                weight_clip = LearnableClip((linear.out_features, 1), weight_logit, device)
            weight_quantizer = Quantizer(weight_spec, weight_clip)
        if act_spec is not None:
            act_clip = LearnableClip((), act_logit, device) if learnable_act_clip else None
            act_quantizer = Quantizer(act_spec, act_clip)
        if rotation is not None:
            rotation = copy.deepcopy(rotation).to(device)  # the layer owns its signs
        layer = cls(weight, bias, weight_quantizer, act_quantizer, rotation, smooth, order)
        return layer.train(linear.training)

    def transformed_weight(self) -> Tensor:
        """W' [N, K] before weight quantization: (W R) * s, or (W * s) R for smooth_then_rotate."""
        weight = self.weight if self.smooth is None else self.weight * self.smooth
        if self.order is Order.SMOOTH_THEN_ROTATE and self.rotation is not None:
            weight = self.rotation.rotate(weight)
        return weight

    def compute_quantized_weight(self) -> Tensor:
        """Q_w(W') [N, K], differentiable w.r.t. smooth and the weight clip."""
        weight = self.transformed_weight()
        return weight if self.weight_quantizer is None else self.weight_quantizer(weight)

    @torch.no_grad()
    def weight_grid_error(self) -> float:
        """How far the cached quantized_weight lies from the grid of this layer's weight quantizer,
        in steps: max |requantize(W_hat) - W_hat| / s. About 0 for weights rounded at these bits
        (RTN or GPTQ alike); a few tenths for weights made at other bits."""
        if self.weight_quantizer is None:
            return 0.0
        spec, cached = self.weight_quantizer.spec, self.quantized_weight
        scale, zero_point = self.weight_quantizer.qparams(self.transformed_weight())
        requantized = dequantize(quantize(cached, scale, zero_point, spec), scale, zero_point, spec)
        step = dequantize(torch.ones_like(cached), scale, torch.zeros_like(zero_point), spec)
        return float(((requantized - cached).abs() / step).max()) if cached.numel() else 0.0

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the cached quantized_weight from the current s and clip factors."""
        self.quantized_weight.copy_(self.compute_quantized_weight())

    @torch.no_grad()
    def set_quantized_weight(self, weight: Tensor) -> None:
        """Use a precomputed W_hat [N, K] (e.g. GPTQ on (W R) * s) until the next refresh()."""
        if weight.shape != self.quantized_weight.shape:
            raise ValueError(
                f"expected shape {tuple(self.quantized_weight.shape)}, got {tuple(weight.shape)}"
            )
        self.quantized_weight.copy_(weight)

    def train(self, mode: bool = True) -> "QuantLinear":
        if self.training and not mode:
            self.refresh()  # calibration is over: cache the weight it produced
        return super().train(mode)

    def transform_input(self, x: Tensor) -> Tensor:
        """x [..., K] -> (x R) / s (or (x / s) R), before activation quantization."""
        rotate_first = self.order is Order.ROTATE_THEN_SMOOTH
        if self.rotation is not None and rotate_first:
            x = self.rotation.rotate(x)
        if self.smooth is not None:
            x = x / self.smooth.to(x.dtype)
        if self.rotation is not None and not rotate_first:
            x = self.rotation.rotate(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.transform_input(x)
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        weight = self.compute_quantized_weight() if self.training else self.quantized_weight
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        weight_bits = None if self.weight_quantizer is None else self.weight_quantizer.spec.bits
        act_bits = None if self.act_quantizer is None else self.act_quantizer.spec.bits
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"weight_bits={weight_bits}, act_bits={act_bits}, "
            f"rotation={self.rotation is not None}, smooth={self.smooth is not None}"
            + ("" if self.order is Order.ROTATE_THEN_SMOOTH else f", order={self.order}")
        )
