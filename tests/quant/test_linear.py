"""Facts about the simulated DSFQ layer QuantLinear (qvggt_lib.quant.linear)."""

import pytest
import torch

from qvggt_lib.quant.gptq import HessianAccumulator, gptq_quantize_weight
from qvggt_lib.quant.hadamard import RandomHadamard
from qvggt_lib.quant.linear import QuantLinear
from qvggt_lib.quant.quantizer import QuantSpec

W4, A4 = QuantSpec(4, "per_channel"), QuantSpec(4, "per_token")
W8, A8 = QuantSpec(8, "per_channel"), QuantSpec(8, "per_token")


def make_linear(k=128, n=64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n)


def make_input(k=128, seed=1):
    return torch.randn(2, 10, k, generator=torch.Generator().manual_seed(seed))


def relative_error(y, reference):
    return ((y - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("k", [128, 96])
def test_rotated_and_smoothed_but_unquantized_equals_float(k):
    linear, x = make_linear(k), make_input(k)
    smooth = torch.rand(k) + 0.5
    layer = QuantLinear.from_float(linear, rotation=RandomHadamard(k, seed=0), smooth=smooth).eval()
    assert torch.allclose(layer(x), linear(x), atol=1e-5)


def test_quantized_output_is_close_and_w8a8_beats_w4a4():
    linear, x = make_linear(), make_input()
    rotation = RandomHadamard(128, seed=0)
    w8a8 = QuantLinear.from_float(linear, W8, A8, rotation=rotation).eval()
    w4a4 = QuantLinear.from_float(linear, W4, A4, rotation=rotation).eval()
    error_8, error_4 = relative_error(w8a8(x), linear(x)), relative_error(w4a4(x), linear(x))
    assert error_8 < 0.02 and error_8 < error_4 < 0.3


def test_eval_mode_uses_the_cached_weight(monkeypatch):
    layer = QuantLinear.from_float(
        make_linear(), W4, A4, rotation=RandomHadamard(128, seed=0)
    ).eval()
    cache = layer.quantized_weight
    calls = []
    original = layer.compute_quantized_weight
    monkeypatch.setattr(layer, "compute_quantized_weight", lambda: calls.append(1) or original())
    x = make_input()
    first, second = layer(x), layer(x)
    assert calls == [] and torch.equal(first, second) and layer.quantized_weight is cache
    layer.train()
    layer(x)
    assert calls == [1]


def test_calibration_trains_smooth_and_clips_then_eval_refreshes_cache():
    linear, x = make_linear(), make_input()
    layer = QuantLinear.from_float(
        linear,
        W4,
        A4,
        rotation=RandomHadamard(128, seed=0),
        smooth=torch.ones(128),
        learnable_weight_clip=True,
        learnable_act_clip=True,
    )
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"smooth", "weight_quantizer.clip.logit", "act_quantizer.clip.logit"}
    layer.train()
    loss = (layer(x) - linear(x).detach()).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    stale = layer.quantized_weight.clone()
    with torch.no_grad():
        layer.weight_quantizer.clip.logit.fill_(0.0)  # clip factor 0.5
    layer.eval()
    assert not torch.equal(layer.quantized_weight, stale)
    assert torch.equal(layer.quantized_weight, layer.compute_quantized_weight())


def test_from_float_does_not_mutate_the_source():
    linear = make_linear()
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    layer = QuantLinear.from_float(
        linear, W4, A4, rotation=RandomHadamard(128, seed=0), smooth=torch.rand(128) + 0.5
    )
    with torch.no_grad():
        layer.weight.mul_(2)
        layer.bias.add_(1)
    assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias)


def test_gptq_weight_can_be_set_and_beats_rtn():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(512, 16, generator=g) @ torch.randn(16, 128, generator=g) + 0.3 * torch.randn(
        512, 128, generator=g
    )
    linear = make_linear()
    layer = QuantLinear.from_float(linear, W4, None, rotation=RandomHadamard(128, seed=0)).eval()
    rtn_error = relative_error(layer(x), linear(x))
    hessian = HessianAccumulator()
    hessian.update(layer.transform_input(x))  # GPTQ sees the layer's own (rotated) inputs
    layer.set_quantized_weight(gptq_quantize_weight(layer.weight, hessian.hessian, W4))
    assert relative_error(layer(x), linear(x)) < 0.7 * rtn_error
    with pytest.raises(ValueError):
        layer.set_quantized_weight(torch.zeros(3, 3))


def test_state_dict_reloads_the_same_layer():
    linear, x = make_linear(), make_input()
    saved = QuantLinear.from_float(
        linear, W4, A4, rotation=RandomHadamard(128, seed=0), smooth=torch.rand(128) + 0.5
    )
    fresh = QuantLinear.from_float(
        make_linear(seed=9), W4, A4, rotation=RandomHadamard(128, seed=1), smooth=torch.ones(128)
    )
    fresh.load_state_dict(saved.state_dict())
    assert torch.equal(fresh.eval()(x), saved.eval()(x))


def test_output_follows_input_dtype_and_repr_names_the_flags():
    layer = QuantLinear.from_float(
        make_linear(), W4, None, rotation=RandomHadamard(128, seed=0)
    ).eval()
    assert layer(make_input().to(torch.bfloat16)).dtype == torch.bfloat16
    text = repr(layer)
    assert (
        "weight_bits=4" in text
        and "act_bits=None" in text
        and "rotation=True" in text
        and "smooth=False" in text
    )


def test_learnable_clip_needs_a_spec():
    with pytest.raises(ValueError):
        QuantLinear.from_float(make_linear(), None, A4, learnable_weight_clip=True)


def test_new_layer_follows_the_source_mode():
    linear = make_linear()
    assert QuantLinear.from_float(linear, W4, A4).training
    assert not QuantLinear.from_float(linear.eval(), W4, A4).training
