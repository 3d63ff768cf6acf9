"""Facts about the uniform quantizers in qvggt_lib.quant.quantizer."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qvggt_lib.quant.quantizer import (
    LearnableClip,
    Quantizer,
    QuantSpec,
    compute_qparams,
    fake_quantize,
    quantize,
    round_ste,
)

finite_floats = st.floats(-100, 100, allow_subnormal=False, width=32)
matrices = arrays(
    np.float32, st.tuples(st.integers(1, 6), st.sampled_from([4, 8, 16])), elements=finite_floats
)
bits = st.integers(2, 8)
row_granularities = st.sampled_from(["per_tensor", "per_channel", "per_token"])


def _spec(bits, granularity, symmetric=True):
    group_size = 4 if granularity == "per_group" else None
    return QuantSpec(bits, granularity, symmetric=symmetric, group_size=group_size)


@settings(max_examples=40, deadline=None)
@given(matrices, bits, st.sampled_from(["per_tensor", "per_channel", "per_token", "per_group"]))
def test_symmetric_fake_quantize_is_idempotent(array, b, granularity):
    x = torch.from_numpy(array)
    spec = _spec(b, granularity)
    once = fake_quantize(x, spec)
    twice = fake_quantize(once, spec)
    assert torch.allclose(twice, once, rtol=1e-5, atol=1e-6 * (1 + x.abs().max().item()))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_token", "per_group"])
@pytest.mark.parametrize("b", [2, 4, 8])
def test_asymmetric_fake_quantize_is_idempotent(granularity, b):
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(b)) + 0.5
    spec = _spec(b, granularity, symmetric=False)
    once = fake_quantize(x, spec)
    assert torch.allclose(fake_quantize(once, spec), once, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(matrices, bits, row_granularities, st.booleans(), st.floats(0.3, 1.0))
def test_error_is_at_most_half_a_step_inside_the_clip_range(array, b, granularity, symmetric, clip):
    x = torch.from_numpy(array)
    spec = _spec(b, granularity, symmetric)
    scale, zero_point = compute_qparams(x, spec, clip)
    x_hat = fake_quantize(x, spec, clip)
    low, high = (spec.qmin - zero_point) * scale, (spec.qmax - zero_point) * scale
    inside = (x >= low) & (x <= high)
    error_bound = (scale / 2 + 1e-5 * (1 + x.abs().max())).expand_as(x)
    assert ((x - x_hat).abs() <= error_bound)[inside].all()


@settings(max_examples=40, deadline=None)
@given(matrices, bits, row_granularities, st.floats(0.3, 1.0))
def test_symmetric_codes_stay_in_signed_range(array, b, granularity, clip):
    x = torch.from_numpy(array)
    spec = _spec(b, granularity)
    q = quantize(x, *compute_qparams(x, spec, clip), spec)
    assert q.min() >= -(2 ** (b - 1)) and q.max() <= 2 ** (b - 1) - 1
    assert torch.equal(q, q.round())


def test_per_group_equals_per_channel_on_each_group():
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(0))
    grouped = fake_quantize(x, QuantSpec(4, "per_group", group_size=16))
    scale, _ = compute_qparams(x, QuantSpec(4, "per_group", group_size=16))
    assert scale.shape == (6, 4, 1)
    per_channel = QuantSpec(4, "per_channel")
    expected = torch.cat(
        [fake_quantize(chunk, per_channel) for chunk in x.split(16, dim=-1)], dim=-1
    )
    assert torch.equal(grouped, expected)


def test_per_token_scales_follow_leading_dims():
    x = torch.randn(2, 5, 8)
    scale, zero_point = compute_qparams(x, QuantSpec(8, "per_token"))
    assert scale.shape == (2, 5, 1) and torch.all(zero_point == 0)
    assert torch.allclose(scale, x.abs().amax(-1, keepdim=True) / 127)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_token", "per_group"])
def test_zero_tensor_quantizes_to_zero(symmetric, granularity):
    x = torch.zeros(3, 8)
    spec = _spec(4, granularity, symmetric)
    scale, _ = compute_qparams(x, spec)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(fake_quantize(x, spec), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 1, "granularity": "per_token"},
        {"bits": 9, "granularity": "per_token"},
        {"bits": 4, "granularity": "per_row"},
        {"bits": 4, "granularity": "per_group"},
        {"bits": 4, "granularity": "per_group", "group_size": 0},
        {"bits": 4, "granularity": "per_channel", "group_size": 32},
        {"bits": 4, "granularity": "per_token", "dynamic": False},
    ],
)
def test_bad_specs_raise(kwargs):
    with pytest.raises(ValueError):
        QuantSpec(**kwargs)


def test_group_size_must_divide_last_dim():
    with pytest.raises(ValueError, match="does not divide"):
        fake_quantize(torch.randn(4, 30), QuantSpec(4, "per_group", group_size=8))


def test_round_ste_rounds_forward_and_passes_gradient():
    x = torch.tensor([0.4, 1.5, 2.5, -0.6], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, torch.tensor([0.0, 2.0, 2.0, -1.0]))  # half to even
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_gradient_reaches_input_and_learnable_clips():
    x = torch.randn(8, 16, requires_grad=True)
    weight_clip, act_clip = LearnableClip((8, 1)), LearnableClip()
    assert torch.allclose(act_clip(), torch.sigmoid(torch.tensor(4.0)))
    loss = fake_quantize(x, QuantSpec(4, "per_channel"), weight_clip()).pow(2).sum()
    loss = (
        loss + fake_quantize(x, QuantSpec(4, "per_token", symmetric=False), act_clip()).pow(2).sum()
    )
    loss.backward()
    assert x.grad.abs().sum() > 0
    assert (weight_clip.logit.grad != 0).all() and act_clip.logit.grad != 0


def test_static_quantizer_uses_observed_range():
    quantizer = Quantizer(QuantSpec(8, "per_tensor", dynamic=False))
    with pytest.raises(RuntimeError):
        quantizer(torch.ones(2, 4))
    quantizer.observe(torch.tensor([[-2.0, 1.0]]))
    quantizer.observe(torch.tensor([[0.5, 3.0]]))
    x = torch.tensor([[10.0, 0.0]])  # outside the range: saturates at 127 * 3 / 127
    assert torch.allclose(quantizer(x), torch.tensor([[3.0, 0.0]]))
    assert set(quantizer.state_dict()) == {"observed_min", "observed_max"}
