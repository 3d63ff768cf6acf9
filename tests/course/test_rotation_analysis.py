import math

import pytest
import torch

from qvggt_lib.course.rotation_analysis import (
    channel_absmax,
    layer_quant_errors,
    max_to_rms,
    orthogonality_error,
    pad_truncate_hadamard,
    predicted_token_error,
    relative_error,
)
from qvggt_lib.quant import QuantSpec, RandomHadamard, fake_quantize, hadamard_matrix


def test_max_to_rms_bounds():
    k = 64
    flat = torch.ones(k)
    one_hot = torch.zeros(k)
    one_hot[3] = -5.0
    assert max_to_rms(flat).item() == pytest.approx(1.0)
    assert max_to_rms(one_hot).item() == pytest.approx(math.sqrt(k))
    assert max_to_rms(torch.randn(7, 5, k)).shape == (7, 5)


def test_hadamard_spreads_a_one_hot_row():
    k = 128
    x = torch.zeros(1, k)
    x[0, 17] = 10.0
    rotated = RandomHadamard(k, seed=0).rotate(x)
    assert max_to_rms(rotated).item() == pytest.approx(1.0, abs=1e-5)


def test_channel_absmax_and_relative_error():
    x = torch.tensor([[1.0, -3.0], [-2.0, 0.5]])
    torch.testing.assert_close(channel_absmax(x), torch.tensor([2.0, 3.0]))
    assert relative_error(x, x) == 0.0
    assert relative_error(2 * x, x) == pytest.approx(1.0)


def test_orthogonality_and_pad_truncate():
    assert orthogonality_error(hadamard_matrix(64)) < 1e-6
    assert orthogonality_error(hadamard_matrix(20)) < 1e-6
    torch.testing.assert_close(pad_truncate_hadamard(64), hadamard_matrix(64, dtype=torch.float64))
    assert pad_truncate_hadamard(76).shape == (76, 76)
    assert orthogonality_error(pad_truncate_hadamard(76)) > 0.1


def test_predicted_token_error():
    assert predicted_token_error(1.0, bits=4).item() == pytest.approx(1 / (math.sqrt(12) * 7))
    assert predicted_token_error(1e6).item() == 1.0


def test_layer_quant_errors_matches_fake_quantize_and_rotation_helps_outliers():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    x[:, 5] *= 40  # one outlier channel
    weight = torch.randn(16, 32)
    plain = layer_quant_errors(x, weight)
    xq = fake_quantize(x, QuantSpec(4, "per_token"))
    assert plain["act"] == pytest.approx(relative_error(xq, x))
    rotated = layer_quant_errors(x, weight, RandomHadamard(32, seed=1))
    assert rotated["act"] < plain["act"] / 2
    assert rotated["output"] < plain["output"]
    exact = layer_quant_errors(x, weight, RandomHadamard(32, seed=1), weight_bits=8, act_bits=8)
    assert exact["output"] < 0.05 and set(exact) == {"act", "weight", "output"}
