"""Facts about GPTQ (qvggt_lib.quant.gptq): it beats round-to-nearest on correlated inputs."""

import pytest
import torch

from qvggt_lib.quant.gptq import HessianAccumulator, gptq_quantize_weight
from qvggt_lib.quant.quantizer import QuantSpec, fake_quantize

SPECS = {
    "per_channel": QuantSpec(4, "per_channel"),
    "group32": QuantSpec(4, "per_group", group_size=32),
}


def correlated_layer(seed=0, tokens=1024, k=128, n=48, rank=32):
    """Inputs [tokens, k] close to a rank-`rank` subspace (correlated channels), and a weight [n, k]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, rank, generator=g) @ torch.randn(rank, k, generator=g)
    x = x + 0.3 * torch.randn(tokens, k, generator=g)
    weight = torch.randn(n, k, generator=g) / k**0.5
    return x, weight


def hessian_of(x):
    accumulator = HessianAccumulator()
    for chunk in x.split(100):  # uneven chunks exercise the running average
        accumulator.update(chunk)
    return accumulator.hessian


def output_error(x, weight, w_hat):
    return (x @ weight.T - x @ w_hat.T).norm().item()


def test_hessian_accumulator_is_running_average():
    x = torch.randn(2, 150, 16)
    accumulator = HessianAccumulator(dtype=torch.float64)
    accumulator.update(x[0])
    accumulator.update(x[1, :50])
    accumulator.update(x[1, 50:])
    flat = x.reshape(-1, 16).double()
    assert accumulator.num_tokens == 300
    assert torch.allclose(accumulator.hessian, 2 / 300 * flat.T @ flat)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_at_4_bits(name, act_order):
    x, weight = correlated_layer()
    spec = SPECS[name]
    w_gptq = gptq_quantize_weight(weight, hessian_of(x), spec, block_size=64, act_order=act_order)
    w_rtn = fake_quantize(weight, spec)
    assert w_gptq.shape == weight.shape and w_gptq.dtype == weight.dtype
    assert output_error(x, weight, w_gptq) < 0.5 * output_error(
        x, weight, w_rtn
    )  # about 0.3-0.4 here


def test_gptq_output_lies_on_a_4_bit_grid_per_group():
    x, weight = correlated_layer()
    w_gptq = gptq_quantize_weight(weight, hessian_of(x), SPECS["group32"])
    for group in w_gptq.split(32, dim=1):  # at most 16 levels per row and group
        assert all(row.unique().numel() <= 16 for row in group)


def test_dead_input_columns_are_zeroed():
    x, weight = correlated_layer()
    x[:, [5, 17]] = 0.0
    w_gptq = gptq_quantize_weight(weight, hessian_of(x), SPECS["per_channel"])
    assert torch.all(w_gptq[:, [5, 17]] == 0)
    assert torch.isfinite(w_gptq).all()


def test_per_channel_clip_is_applied():
    x, weight = correlated_layer()
    hessian, spec = hessian_of(x), SPECS["group32"]
    unclipped = gptq_quantize_weight(weight, hessian, spec)
    assert torch.equal(
        gptq_quantize_weight(weight, hessian, spec, clip=torch.ones(weight.shape[0], 1)), unclipped
    )
    assert not torch.equal(
        gptq_quantize_weight(weight, hessian, spec, clip=torch.full((weight.shape[0], 1), 0.8)),
        unclipped,
    )


def test_rejects_activation_granularity():
    with pytest.raises(ValueError):
        gptq_quantize_weight(torch.randn(4, 8), torch.eye(8), QuantSpec(4, "per_token"))
