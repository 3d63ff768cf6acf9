"""Facts about channel smoothing (qvggt_lib.quant.smoothing), alone and after a rotation."""

import pytest
import torch

from qvggt_lib.quant.hadamard import RandomHadamard
from qvggt_lib.quant.observers import AbsMaxObserver
from qvggt_lib.quant.quantizer import QuantSpec, fake_quantize
from qvggt_lib.quant.smoothing import (
    Order,
    smoothing_factors,
    transform_input,
    transform_weight,
)

PER_TOKEN = {b: QuantSpec(b, "per_token") for b in (4, 8)}
PER_CHANNEL = {b: QuantSpec(b, "per_channel") for b in (4, 8)}


def outlier_layer(seed=0, tokens=256, k=128, n=64, outlier_channels=(3, 40, 77), gain=20.0):
    """Activations [tokens, k] with a few channels `gain` times larger, and a weight [n, k]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=g)
    x[:, list(outlier_channels)] *= gain
    weight = torch.randn(n, k, generator=g) / k**0.5
    return x, weight


def relative_error(y, reference):
    return ((y - reference).norm() / reference.norm()).item()


def test_smoothing_factors_formula():
    act_absmax = torch.tensor([4.0, 1.0, 0.0])
    weight = torch.tensor([[1.0, -4.0, 2.0], [-0.25, 1.0, 0.5]])
    s = smoothing_factors(act_absmax, weight, alpha=0.5)
    assert torch.allclose(s, torch.tensor([2.0, 0.5, 1e-5]))  # 4^.5/1^.5, 1^.5/4^.5, clamped at eps
    assert torch.allclose(smoothing_factors(act_absmax, weight, alpha=1.0)[:2], act_absmax[:2])


def test_smoothing_factors_check_shapes():
    with pytest.raises(ValueError):
        smoothing_factors(torch.ones(5), torch.ones(3, 4))


@pytest.mark.parametrize("order", [*Order, None])  # None: smoothing alone, no rotation
def test_every_order_is_exact_without_quantization(order):
    x, weight = outlier_layer()
    rotation = None if order is None else RandomHadamard(x.shape[-1], seed=0)
    order = order or Order.ROTATE_THEN_SMOOTH  # ignored without a rotation
    s = torch.rand(x.shape[-1]) + 0.1
    y = transform_input(x, s, rotation, order) @ transform_weight(weight, s, rotation, order).T
    assert torch.allclose(y, x @ weight.T, atol=1e-4)


def test_an_unknown_order_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="rotate_then_smooth"):
        transform_input(torch.ones(2, 4), torch.ones(4), RandomHadamard(4, seed=0), "smooth_only")
    assert Order.check("smooth_then_rotate") is Order.SMOOTH_THEN_ROTATE
    assert f"{Order.ROTATE_THEN_SMOOTH}" == "rotate_then_smooth" == Order.ROTATE_THEN_SMOOTH


def test_smoothing_reduces_w8a8_error_with_outlier_channels():
    x, weight = outlier_layer()
    reference = x @ weight.T
    naive = fake_quantize(x, PER_TOKEN[8]) @ fake_quantize(weight, PER_CHANNEL[8]).T
    s = smoothing_factors(x.abs().amax(0), weight)
    x_s, w_s = (
        transform_input(x, s),  # no rotation: x / s and W * s
        transform_weight(weight, s),
    )
    smoothed = fake_quantize(x_s, PER_TOKEN[8]) @ fake_quantize(w_s, PER_CHANNEL[8]).T
    assert relative_error(smoothed, reference) < 0.5 * relative_error(naive, reference)


def test_rotation_reduces_a4_error_with_outlier_channels():
    x, weight = outlier_layer()
    reference = x @ weight.T
    rotation = RandomHadamard(x.shape[-1], seed=0)
    naive = fake_quantize(x, PER_TOKEN[4]) @ weight.T
    rotated = fake_quantize(rotation.rotate(x), PER_TOKEN[4]) @ rotation.rotate(weight).T
    assert relative_error(rotated, reference) < 0.5 * relative_error(naive, reference)


def test_dsfq_w4a4_beats_naive_w4a4_on_outlier_layer():
    x, weight = outlier_layer()
    reference = x @ weight.T
    naive = fake_quantize(x, PER_TOKEN[4]) @ fake_quantize(weight, PER_CHANNEL[4]).T
    rotation = RandomHadamard(x.shape[-1], seed=0)
    observer = AbsMaxObserver(rotation)
    observer.update(x)
    s = smoothing_factors(observer.absmax, rotation.rotate(weight))  # max|X R| and max|W R|
    x_dsfq, w_dsfq = transform_input(x, s, rotation), transform_weight(weight, s, rotation)
    dsfq = fake_quantize(x_dsfq, PER_TOKEN[4]) @ fake_quantize(w_dsfq, PER_CHANNEL[4]).T
    assert relative_error(dsfq, reference) < 0.6 * relative_error(naive, reference)
