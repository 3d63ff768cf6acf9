"""fwht: Sylvester-ordered orthonormal Walsh-Hadamard transform."""

import math

import pytest
import qvggt_kernels as qk
import scipy.linalg
import torch

needs_triton = pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
# fp32 results, sums of n terms in another order (GPU: tf32x3 tensor-core products)
ATOL = 2e-5


def dense_fwht(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    h = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
    return (x.double().cpu() @ h) / math.sqrt(n)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024])
def test_matches_scipy_hadamard(backend, n):
    x = torch.randn(3, n, device=DEVICE)
    y = qk.fwht(x, backend=backend)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double().cpu(), dense_fwht(x), atol=ATOL, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("shape", [(1, 64), (37, 64), (5, 16), (2, 3, 1024), (3, 4096), (1, 32768)])
def test_triton_vs_reference(shape):
    x = torch.randn(*shape, device=DEVICE)
    torch.testing.assert_close(
        qk.fwht(x, backend="triton"), qk.fwht_reference(x), atol=ATOL, rtol=1e-5
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_orthonormal_involution(backend):
    x = torch.randn(7, 512, device=DEVICE)
    y = qk.fwht(x, backend=backend)
    torch.testing.assert_close(qk.fwht(y, backend=backend), x, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_accumulate_in_fp32(backend, dtype):
    x = torch.randn(4, 256, device=DEVICE).to(dtype)
    y = qk.fwht(x, backend=backend)
    assert y.dtype == dtype
    exact = dense_fwht(x.float()).float()
    # one rounding to the output dtype (the interpreter truncates bf16: 1 ulp)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.float().cpu(), exact, atol=1e-3, rtol=2 * eps)


def test_spreads_an_outlier():
    x = torch.zeros(1, 1024)
    x[0, 17] = 32.0
    y = qk.fwht(x, backend="torch")
    assert torch.allclose(y.abs(), torch.full_like(y, 1.0))


def test_errors():
    with pytest.raises(ValueError, match="power of two"):
        qk.fwht(torch.randn(2, 96))
    with pytest.raises(ValueError, match="up to 32768"):
        qk.fwht(torch.randn(1, 65536))
    with pytest.raises(TypeError, match="float32"):
        qk.fwht(torch.ones(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="contiguous"):
        qk.fwht(torch.randn(8, 4).t())


@pytest.mark.parametrize("n", [1, 2, 8, 128, 512, 1024, 4096])
def test_kronecker_fwht_is_the_same_transform(n):
    """H_n = H_a (x) H_b: two small matmuls give the butterflies' result to fp32 rounding."""
    x = torch.randn(5, n, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(qk.fwht_kronecker(x), qk.fwht_reference(x), rtol=1e-5, atol=1e-5)
    assert qk.fwht_kronecker(x.half()).dtype == torch.float16
