"""w4a4_matmul / w8a8_matmul: exact int32 accumulation, epilogue, masks, errors."""

import pytest
import qvggt_kernels as qk
import torch
from qvggt_kernels.gemm import INT32_MAX, MAX_K_W4A4, MAX_K_W8A8

needs_triton = pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "cpu", pytest.param("triton", marks=needs_triton)]

# (M, N, K): M not a multiple of the block, N = 1, K not a multiple of BLOCK_K, K = 4096
SHAPES = [(37, 1, 64), (37, 45, 100), (70, 33, 66), (1, 130, 128), (5, 7, 4096)]


def make_case(m, n, k, w_bits, bias=True, bias_dtype=torch.float32):
    lim = 2 ** (w_bits - 1)
    xq = torch.randint(-8, 8, (m, k), dtype=torch.int8)  # 4-bit activations for both
    wq = torch.randint(-lim, lim, (n, k), dtype=torch.int8)
    xs = torch.rand(m) * 0.1 + 1e-3
    ws = torch.rand(n) * 0.01 + 1e-4
    b = torch.randn(n).to(bias_dtype) if bias else None
    to = lambda t: None if t is None else t.to(DEVICE)
    return to(xq), to(xs), to(wq), to(ws), to(b)


def run(w_bits, xq, xs, wq, ws, b, out_dtype, backend):
    if w_bits == 4:
        return qk.w4a4_matmul(xq, xs, qk.pack_int4(wq), ws, b, out_dtype=out_dtype, backend=backend)
    return qk.w8a8_matmul(xq, xs, wq, ws, b, out_dtype=out_dtype, backend=backend)


def exact_int(xq, wq):
    return xq.long().cpu() @ wq.long().cpu().T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("w_bits", [4, 8])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_accumulator_is_exact(backend, w_bits, m, n, k):
    # scale-1 epilogue: the output is the integer dot product itself (|acc| < 2^24 here)
    xq, _, wq, _, _ = make_case(m, n, k, w_bits, bias=False)
    ones_m = torch.ones(m, device=DEVICE)
    ones_n = torch.ones(n, device=DEVICE)
    out = run(w_bits, xq, ones_m, wq, ones_n, None, torch.float32, backend)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert torch.equal(out.cpu().long(), exact_int(xq, wq))


@needs_triton
@pytest.mark.parametrize("w_bits", [4, 8])
@pytest.mark.parametrize("m,n,k", SHAPES[:-1])
def test_triton_bit_exact_fp32(w_bits, m, n, k):
    case = make_case(m, n, k, w_bits, bias=True)
    got = run(w_bits, *case, torch.float32, "triton")
    ref = run(w_bits, *case, torch.float32, "torch")
    assert torch.equal(got, ref)


@needs_triton
def test_triton_bit_exact_fp32_k4096():
    case = make_case(5, 7, 4096, 4, bias=True)
    got = run(4, *case, torch.float32, "triton")
    ref = run(4, *case, torch.float32, "torch")
    assert torch.equal(got, ref)


