"""quantize_per_token: semantics, Triton vs reference, zero rows, rounding, errors."""

import math

import pytest
import qvggt_kernels as qk
import scipy.linalg
import torch
from qvggt_kernels._dispatch import _use_triton

needs_triton = pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "cpu", pytest.param("triton", marks=needs_triton)]


def random_smooth(k, device=DEVICE):
    """Non-zero divisors of both signs (the kernel must not assume s > 0)."""
    sign = torch.where(torch.rand(k) < 0.5, -1.0, 1.0)
    return ((torch.rand(k) + 0.25) * sign).to(device)


def random_signs(k, device=DEVICE):
    """The diagonal v of a random Hadamard diag(v) H, the usual pre-scale."""
    return torch.where(torch.rand(k) < 0.5, -1.0, 1.0).to(device)


# ---------------------------------------------------------------------------------------
# The reference implements the documented formula
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [4, 8])
def test_reference_semantics(bits):
    x = torch.randn(6, 64) * 4
    smooth = random_smooth(64, "cpu")
    q, scale = qk.quantize_per_token_reference(x, bits, hadamard=True, smooth=smooth)
    h = torch.tensor(scipy.linalg.hadamard(64), dtype=torch.float64) / 8.0
    y = (x.double() @ h) / smooth.double()
    qmax = 2 ** (bits - 1) - 1
    torch.testing.assert_close(scale.double(), y.abs().amax(1) / qmax, rtol=1e-6, atol=0)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert int(q.abs().max()) == qmax  # the max-magnitude entry maps to +-qmax
    # round to nearest: dequantization error at most half a step (+ fp slack)
    err = (q.double() * scale.double()[:, None] - y).abs()
    # half a step, plus the fp32 rounding of y itself (~1e-7 relative, 1e-6 leaves room)
    assert bool((err <= 0.5 * scale.double()[:, None] + 1e-6 * y.abs()).all())


