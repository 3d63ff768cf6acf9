"""Channel smoothing: the second half of DSFQ (SmoothQuant, Xiao et al., ICML 2023).

Dividing input channel j of X by s_j and multiplying column j of W by s_j leaves the layer
unchanged, X W^T = (X diag(s)^-1)(W diag(s))^T, and moves quantization difficulty from
outlier activation channels to the weights:

    s_j = max_t |X_tj|^alpha / max_i |W_ij|^(1 - alpha),   alpha = 0.5,   s_j >= eps

Three orders for the ablation, each an exact identity without quantization:

    order                 x'              W'              statistics for s
    "rotate_then_smooth"  (x R) / s       (W R) * s       max|x R|, max|W R|   DSFQ (paper)
    "smooth_then_rotate"  (x / s) R       (W * s) R       max|x|,   max|W|
    "smooth_only"         x / s           W * s           max|x|,   max|W|

(s multiplies the columns of W: W * s == W diag(s).) QuantVGGT's paper computes s in the
rotated space, c_j = max|(X H)_j|^alpha / max|(W H)_j|^(1 - alpha); its reference code takes
the weight max of the unrotated W instead. Here the caller passes the statistics for its
order: ActAbsMaxObserver(rotation) gives max|x R|, and smoothing_factors takes W R.
"""

from typing import Literal

import torch
from torch import Tensor

from .hadamard import RandomHadamard

SmoothingOrder = Literal["rotate_then_smooth", "smooth_then_rotate", "smooth_only"]
SMOOTHING_ORDERS = ("rotate_then_smooth", "smooth_then_rotate", "smooth_only")


def smoothing_factors(
    act_absmax: Tensor, weight: Tensor, alpha: float = 0.5, eps: float = 1e-5
) -> Tensor:
    """s [K] from the per-channel activation max act_absmax [K] and the weight [N, K]."""
    if act_absmax.shape != weight.shape[-1:]:
        raise ValueError(
            f"act_absmax {tuple(act_absmax.shape)} does not match weight {tuple(weight.shape)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    weight_absmax = weight.detach().abs().amax(dim=0).clamp(min=eps)
    act_absmax = act_absmax.to(weight_absmax)
    return (act_absmax.pow(alpha) / weight_absmax.pow(1 - alpha)).clamp(min=eps)


class ActAbsMaxObserver:
    """Running per-channel max|x| (or max|x R| with a rotation) over every token seen.

    Feed it with update(x), x: [..., K]; read absmax [K] (float32).
    """

    def __init__(self, rotation: RandomHadamard | None = None):
        self.rotation = rotation
        self.absmax: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        if self.rotation is not None:
            x = self.rotation.rotate(x.float())
        batch_absmax = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
        self.absmax = (
            batch_absmax if self.absmax is None else torch.maximum(self.absmax, batch_absmax)
        )


def _check(order: str, rotation: RandomHadamard | None) -> None:
    if order not in SMOOTHING_ORDERS:
        raise ValueError(f"order must be one of {SMOOTHING_ORDERS}, got {order!r}")
    if (rotation is None) != (order == "smooth_only"):
        raise ValueError(f"order {order!r} {'needs' if rotation is None else 'takes no'} rotation")


def transform_input(
    x: Tensor,
    s: Tensor,
    rotation: RandomHadamard | None = None,
    order: SmoothingOrder = "rotate_then_smooth",
) -> Tensor:
    """Activation side x' [..., K] of the table above."""
    _check(order, rotation)
    s = s.to(x)
    if order == "rotate_then_smooth":
        return rotation.rotate(x) / s
    if order == "smooth_then_rotate":
        return rotation.rotate(x / s)
    return x / s


def transform_weight(
    weight: Tensor,
    s: Tensor,
    rotation: RandomHadamard | None = None,
    order: SmoothingOrder = "rotate_then_smooth",
) -> Tensor:
    """Weight side W' [N, K] of the table above, so that x' W'^T == x W^T."""
    _check(order, rotation)
    s = s.to(weight)
    if order == "rotate_then_smooth":
        return rotation.rotate(weight) * s
    if order == "smooth_then_rotate":
        return rotation.rotate(weight * s)
    return weight * s