@needs_triton
@pytest.mark.parametrize(
    "w_bits,out_dtype,bias_dtype",
    [
        (4, torch.float16, torch.float32),
        (4, torch.bfloat16, torch.bfloat16),
        (8, torch.bfloat16, torch.float32),
        (8, torch.float16, torch.float16),
    ],
)
def test_triton_half_outputs(w_bits, out_dtype, bias_dtype):
    case = make_case(37, 45, 100, w_bits, bias_dtype=bias_dtype)
    got = run(w_bits, *case, out_dtype, "triton")
    ref = run(w_bits, *case, out_dtype, "torch")
    assert got.dtype == out_dtype
    # Same fp32 value before the cast; the CPU interpreter truncates fp32 -> bf16
    # instead of rounding to nearest, so allow one ulp of the output dtype.
    torch.testing.assert_close(got.float(), ref.float(), rtol=torch.finfo(out_dtype).eps, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_int8_values_k4096(backend):
    # |acc| up to 4096 * 128 * 128 = 2^26: exact in int32, and 2^26, 127 * 2^19 are exact in fp32
    m, n, k = 3, 5, 4096
    xq = torch.full((m, k), -128, dtype=torch.int8, device=DEVICE)
    wq = torch.full((n, k), -128, dtype=torch.int8, device=DEVICE)
    wq[1] = 127
    ones = lambda r: torch.ones(r, device=DEVICE)
    out = qk.w8a8_matmul(xq, ones(m), wq, ones(n), backend=backend)
    assert torch.equal(out.cpu().long(), exact_int(xq, wq))


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_int4_values(backend):
    m, n, k = 17, 3, 256
    xq = torch.full((m, k), -8, dtype=torch.int8, device=DEVICE)
    wq = torch.full((n, k), -8, dtype=torch.int8, device=DEVICE)
    wq[1] = 7
    wq[2, ::2] = 7  # alternate nibbles inside each byte
    ones = lambda r: torch.ones(r, device=DEVICE)
    out = qk.w4a4_matmul(xq, ones(m), qk.pack_int4(wq), ones(n), backend=backend)
    assert torch.equal(out.cpu().long(), exact_int(xq, wq))
    assert out[0, 0].item() == 64 * k and out[0, 1].item() == -56 * k


# ---------------------------------------------------------------------------------------
# The int32 range: K limits
# ---------------------------------------------------------------------------------------
def test_k_limits_are_the_tight_int32_bounds():
    codes8 = torch.arange(-128, 128, dtype=torch.int64)
    codes4 = torch.arange(-8, 8, dtype=torch.int64)
    for w_codes, k_max in ((codes8, MAX_K_W8A8), (codes4, MAX_K_W4A4)):
        products = codes8[:, None] * w_codes[None, :]  # int8 activations times weight codes
        hi, lo = int(products.max()), int(products.min())
        assert hi >= -lo  # the positive end binds: (-128) * (-128) or (-128) * (-8)
        assert k_max * hi <= INT32_MAX < (k_max + 1) * hi
        assert k_max * lo >= -(2**31)
    assert (MAX_K_W8A8, MAX_K_W4A4) == (131071, 2097151)


@pytest.mark.parametrize("backend", BACKENDS)
def test_w8a8_at_the_k_limit_is_exact(backend):
    # the worst codes at K = 131071: acc = K * 128 * 128 = 2^31 - 2^14, and -K * 128 * 127
    k = MAX_K_W8A8
    xq = torch.full((1, k), -128, dtype=torch.int8, device=DEVICE)
    wq = torch.full((2, k), -128, dtype=torch.int8, device=DEVICE)
    wq[1] = 127
    ones = lambda r: torch.ones(r, device=DEVICE)
    out = qk.w8a8_matmul(xq, ones(1), wq, ones(2), backend=backend)
    exact = torch.tensor([[k * 128 * 128, -k * 128 * 127]], dtype=torch.float64)
    assert torch.equal(out.cpu(), exact.float())  # the same fp32 rounding of the exact acc


needs_cuda_triton = pytest.mark.skipif(
    not (qk.HAS_TRITON and torch.cuda.is_available()), reason="K = 2^21 is slow in the interpreter"
)


@pytest.mark.parametrize("backend", ["torch", "cpu", pytest.param("triton", marks=needs_cuda_triton)])
def test_w4a4_at_the_k_limit_is_exact(backend):
    k = MAX_K_W4A4 - 1  # 2097150, the largest even K
    xq = torch.full((1, k), -128, dtype=torch.int8, device=DEVICE)
    wq = torch.full((2, k), -8, dtype=torch.int8, device=DEVICE)
    wq[1] = 7
    ones = lambda r: torch.ones(r, device=DEVICE)
    out = qk.w4a4_matmul(xq, ones(1), qk.pack_int4(wq), ones(2), backend=backend)
    exact = torch.tensor([[k * 128 * 8, -k * 128 * 7]], dtype=torch.float64)
    assert torch.equal(out.cpu(), exact.float())


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_above_the_limit_raises(backend):
    # the check is on the shapes, before any launch: M = N = 1 keeps the tensors small
    one = torch.ones(1, device=DEVICE)
    codes = lambda k, dtype=torch.int8: torch.zeros(1, k, dtype=dtype, device=DEVICE)
    k = MAX_K_W8A8 + 1
    with pytest.raises(ValueError, match=r"K = 131072 is above the W8A8 limit K <= 131071.*Split"):
        qk.w8a8_matmul(codes(k), one, codes(k), one, backend=backend)
    k = MAX_K_W4A4 + 1  # 2097152, the first even K above the limit
    with pytest.raises(ValueError, match=r"K = 2097152 is above the W4A4 limit K <= 2097151"):
        qk.w4a4_matmul(codes(k), one, codes(k // 2, torch.uint8), one, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_w4a4_linear_end_to_end(backend):
    # quantize -> pack -> GEMM approximates x @ W.T + b (with the Hadamard rotation)
    m, n, k = 20, 24, 128
    x = torch.randn(m, k, device=DEVICE)
    w = torch.randn(n, k, device=DEVICE) / k**0.5
    b = torch.randn(n, device=DEVICE)
    wq, ws = qk.quantize_per_token(w, 4, hadamard=True, backend=backend)
    xq, xs = qk.quantize_per_token(x, 4, hadamard=True, backend=backend)
    y = qk.w4a4_matmul(xq, xs, qk.pack_int4(wq, backend=backend), ws, b, backend=backend)
    ref = x @ w.T + b
    rel = float((y - ref).norm() / ref.norm())
    assert rel < 0.25


def test_errors():
    xq = torch.zeros(4, 8, dtype=torch.int8)
    wp = torch.zeros(3, 4, dtype=torch.uint8)
    xs, ws = torch.ones(4), torch.ones(3)
    with pytest.raises(ValueError, match="K must be even"):
        qk.w4a4_matmul(torch.zeros(4, 7, dtype=torch.int8), xs, wp, ws)
    with pytest.raises(ValueError, match="K mismatch"):
        qk.w4a4_matmul(xq, xs, torch.zeros(3, 5, dtype=torch.uint8), ws)
    with pytest.raises(ValueError, match="K mismatch"):
        qk.w8a8_matmul(xq, xs, torch.zeros(3, 6, dtype=torch.int8), ws)
    with pytest.raises(TypeError, match="w_packed must have dtype uint8"):
        qk.w4a4_matmul(xq, xs, torch.zeros(3, 4, dtype=torch.int8), ws)
    with pytest.raises(TypeError, match="xq must have dtype int8"):
        qk.w8a8_matmul(xq.float(), xs, torch.zeros(3, 8, dtype=torch.int8), ws)
    with pytest.raises(TypeError, match="x_scale"):
        qk.w4a4_matmul(xq, xs.half(), wp, ws)
    with pytest.raises(ValueError, match="x_scale must have shape"):
        qk.w4a4_matmul(xq, torch.ones(5), wp, ws)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        qk.w4a4_matmul(xq, xs, wp, torch.ones(4))
    with pytest.raises(ValueError, match="bias must have shape"):
        qk.w4a4_matmul(xq, xs, wp, ws, bias=torch.ones(4))
    with pytest.raises(TypeError, match="out_dtype"):
        qk.w4a4_matmul(xq, xs, wp, ws, out_dtype=torch.int32)
    with pytest.raises(ValueError, match="contiguous"):
        qk.w8a8_matmul(xq, xs, torch.zeros(8, 3, dtype=torch.int8).t(), ws)


# odd and tiny shapes included: M = 1, K not a multiple of 8, N odd (oneDNN's tiles do not divide them)
@pytest.mark.parametrize(("m", "k", "n"), [(1, 64, 64), (3, 18, 5), (17, 100, 33), (40, 256, 96), (0, 16, 8)])
@pytest.mark.parametrize("w_bits", [4, 8])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_cpu_backend_is_the_reference_bit_for_bit(m, k, n, w_bits, out_dtype):
    """torch._int_mm accumulates exactly in int32 and the epilogue is the reference's own, so the
    CPU backend (what "auto" picks on CPU tensors) must equal the reference exactly."""
    g = torch.Generator().manual_seed(m * 1000 + k + n)
    lo, hi = (-8, 8) if w_bits == 4 else (-128, 128)
    xq = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    wq = torch.randint(lo, hi, (n, k), generator=g, dtype=torch.int8)
    xs, ws = torch.rand(m, generator=g) + 0.1, torch.rand(n, generator=g) + 0.1
    bias = torch.randn(n, generator=g)
    ref = run(w_bits, xq, xs, wq, ws, bias, out_dtype, "torch")
    for backend in ("cpu", "auto"):
        assert torch.equal(run(w_bits, xq, xs, wq, ws, bias, out_dtype, backend), ref), backend


def test_cpu_backend_refuses_gpu_tensors_and_int_mm_falls_back(monkeypatch):
    def no_int_mm(*args):
        raise RuntimeError("_int_mm is not implemented for CPU here")

    xq = torch.randint(-128, 128, (5, 32), dtype=torch.int8)
    wq = torch.randint(-128, 128, (7, 32), dtype=torch.int8)
    expected = qk.int_matmul_reference(xq, wq)
    assert torch.equal(qk.int_matmul_cpu(xq, wq), expected)
    monkeypatch.setattr(torch, "_int_mm", no_int_mm)  # an older torch without the CPU kernel
    assert torch.equal(qk.int_matmul_cpu(xq, wq), expected)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend='cpu' runs CPU tensors"):
            qk.w8a8_matmul(xq.cuda(), torch.ones(5).cuda(), wq.cuda(), torch.ones(7).cuda(),
                           backend="cpu")


def _avx2_int_mm(x, w_t):
    """oneDNN's int8 GEMM without VNNI (AVX2's vpmaddubsw): activations shifted to u8, adjacent
    pairs of u8 x s8 products summed in int16 with saturation, the shift compensated at the end."""
    m, k = x.shape
    u = x.to(torch.int32) + 128
    w = w_t.to(torch.int32)
    pairs = (u[:, :, None] * w[None]).view(m, k // 2, 2, -1).sum(2).clamp(-(2**15), 2**15 - 1)
    return (pairs.sum(1) - 128 * w.sum(0)).to(torch.int32)


@pytest.mark.parametrize("w_bits", [8, 4])
def test_int_mm_is_used_only_where_it_sums_exactly(monkeypatch, w_bits):
    """Without VNNI/AMX, int16 pair sums saturate on full-range int8 weights but never on codes
    within +-8: the probe tells the two apart, W4 keeps one int8 GEMM, W8 splits its weights into
    two +-8 halves, and both stay exact."""
    from qvggt_kernels import gemm

    monkeypatch.setattr(torch, "_int_mm", _avx2_int_mm)
    gemm.int_mm_is_exact_here.cache_clear()
    try:
        assert not gemm.int_mm_is_exact_here(128)
        assert gemm.int_mm_is_exact_here(8)
        g = torch.Generator().manual_seed(w_bits)
        xq = torch.randint(-128, 128, (6, 64), generator=g, dtype=torch.int8)
        xq[0] = 127
        xq[1] = -128
        lo, hi = (-128, 128) if w_bits == 8 else (-8, 8)
        wq = torch.randint(lo, hi, (5, 64), generator=g, dtype=torch.int8)
        wq[0], wq[1] = hi - 1, lo
        expected = qk.int_matmul_reference(xq, wq)
        xs, ws = torch.rand(6, generator=g) + 0.1, torch.rand(5, generator=g) + 0.1
        packed = qk.pack_int4(wq) if w_bits == 4 else None
        expected_w4a4 = qk.w4a4_matmul_reference(xq, xs, packed, ws) if w_bits == 4 else None
        assert not torch.equal(_avx2_int_mm(xq, wq.t()), expected) or w_bits == 4  # it does saturate

        def no_reference(*args):
            raise AssertionError("the int8 GEMM route should have been taken")

        monkeypatch.setattr(gemm, "int_matmul_reference", no_reference)
        assert torch.equal(gemm.int_matmul_cpu(xq, wq, max_abs_weight=-lo), expected)
        if w_bits == 4:
            assert torch.equal(qk.w4a4_matmul(xq, xs, packed, ws, backend="cpu"), expected_w4a4)
    finally:
        gemm.int_mm_is_exact_here.cache_clear()