def test_reference_pre_scale_comes_before_the_rotation():
    """y = fwht(x * p) / s: with p = v (+-1) that is x diag(v) H / s, a random Hadamard with
    the signs first; it differs from fwht(x) * v / s (signs after the transform)."""
    x = torch.randn(6, 64) * 4
    x[:, :] += 3.0  # a common offset, which the signs must scatter before the transform
    v, smooth = random_signs(64, "cpu"), random_smooth(64, "cpu").abs()
    q, scale = qk.quantize_per_token_reference(x, 8, hadamard=True, smooth=smooth, pre_scale=v)
    h = torch.tensor(scipy.linalg.hadamard(64), dtype=torch.float64) / 8.0
    y = (x.double() * v.double()) @ h / smooth.double()
    torch.testing.assert_close(scale.double(), y.abs().amax(1) / 127, rtol=1e-6, atol=0)
    err = (q.double() * scale.double()[:, None] - y).abs()
    # half a step, plus the fp32 rounding of y itself (~1e-7 relative, 1e-6 leaves room)
    assert bool((err <= 0.5 * scale.double()[:, None] + 1e-6 * y.abs()).all())
    q_after, _ = qk.quantize_per_token_reference(x, 8, hadamard=True, smooth=smooth / v)
    assert not torch.equal(q_after, q)  # fwht(x) * v / s is another rotation
    # without the rotation the pre-scale is a plain per-channel product, also non +-1 values
    p = torch.rand(64) + 0.5
    assert torch.equal(
        qk.quantize_per_token_reference(x, 4, pre_scale=p)[0],
        qk.quantize_per_token_reference(x * p, 4)[0],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_half_to_even(backend):
    # amax = 7 and bits = 4 -> scale = 1, so y / scale hits exact halves
    x = torch.tensor([[7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]], device=DEVICE)
    q, scale = qk.quantize_per_token(x, 4, backend=backend)
    assert scale.tolist() == [1.0]
    assert q.tolist() == [[7, 0, 2, 2, 0, -2, -2, 4]]


# ---------------------------------------------------------------------------------------
# Triton kernel vs reference
# ---------------------------------------------------------------------------------------
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


@needs_triton
@pytest.mark.parametrize(
    "m,k,dtype,bits,use_smooth",
    [
        (37, 64, F32, 4, False),
        (37, 64, BF16, 4, True),
        (1, 100, F16, 8, True),  # K not a power of two: masked columns
        (5, 4096, BF16, 4, False),
        (5, 4096, F32, 8, True),
        (3, 1, F32, 4, False),
    ],
)
def test_triton_bit_exact_without_hadamard(m, k, dtype, bits, use_smooth):
    x = (torch.randn(m, k, device=DEVICE) * 3).to(dtype)
    smooth = random_smooth(k) if use_smooth else None
    q, scale = qk.quantize_per_token(x, bits, smooth=smooth, backend="triton")
    q_ref, scale_ref = qk.quantize_per_token_reference(x, bits, smooth=smooth)
    assert q.dtype == torch.int8 and q.shape == (m, k) and scale.shape == (m,)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(q, q_ref)


@needs_triton
@pytest.mark.parametrize(
    "m,k,dtype,use_smooth",
    [
        (37, 64, F32, False),
        (9, 16, BF16, True),
        (2, 1024, F32, True),
        (3, 4096, F16, True),
        (3, 4096, BF16, False),
    ],
)
def test_triton_with_hadamard(m, k, dtype, use_smooth):
    x = (torch.randn(m, k, device=DEVICE) * 3).to(dtype)
    smooth = random_smooth(k) if use_smooth else None
    q, scale = qk.quantize_per_token(x, 4, hadamard=True, smooth=smooth, backend="triton")
    q_ref, scale_ref = qk.quantize_per_token_reference(x, 4, hadamard=True, smooth=smooth)
    # the FWHT sums in another order: scales agree to fp32 rounding and a q may flip by
    # one step when y / scale lands within rounding of a .5 tie (rare)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-5, atol=0)
    diff = (q.int() - q_ref.int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 0.01


@needs_triton
@pytest.mark.parametrize(
    "m,k,dtype,use_smooth",
    [
        (37, 64, F32, True),
        (9, 16, BF16, False),
        (3, 1024, BF16, True),
        (3, 4096, F16, True),
    ],
)
def test_triton_with_pre_scale_and_hadamard(m, k, dtype, use_smooth):
    """The signs first, on load (Triton interpreter on CPU vs the torch reference)."""
    x = (torch.randn(m, k, device=DEVICE) * 3 + 1).to(dtype)
    v = random_signs(k)
    smooth = random_smooth(k).abs() if use_smooth else None
    q, scale = qk.quantize_per_token(
        x, 4, hadamard=True, smooth=smooth, pre_scale=v, backend="triton"
    )
    q_ref, scale_ref = qk.quantize_per_token_reference(
        x, 4, hadamard=True, smooth=smooth, pre_scale=v
    )
    torch.testing.assert_close(scale, scale_ref, rtol=1e-5, atol=0)
    diff = (q.int() - q_ref.int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 0.01
    # +-1 signs are exact: pre-scaling in the kernel == flipping the input beforehand
    q_flip, scale_flip = qk.quantize_per_token(
        (x * v.to(dtype)).contiguous(), 4, hadamard=True, smooth=smooth, backend="triton"
    )
    assert torch.equal(q, q_flip) and torch.equal(scale, scale_flip)


@needs_triton
@pytest.mark.parametrize("m,k,dtype", [(37, 64, F32), (1, 100, F16), (5, 4096, BF16)])
def test_triton_pre_scale_bit_exact_without_hadamard(m, k, dtype):
    x = (torch.randn(m, k, device=DEVICE) * 3).to(dtype)
    pre = (torch.rand(k) + 0.5).to(DEVICE)  # general factors, not only signs
    smooth = random_smooth(k)
    q, scale = qk.quantize_per_token(x, 8, smooth=smooth, pre_scale=pre, backend="triton")
    q_ref, scale_ref = qk.quantize_per_token_reference(x, 8, smooth=smooth, pre_scale=pre)
    assert torch.equal(scale, scale_ref) and torch.equal(q, q_ref)


def test_pre_scale_matches_the_library_rotation():
    """pre_scale=v, hadamard=True quantizes exactly RandomHadamard.rotate(x) = fwht(x * v)."""
    from qvggt_lib.quant.hadamard import RandomHadamard
    from qvggt_lib.quant.quantizer import QuantSpec, compute_qparams, quantize

    rotation = RandomHadamard(128, seed=3)
    x = torch.randn(11, 128) + 2.0
    q, scale = qk.quantize_per_token(x, 4, hadamard=True, pre_scale=rotation.signs, backend="torch")
    y = rotation.rotate(x)
    spec = QuantSpec(4, "per_token")
    s_fake, z = compute_qparams(y, spec)
    assert torch.equal(scale, s_fake[:, 0])
    assert torch.equal(q, quantize(y, s_fake, z, spec).to(torch.int8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_leading_dims_are_flattened(backend):
    x = torch.randn(2, 3, 64, device=DEVICE)
    q, scale = qk.quantize_per_token(x, 4, hadamard=True, backend=backend)
    assert q.shape == (6, 64) and scale.shape == (6,)


# ---------------------------------------------------------------------------------------
# Zero rows, extreme values
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hadamard", [False, True])
def test_zero_rows_give_scale_one_and_zero_q(backend, hadamard):
    x = torch.randn(5, 64, device=DEVICE)
    x[1] = 0.0
    x[4] = 0.0
    q, scale = qk.quantize_per_token(x, 4, hadamard=hadamard, backend=backend)
    assert bool(torch.isfinite(scale).all())
    assert scale[1].item() == 1.0 and scale[4].item() == 1.0
    assert int(q[1].abs().max()) == 0 and int(q[4].abs().max()) == 0
    assert bool((scale[[0, 2, 3]] < 1.0).all())  # other rows untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_zero_and_subnormal_rows(backend):
    x = torch.zeros(3, 32, device=DEVICE)
    x[1, 3] = 1e-45  # amax / 7 underflows to 0 -> treated like a zero row
    x[2, 5] = -1e-37  # tiny but normal, also where the GPU flushes subnormals
    q, scale = qk.quantize_per_token(x, 4, backend=backend)
    assert bool(torch.isfinite(scale).all()) and bool((scale > 0).all())
    assert scale[0].item() == 1.0 and scale[1].item() == 1.0
    assert q[2, 5].item() == -7


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hadamard", [False, True])
def test_non_finite_rows_get_nan_scale_and_zero_codes(backend, hadamard):
    """The NaN/Inf contract, identical in both backends: such a row comes out as q = 0 and
    scale = NaN (its dequantized values are NaN); the other rows are untouched."""
    x = torch.randn(6, 64, device=DEVICE)
    x[1, 5] = float("nan")
    x[2, 0] = float("inf")
    x[3, 9] = float("-inf")
    q, scale = qk.quantize_per_token(x, 4, hadamard=hadamard, backend=backend)
    bad = [1, 2, 3]
    assert bool(torch.isnan(scale[bad]).all()) and int(q[bad].abs().max()) == 0
    good = [0, 4, 5]
    clean = x.clone()
    clean[bad] = 0.0  # the same shape (so the same kernel blocks), without the bad values
    q_clean, scale_clean = qk.quantize_per_token(clean, 4, hadamard=hadamard, backend=backend)
    assert torch.equal(q[good], q_clean[good]) and torch.equal(scale[good], scale_clean[good])
    assert bool(torch.isnan((q.float() * scale[:, None])[bad]).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_smoothing_factor_makes_rows_nan_not_infinite(backend):
    x = torch.randn(3, 32, device=DEVICE)
    smooth = torch.ones(32, device=DEVICE)
    smooth[4] = 0.0  # y / 0 = +-Inf (or NaN for y = 0): every row is non-finite
    q, scale = qk.quantize_per_token(x, 8, smooth=smooth, backend=backend)
    assert bool(torch.isnan(scale).all()) and int(q.abs().max()) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_extreme_values_stay_in_range(backend, bits):
    x = torch.randn(8, 128, device=DEVICE)
    x[0, 0] = 1e30  # huge outlier: the rest of the row collapses to 0
    x[1] = -3e38
    x[2, 7] = -1e-30
    q, scale = qk.quantize_per_token(x, bits, backend=backend)
    qmax = 2 ** (bits - 1) - 1
    assert int(q.max()) <= qmax and int(q.min()) >= -qmax - 1
    assert q[0, 0].item() == qmax and q[1, 0].item() == -qmax
    assert bool(torch.isfinite(scale).all())


def test_hadamard_reduces_error_with_outlier_channel():
    x = torch.randn(64, 256)
    x[:, 3] *= 50.0  # one outlier channel, as in transformer activations

    def err(hadamard):
        q, s = qk.quantize_per_token(x, 4, hadamard=hadamard, backend="torch")
        deq = q.float() * s[:, None]
        target = qk.fwht_reference(x) if hadamard else x
        return float((deq - target).norm() / target.norm())

    assert err(True) < 0.5 * err(False)


# ---------------------------------------------------------------------------------------
# Dispatch and errors
# ---------------------------------------------------------------------------------------
def test_auto_backend_follows_device_and_env(monkeypatch):
    cpu = torch.zeros(2)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert _use_triton([cpu], "torch") is False
    if qk.HAS_TRITON:
        assert _use_triton([cpu], "auto") is False
        assert _use_triton([cpu], "triton") is True
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert _use_triton([cpu, None], "auto") is True
    with pytest.raises(ValueError, match="backend"):
        _use_triton([cpu], "cuda")


def test_errors():
    x = torch.randn(4, 96)
    with pytest.raises(ValueError, match="power of two"):
        qk.quantize_per_token(x, 4, hadamard=True)
    for bits in (1, 9, 4.0):
        with pytest.raises(ValueError, match="bits"):
            qk.quantize_per_token(x, bits)
    with pytest.raises(TypeError, match="float32"):
        qk.quantize_per_token(torch.ones(4, 8, dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="contiguous"):
        qk.quantize_per_token(torch.randn(96, 4).t(), 4)
    with pytest.raises(ValueError, match=r"smooth must have shape \[K\]"):
        qk.quantize_per_token(x, 4, smooth=torch.ones(95))
    with pytest.raises(TypeError, match="smooth"):
        qk.quantize_per_token(x, 4, smooth=torch.ones(96, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"pre_scale must have shape \[K\]"):
        qk.quantize_per_token(x, 4, pre_scale=torch.ones(95))
    with pytest.raises(TypeError, match="pre_scale"):
        qk.quantize_per_token(x, 4, pre_scale=torch.ones(96, dtype=torch.float16))
    with pytest.raises(ValueError, match="contiguous"):
        qk.quantize_per_token(x, 4, pre_scale=torch.ones(96, 2)[:, 0])


def test_scale_formula_uses_qmax():
    x = torch.tensor([[-3.0, 1.0, 0.25]])
    for bits in (2, 4, 8):
        _, scale = qk.quantize_per_token(x, bits, backend="torch")
        assert math.isclose(scale.item(), 3.0 / (2 ** (bits - 1) - 1), rel_tol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hadamard", [False, True])
def test_clip_ratio_matches_fake_quant_and_reference(backend, hadamard):
    """scale = (c * max|y|) / qmax, values beyond the clipped range saturate; the reference and
    the library's fake quantizer agree bit for bit, and so do the Triton kernel and the CPU path
    without the Hadamard (with it: scales to fp32 rounding, codes within one step)."""
    from qvggt_lib.quant.quantizer import QuantSpec, compute_qparams, quantize

    x = torch.randn(19, 64) * 3
    x[:, 5] *= 20  # outliers that the clip saturates
    smooth = random_smooth(64, "cpu")
    clip = float(torch.sigmoid(torch.tensor(1.5)))  # an fp32 LAC factor, ~0.82
    q, scale = qk.quantize_per_token(
        x.to(DEVICE), 4, hadamard=hadamard, smooth=smooth.to(DEVICE), clip=clip, backend=backend
    )
    q_ref, scale_ref = qk.quantize_per_token_reference(x, 4, hadamard, smooth, clip)
    if backend in ("triton", "cpu") and hadamard:  # their FWHTs sum in another order
        torch.testing.assert_close(scale.cpu(), scale_ref, rtol=1e-5, atol=0)
        assert int((q.cpu().int() - q_ref.int()).abs().max()) <= 1
    else:
        assert torch.equal(q.cpu(), q_ref) and torch.equal(scale.cpu(), scale_ref)
    y = (qk.fwht_reference(x) if hadamard else x) / smooth
    spec = QuantSpec(4, "per_token")
    s_fake, z = compute_qparams(y, spec, torch.tensor(clip))
    assert torch.equal(scale_ref, s_fake[:, 0])
    assert torch.equal(q_ref, quantize(y, s_fake, z, spec).to(torch.int8))
    assert int(q_ref.max()) == 7 and int(q_ref.min()) == -8  # saturated at both range ends
    _, scale1 = qk.quantize_per_token_reference(x, 4, hadamard, smooth)
    torch.testing.assert_close(scale_ref, scale1 * clip, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="clip"):
        qk.quantize_per_token(x, 4, clip=0.0)
    with pytest.raises(TypeError, match="clip"):
        qk.quantize_per_token(x, 4, clip=torch.tensor(0.5))


@pytest.mark.parametrize("m,k,dtype,use_smooth,pre", [(37, 64, F32, False, False), (9, 16, BF16, True, True),
                                                      (40, 1024, F32, True, True), (3, 4096, F16, True, False)])
def test_cpu_backend_with_hadamard_agrees_with_the_reference(m, k, dtype, use_smooth, pre):
    """The CPU path's FWHT is two small matmuls (fwht_kronecker): the same transform, summed in
    another order, so as for Triton the scales agree to fp32 rounding and a code may move by one
    step near a tie; without the Hadamard it is the reference, bit for bit."""
    x = (torch.randn(m, k) * 3).to(dtype)
    smooth = random_smooth(k).cpu() if use_smooth else None
    signs = (torch.randint(0, 2, (k,)) * 2 - 1).float() if pre else None
    q, scale = qk.quantize_per_token(x, 4, hadamard=True, smooth=smooth, pre_scale=signs, backend="cpu")
    q_ref, scale_ref = qk.quantize_per_token_reference(x, 4, hadamard=True, smooth=smooth, pre_scale=signs)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-5, atol=0)
    diff = (q.int() - q_ref.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
    q, scale = qk.quantize_per_token(x, 4, smooth=smooth, backend="cpu")
    q_ref, scale_ref = qk.quantize_per_token_reference(x, 4, smooth=smooth)
    assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref)
