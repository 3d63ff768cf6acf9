"""Channel smoothing, the second half of DSFQ: s_j = max|X_j|^a / max|W_j|^(1-a) and the two orders.

SmoothQuant (Xiao et al., ICML 2023):

Dividing input channel j of X by s_j and multiplying column j of W by s_j leaves the layer
unchanged, X W^T = (X diag(s)^-1)(W diag(s))^T, and moves quantization difficulty from
outlier activation channels to the weights:

    s_j = max_t |X_tj|^alpha / max_i |W_ij|^(1 - alpha),   alpha = 0.5,   s_j >= eps

With a rotation R as well, the order is the Table 4 ablation (Order); each row is an exact
identity without quantization:

    order                        x'            W'            statistics for s
    Order.ROTATE_THEN_SMOOTH     (x R) / s     (W R) * s     max|x R|, max|W R|   DSFQ (paper)
    Order.SMOOTH_THEN_ROTATE     (x / s) R     (W * s) R     max|x|,   max|W|
    no rotation (either order)   x / s         W * s         max|x|,   max|W|

(s multiplies the columns of W: W * s == W diag(s).) QuantVGGT's paper computes s in the
rotated space, c_j = max|(X H)_j|^alpha / max|(W H)_j|^(1 - alpha); its reference code takes
the weight max of the unrotated W instead. Here the caller passes the statistics for its
order: observers.AbsMaxObserver(rotation) gives max|x R|, and smoothing_factors takes W R.
"""

from enum import Enum

from torch import Tensor

from .hadamard import RandomHadamard


class Order(str, Enum):
    """Where the smoothing division sits relative to the rotation, in a layer that has both."""

    ROTATE_THEN_SMOOTH = "rotate_then_smooth"  # (x R) / s: DSFQ
    SMOOTH_THEN_ROTATE = "smooth_then_rotate"  # (x / s) R: the ablation

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def check(cls, order) -> "Order":
        """order (an Order or its value) as an Order, or a ValueError naming the choices."""
        try:
            return cls(order)
        except ValueError:
            raise ValueError(f"order must be one of {[o.value for o in cls]}, got {order!r}") from None


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


def transform_input(
    x: Tensor,
    s: Tensor,
    rotation: RandomHadamard | None = None,
    order: Order = Order.ROTATE_THEN_SMOOTH,
) -> Tensor:
    """Activation side x' [..., K] of the table above."""
    order, s = Order.check(order), s.to(x)
    if rotation is None:
        return x / s
    if order is Order.ROTATE_THEN_SMOOTH:
        return rotation.rotate(x) / s
    return rotation.rotate(x / s)


def transform_weight(
    weight: Tensor,
    s: Tensor,
    rotation: RandomHadamard | None = None,
    order: Order = Order.ROTATE_THEN_SMOOTH,
) -> Tensor:
    """Weight side W' [N, K] of the table above, so that x' W'^T == x W^T."""
    order, s = Order.check(order), s.to(weight)
    if rotation is None:
        return weight * s
    if order is Order.ROTATE_THEN_SMOOTH:
        return rotation.rotate(weight) * s
    return rotation.rotate(weight * s)
