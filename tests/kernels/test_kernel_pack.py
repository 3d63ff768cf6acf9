"""pack_int4 / unpack_int4: nibble order, exact round trip, errors."""

import pytest
import qvggt_kernels as qk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

needs_triton = pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@st.composite
def int4_matrices(draw, max_n=9, max_kh=40):
    n = draw(st.integers(1, max_n))
    kh = draw(st.integers(1, max_kh))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (n, 2 * kh), generator=g, dtype=torch.int8)
    if draw(st.booleans()):  # include the extremes in every column
        q[0] = torch.where(torch.arange(2 * kh) % 2 == 0, -8, 7).to(torch.int8)
    return q


def test_nibble_order_documented_example():
    # byte j = (q[2j] & 0xF) | (q[2j+1] << 4), two's complement nibbles
    q = torch.tensor([[1, -1, -8, 7, 0, -2]], dtype=torch.int8)
    packed = qk.pack_int4(q, backend="torch")
    assert packed.dtype == torch.uint8 and packed.shape == (1, 3)
    assert packed.tolist() == [[0xF1, 0x78, 0xE0]]


@settings(max_examples=200, deadline=None)
@given(q=int4_matrices())
def test_round_trip_reference(q):
    packed = qk.pack_int4(q, backend="torch")
    assert packed.shape == (q.shape[0], q.shape[1] // 2)
    assert torch.equal(qk.unpack_int4(packed, backend="torch"), q)


@needs_triton
@settings(max_examples=20, deadline=None)
@given(q=int4_matrices(max_n=20, max_kh=80))
def test_triton_matches_reference(q):
    q = q.to(DEVICE)
    packed = qk.pack_int4(q, backend="triton")
    assert torch.equal(packed, qk.pack_int4_reference(q))
    assert torch.equal(qk.unpack_int4(packed, backend="triton"), q)


@needs_triton
def test_triton_round_trip_all_byte_values():
    # every one of the 256 bytes unpacks and repacks to itself
    packed = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(4, 64).to(DEVICE)
    q = qk.unpack_int4(packed, backend="triton")
    assert int(q.min()) == -8 and int(q.max()) == 7
    assert torch.equal(q, qk.unpack_int4_reference(packed))
    assert torch.equal(qk.pack_int4(q, backend="triton"), packed)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_empty_rows(backend):
    q = torch.zeros(0, 8, dtype=torch.int8)
    assert qk.pack_int4(q, backend=backend).shape == (0, 4)


def test_errors():
    with pytest.raises(ValueError, match="K must be even"):
        qk.pack_int4(torch.zeros(2, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        qk.pack_int4(torch.full((2, 4), 8, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        qk.pack_int4(torch.full((2, 4), -9, dtype=torch.int8))
    with pytest.raises(TypeError, match="int8"):
        qk.pack_int4(torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="2-D"):
        qk.pack_int4(torch.zeros(4, dtype=torch.int8))
    with pytest.raises(ValueError, match="contiguous"):
        qk.pack_int4(torch.zeros(4, 6, dtype=torch.int8).t())
    with pytest.raises(TypeError, match="uint8"):
        qk.unpack_int4(torch.zeros(2, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="backend"):
        qk.pack_int4(torch.zeros(2, 4, dtype=torch.int8), backend="cuda")
