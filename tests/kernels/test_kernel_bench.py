"""The benchmark script's --smoke path runs in-process on CPU."""

import json

import pytest
import qvggt_kernels as qk
import torch


@pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
def test_bench_smoke_runs_in_process(tmp_path, capsys, monkeypatch):
    from qvggt_kernels import bench

    # one tiny shape of each kind keeps this quick in the interpreter
    monkeypatch.setattr(bench, "SMOKE_GEMM", [(1, 40, 64, 48)])
    monkeypatch.setattr(bench, "SMOKE_ACT", [(1, 37, 64)])
    path = tmp_path / "bench.json"
    assert bench.main(["--smoke", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| S | M | K | N |" in out and "quant+H GB/s" in out
    results = json.loads(path.read_text())
    assert results["smoke"] is True
    assert [r["exact"] for r in results["gemm"] + results["act_quant"]] == [True, True]
    assert results["gemm"][0]["w4a4_tops"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_bench_without_cuda_exits_cleanly(capsys):
    from qvggt_kernels import bench

    assert bench.main([]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
