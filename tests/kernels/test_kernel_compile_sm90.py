"""The kernels compile for Hopper (sm_90) on a CPU-only machine.

The interpreter checks the kernels' semantics, not whether Triton can lower them to a GPU.
Triton ships ``ptxas``, so we can compile for ``GPUTarget("cuda", 90, 32)`` without a GPU
and look at the PTX: the GEMM must use int8 ``wgmma`` (``s32.s8.s8``), the FWHT tensor
cores, and the quantizer IEEE division (``div.rn``). Skipped under ``TRITON_INTERPRET=1``
(Triton cannot compile in interpreter mode); run ``pytest tests/kernels`` without it.
"""

import importlib
import re

import pytest
from qvggt_kernels import _dispatch as qk_dispatch

triton = pytest.importorskip("triton")

if qk_dispatch.interpret_env():
    pytest.skip(
        "TRITON_INTERPRET=1 puts Triton in interpreter mode, which cannot compile; "
        "run without it to check the sm_90 lowering",
        allow_module_level=True,
    )

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - other Triton versions
    pytest.skip("this Triton has no ASTSource/GPUTarget API", allow_module_level=True)


def compile_ptx(fn, signature, constexprs, num_warps=4, num_stages=3):
    """PTX of ``fn`` for sm_90; pointer args are declared 16-byte aligned, as at run time."""
    sig = dict(signature, **{k: "constexpr" for k in constexprs})
    index = {name: i for i, name in enumerate(fn.arg_names)}
    attrs = {
        (index[k],): [["tt.divisibility", 16]] for k, v in signature.items() if v.startswith("*")
    }
    try:
        src = ASTSource(
            fn=fn,
            signature=sig,
            constexprs={(index[k],): v for k, v in constexprs.items()},
            attrs=attrs,
        )
    except TypeError as e:  # pragma: no cover - other Triton versions
        pytest.skip(f"this Triton's ASTSource differs: {e}")
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": False}
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    except RuntimeError as e:  # no ptxas / CUDA backend in this Triton build
        if "ptxas" in str(e).lower():
            pytest.skip(f"cannot compile for sm_90 here: {e}")
        raise
    return kernel.asm["ptx"]


def mod(name):
    return importlib.import_module(f"qvggt_kernels.{name}")


@pytest.mark.parametrize("w_int4", [True, False])
def test_gemm_uses_int8_wgmma(w_int4):
    sig = {
        "x_ptr": "*i8", "xs_ptr": "*fp32", "w_ptr": "*u8" if w_int4 else "*i8", "ws_ptr": "*fp32",
        "bias_ptr": "*bf16", "out_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32",
        "stride_xm": "i32", "stride_wn": "i32", "stride_om": "i32",
    }  # fmt: skip
    meta = {
        "W_INT4": w_int4,
        "HAS_BIAS": True,
        "BLOCK_M": 64,
        "BLOCK_N": 64,
        "BLOCK_K": 128,
        "GROUP_M": 8,
    }
    ptx = compile_ptx(mod("gemm")._qgemm_kernel, sig, meta)
    assert re.search(r"wgmma\.mma_async\S*\.s32\.s8\.s8", ptx)


def test_act_quant_with_hadamard_compiles():
    sig = {
        "x_ptr": "*bf16", "smooth_ptr": "*fp32", "pre_scale_ptr": "*fp32", "q_ptr": "*i8",
        "scale_ptr": "*fp32", "M": "i32", "K": "i32", "norm": "fp32", "clip": "fp32",
    }  # fmt: skip
    meta = {
        "QMAX": 7, "BLOCK_M": 2, "BLOCK_K": 1024, "HADAMARD": True, "HAS_SMOOTH": True,
        "HAS_PRE_SCALE": True, "RADIX": 16, "DOT_PRECISION": "tf32x3",
    }  # fmt: skip
    ptx = compile_ptx(mod("act_quant")._act_quant_kernel, sig, meta, num_stages=1)
    assert "div.rn.f32" in ptx
    assert re.search(r"wgmma\.mma_async\S*\.tf32", ptx)
