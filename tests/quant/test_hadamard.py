"""Facts about the Hadamard rotations in qvggt_lib.quant.hadamard."""

import pytest
import scipy.linalg
import torch

from qvggt_lib.quant.hadamard import (
    RandomHadamard,
    fwht,
    hadamard_block_size,
    hadamard_matrix,
    rotate_linear_input,
)


def _identity_error(h):
    return (h @ h.T - torch.eye(h.shape[0], dtype=h.dtype)).abs().max().item()


@pytest.mark.parametrize("n", [1, 2, 4, 16, 128, 1024])
def test_fwht_matches_scipy_sylvester(n):
    x = torch.randn(3, 5, n, dtype=torch.float64)
    dense = torch.from_numpy(scipy.linalg.hadamard(n)).double() / n**0.5
    assert torch.allclose(fwht(x), x @ dense, atol=1e-12)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError):
        fwht(torch.randn(4, 12))


@pytest.mark.parametrize("n", [2, 8, 64, 1024])
def test_power_of_two_matrix_is_scaled_scipy_hadamard(n):
    expected = torch.from_numpy(scipy.linalg.hadamard(n)).float() / n**0.5
    assert torch.allclose(hadamard_matrix(n), expected, atol=1e-7)


@pytest.mark.parametrize("n", [12, 24, 384, 20, 40, 80, 28, 56, 112])
def test_paley_kronecker_sizes_are_orthogonal_hadamards(n):
    h = hadamard_matrix(n, dtype=torch.float64)
    assert hadamard_block_size(n) == n
    assert _identity_error(h) < 1e-6
    assert torch.allclose(h.abs(), torch.full_like(h, n**-0.5))  # every entry is +-1/sqrt(n)


@pytest.mark.parametrize("n, block", [(72, 24), (76, 4), (6, 2), (3, 1), (36, 12)])
def test_other_sizes_are_block_diagonal_and_orthogonal(n, block):
    h = hadamard_matrix(n, dtype=torch.float64)
    assert hadamard_block_size(n) == block
    assert _identity_error(h) < 1e-6
    blocks = h.reshape(n // block, block, n // block, block).permute(0, 2, 1, 3)
    off_diagonal = ~torch.eye(n // block, dtype=torch.bool)
    assert blocks[off_diagonal].abs().max() == 0


@pytest.mark.parametrize("n", [64, 24])
def test_random_hadamard_rotate_equals_dense_matrix(n):
    rotation = RandomHadamard(n, seed=3)
    r = rotation.matrix()
    assert _identity_error(r.double()) < 1e-6
    assert torch.equal(r, rotation.signs[:, None] * hadamard_matrix(n))  # R = diag(v) H
    x = torch.randn(7, n)
    assert torch.allclose(rotation.rotate(x), x @ r, atol=1e-5)


def test_random_hadamard_is_deterministic_per_seed_and_reloads():
    a, b, c = RandomHadamard(256, seed=1), RandomHadamard(256, seed=1), RandomHadamard(256, seed=2)
    assert torch.equal(a.signs, b.signs) and not torch.equal(a.signs, c.signs)
    assert set(a.signs.tolist()) == {-1.0, 1.0}
    c.load_state_dict(a.state_dict())
    x = torch.randn(4, 256)
    assert torch.equal(c.rotate(x), a.rotate(x))


def test_rotation_follows_input_dtype():
    rotation = RandomHadamard(32, seed=0)
    assert rotation.rotate(torch.randn(2, 32, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("n", [128, 48])
def test_fused_weight_with_online_rotation_equals_float_linear(n):
    torch.manual_seed(0)
    linear = torch.nn.Linear(n, 40)
    original = linear.weight.detach().clone()
    rotation = RandomHadamard(n, seed=5)
    fused = rotate_linear_input(linear, rotation)
    x = torch.randn(16, n)
    assert torch.allclose(fused(rotation.rotate(x)), linear(x), atol=1e-5)
    assert torch.allclose(
        rotate_linear_input(linear, rotation.matrix()).weight, fused.weight, atol=1e-6
    )
    assert torch.equal(linear.weight, original) and fused.weight is not linear.weight


def test_signs_come_before_the_transform():
    """x R = fwht(x * v) (QuaRot / QuantVGGT reference order), not fwht(x) * v."""
    rotation = RandomHadamard(64, seed=4)
    x = torch.randn(5, 64)
    assert torch.equal(rotation.rotate(x), fwht(x * rotation.signs))
    assert not torch.allclose(rotation.rotate(x), fwht(x) * rotation.signs, atol=1e-3)


def _act_error(x, rotation):
    from qvggt_lib.quant.quantizer import QuantSpec, fake_quantize

    xr = rotation.rotate(x)
    return float((fake_quantize(xr, QuantSpec(4, "per_token")) - xr).norm() / xr.norm())


@pytest.mark.parametrize("n", [256, 48])
def test_seed_matters_for_inputs_with_a_common_offset(n):
    """Post-GELU-like inputs (a common positive offset): with the signs first, two seeds give
    two different rotations and different 4-bit errors (signs after the transform would give
    identical magnitudes, hence identical errors, for every seed). Each rotation stays
    orthogonal and the fused weight with the online rotation stays exact."""
    gen = torch.Generator().manual_seed(0)
    x = 1.0 + 0.3 * torch.randn(64, n, generator=gen)  # every channel around +1
    a, b = RandomHadamard(n, seed=1), RandomHadamard(n, seed=2)
    assert not torch.equal(a.signs, b.signs)
    err_a, err_b = _act_error(x, a), _act_error(x, b)
    assert err_a != err_b
    assert not torch.equal(a.rotate(x).abs(), b.rotate(x).abs())
    torch.manual_seed(0)
    linear = torch.nn.Linear(n, 24)
    for rotation in (a, b):
        assert _identity_error(rotation.matrix().double()) < 1e-6
        assert torch.allclose(rotation.rotate(x), x @ rotation.matrix(), atol=1e-5)
        fused = rotate_linear_input(linear, rotation)
        assert torch.allclose(fused(rotation.rotate(x)), linear(x), atol=1e-4)


def test_signs_first_scatters_a_common_offset():
    """Plain H maps a flat row c*1 to c*sqrt(n)*e_0 (one outlier); diag(v) H spreads it."""
    n = 1024
    flat = torch.ones(1, n)
    plain = fwht(flat)
    assert plain[0, 0].item() == pytest.approx(n**0.5) and plain[0, 1:].abs().max() < 1e-4
    rotated = RandomHadamard(n, seed=0).rotate(flat)
    assert rotated.abs().max() < 0.2 * n**0.5  # no single channel carries the offset
    assert rotated.norm().item() == pytest.approx(n**0.5, rel=1e-5)
