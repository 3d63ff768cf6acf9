"""deploy.py: QuantLinear -> Int4Linear / Int8Linear is exact; files round-trip; the LayerNorm
fold; memory counts; the end-to-end benchmark's smoke mode."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import qvggt_kernels as qk
import torch
from torch import nn

from qvggt_lib.course.memory import memory_table, model_memory_report
from qvggt_lib.deploy import (
    Int4Linear,
    Int8Linear,
    bench,
    deploy,
    deployed_layers,
    fold_smoothing_into_norms,
    from_quant_linear,
    linear_storage_bytes,
    load_deployed,
    save_deployed,
)
from qvggt_lib.model import build_vggt
from qvggt_lib.quant import (
    QuantLinear,
    QuantSpec,
    QuantVGGTConfig,
    RandomHadamard,
    SmoothQuantConfig,
    quantize,
    quantize_tensor,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"depth": 2, "intermediate_layer_idx": (0, 0, 1, 1)}
OUTPUTS = ("depth", "pose_enc", "world_points")
# Share of the quantization error (simulated vs float) that rounding-tie flips between the
# deployed and the simulated chain may add. Measured: 0.11 for the pose of the random-weight
# W8A8 SmoothQuant model on an Intel Xeon with AVX-512 + AMX (216 flipped codes), under 0.05
# on the AMD EPYCs (AVX-512 and AVX2); a wrong scale or divisor moves it by about 1.
FLIP_SHARE = 0.25
# Share of the quantization error (simulated vs float) that rounding-tie flips between the
# deployed and the simulated chain may add. Measured: 0.11 for the pose of the random-weight
# W8A8 SmoothQuant model on an Intel Xeon with AVX-512 + AMX (216 flipped codes), under 0.05
# on the AMD EPYCs (AVX-512 and AVX2); a wrong scale or divisor moves it by about 1.


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def float_model():
    return build_vggt("tiny", **TINY).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial s, LWC and LAC values (as after calibration), then refresh the weights."""
    gen = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if not isinstance(layer, QuantLinear):
            continue
        if layer.smooth is not None:
            layer.smooth.mul_(torch.rand(layer.in_features, generator=gen) + 0.5)
        if layer.act_quantizer is not None and layer.act_quantizer.clip is not None:
            layer.act_quantizer.clip.logit.fill_(float(torch.rand(1, generator=gen)) * 3)
        if layer.weight_quantizer is not None and layer.weight_quantizer.clip is not None:
            logit = layer.weight_quantizer.clip.logit
            logit.copy_(torch.rand(logit.shape, generator=gen) * 3 + 1)
        layer.refresh()
    return model


def quantized(float_model, images, config):
    return perturb(quantize(float_model, config, calibration=[images], progress=False))


@pytest.fixture(scope="module", params=["w4a4", "w8a8"])
def dsfq(request, float_model, images):
    """(simulated, deployed) DSFQ models: rotation + smoothing + LWC + LAC, no calibration run."""
    sim = quantized(float_model, images, QuantVGGTConfig(bits=request.param, calibrate=False))
    return sim, deploy(sim, backend="torch")


def run_with_inputs(model, images, cls):
    """Outputs of model(images) and {layer name: its input} for every module of type cls."""
    inputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, cls):
            hook = lambda mod, args, out, name=name: inputs.__setitem__(name, args[0].detach())
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            preds = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return preds, inputs


def simulated_codes(layer: QuantLinear, x):
    """The simulation's activation codes and scales: the quantizer's own functions."""
    t = layer.transform_input(x)
    scale, zero_point = layer.act_quantizer.qparams(t)
    codes = quantize_tensor(t, scale, zero_point, layer.act_quantizer.spec)
    return codes.reshape(-1, layer.in_features).to(torch.int8), scale.reshape(-1)


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ----------------------------------------------------------------------------- exactness


def test_every_layer_is_exact_given_the_same_input(dsfq, images):
    """Same input -> identical activation codes and scales, weight codes * s_w identical to the
    simulated weight; outputs then differ only by the GEMM's fp32 summation order."""
    sim, dep = dsfq
    _, inputs = run_with_inputs(sim, images, QuantLinear)
    layers = deployed_layers(dep)
    assert set(layers) == set(inputs) and len(layers) == 16
    worst = 0.0
    for name, x in inputs.items():
        s_layer, d_layer = sim.get_submodule(name), layers[name]
        assert isinstance(
            d_layer, Int4Linear if s_layer.weight_quantizer.spec.bits == 4 else Int8Linear
        )
        assert d_layer.hadamard and d_layer.act_divisor is not None and d_layer.act_clip < 1
        # signs first: v is the kernel's pre-scale, the divisor is s alone (no s * v folding)
        assert torch.equal(d_layer.act_signs, s_layer.rotation.signs), name
        assert torch.equal(d_layer.act_divisor, s_layer.smooth.detach().float()), name
        codes, scale = simulated_codes(s_layer, x)
        q, s = d_layer.quantize_input(x)
        assert torch.equal(q, codes) and torch.equal(s, scale), name
        assert torch.equal(d_layer.dequantized_weight(), s_layer.quantized_weight), name
        with torch.no_grad():
            worst = max(worst, rel_err(d_layer(x), s_layer(x)))
    # measured ~1e-7: fp32 rounding of the simulation's BLAS GEMM (K <= 512) against the exact
    # int32 accumulation; its size depends on the BLAS blocking, so 1e-5 leaves room for any CPU
    assert worst < 1e-5, worst


def test_deployed_model_matches_simulation(dsfq, float_model, images):
    """End to end on the tiny model (CPU, torch backend). Each model runs its own chain, so a
    layer's input differs by fp32 rounding and a code sitting on a .5 tie can flip by one step.
    With no flip the outputs agree to fp32 rounding (measured <= ~1e-6); how many codes flip
    depends on the BLAS code path, and each flip moves an activation by a whole step, so with
    flips the bound grows to FLIP_SHARE of the quantization error itself. Flips compound along
    the chain (a flipped activation changes every later layer's input), so later layers can
    differ by more than one step; what stays small is how many codes differ."""
    sim, dep = dsfq
    ref, sim_inputs = run_with_inputs(sim, images, QuantLinear)
    out, dep_inputs = run_with_inputs(dep, images, (Int4Linear, Int8Linear))
    with torch.no_grad():
        fp = float_model(images)
    flips = sum(int((deployed_layers(dep)[name].quantize_input(x)[0]
                     != simulated_codes(sim.get_submodule(name), sim_inputs[name])[0]).sum())
                for name, x in dep_inputs.items())
    for key in OUTPUTS:
        err = rel_err(out[key], ref[key])
        print(f"{key}: max abs {float((out[key] - ref[key]).abs().max()):.3g}, rel {err:.3g}, {flips} flips")
        bound = 1e-5 if flips == 0 else max(1e-5, FLIP_SHARE * rel_err(ref[key], fp[key]))
        assert err < bound, (key, err, flips)
    flips = total = 0
    for name, x in dep_inputs.items():
        codes, _ = simulated_codes(sim.get_submodule(name), sim_inputs[name])
        q, _ = deployed_layers(dep)[name].quantize_input(x)
        flips, total = flips + int((q != codes).sum()), total + q.numel()
    print(f"activation codes that differ between the two chains: {flips} / {total}")
    # measured: W8A8 3 of 494,592 on the AMD EPYCs, 1,622 (3.3e-3) on an Intel Xeon with AMX
    assert flips / total < 1e-2


def test_cpu_backend_agrees_with_the_reference_backend(dsfq, float_model, images):
    """backend="cpu" (what "auto" picks on CPU): int8 GEMMs by torch._int_mm (exact int32 sums,
    the reference epilogue) and the FWHT as two small matmuls (fp32 rounding apart). Per layer on
    the same input: codes within one step, outputs within 1e-5; whole model: as close to the
    reference backend as the deployed chain is to the simulation (FLIP_SHARE)."""
    _, dep = dsfq
    fast = copy.deepcopy(dep)
    for layer in deployed_layers(fast).values():
        layer.backend = "cpu"
    _, inputs = run_with_inputs(dep, images, (Int4Linear, Int8Linear))
    for name, x in inputs.items():
        ref_layer, fast_layer = deployed_layers(dep)[name], deployed_layers(fast)[name]
        q_ref, _ = ref_layer.quantize_input(x)
        q, _ = fast_layer.quantize_input(x)
        assert int((q.int() - q_ref.int()).abs().max()) <= 1, name
        with torch.no_grad():
            assert rel_err(fast_layer(x), ref_layer(x)) < 1e-5 or not torch.equal(q, q_ref), name
    with torch.no_grad():
        ref, out, fp = dep(images), fast(images), float_model(images)
    for key in OUTPUTS:
        assert rel_err(out[key], ref[key]) <= max(1e-5, FLIP_SHARE * rel_err(ref[key], fp[key])), key


def test_deploy_leaves_the_input_model_untouched(float_model, images):
    sim = quantized(float_model, images, QuantVGGTConfig(bits="w4a4", calibrate=False))
    before = {k: v.clone() for k, v in sim.state_dict().items()}
    dep = deploy(sim, backend="torch", fold_smoothing=True)
    after = sim.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(sim.aggregator.frame_blocks[0].attn.qkv, QuantLinear)
    assert isinstance(dep.aggregator.frame_blocks[0].attn.qkv, Int4Linear)
    assert not any(isinstance(m, QuantLinear) for m in dep.modules())
    with pytest.raises(ValueError, match="no QuantLinear"):
        deploy(float_model)


def test_save_and_load_round_trip(dsfq, images, tmp_path):
    _, dep = dsfq
    path = save_deployed(dep, tmp_path / "deployed.safetensors")
    loaded = load_deployed(path, backend="torch")
    assert loaded.config == dep.config
    assert {n: m.layer_config() for n, m in deployed_layers(loaded).items()} == {
        n: m.layer_config() for n, m in deployed_layers(dep).items()
    }
    a, b = dep.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a
    )
    with torch.no_grad():
        x, y = dep(images), loaded(images)
    assert all(torch.equal(x[k], y[k]) for k in OUTPUTS)
    assert loaded.quant_config_dict["type"] == "QuantVGGTConfig"


# ----------------------------------------------------------------------------- LayerNorm fold


def _norm_of(model, name):
    block = model.get_submodule(name.rsplit(".", 2)[0])
    return block.norm1 if name.endswith("attn.qkv") else block.norm2


def test_smoothquant_smoothing_folds_into_layernorm(float_model, images):
    """SmoothQuant (no rotation): s of qkv / fc1 moves into norm1 / norm2 (gamma / s, beta / s).
    Proof of equivalence: the folded LayerNorm's output is the old one divided by s to fp32
    rounding, and the deployed model matches the simulation."""
    sim = quantized(float_model, images, SmoothQuantConfig(bits="w8a8"))
    exact = deploy(sim, backend="torch")
    folded = deploy(sim, backend="torch", fold_smoothing=True)
    _, sim_inputs = run_with_inputs(sim, images, QuantLinear)
    ln_fed = [n for n in sim_inputs if n.endswith(("attn.qkv", "mlp.fc1"))]
    assert len(ln_fed) == 8
    for name in ln_fed:
        layer, norm_sim, norm_fold = (
            sim.get_submodule(name),
            _norm_of(sim, name),
            _norm_of(folded, name),
        )
        assert deployed_layers(folded)[name].act_divisor is None
        assert deployed_layers(exact)[name].act_divisor is not None
        assert deployed_layers(exact)[name].act_signs is None  # no rotation, no signs
        x = torch.randn(5, layer.in_features) * 3 + 1
        with torch.no_grad():
            torch.testing.assert_close(
                norm_fold(x), norm_sim(x) / layer.smooth, rtol=2e-6, atol=1e-7
            )
    for name in set(sim_inputs) - set(ln_fed):  # proj / fc2: not LayerNorm-fed, stays online
        assert name.endswith(("attn.proj", "mlp.fc2"))
        assert deployed_layers(folded)[name].act_divisor is None  # SmoothQuant default: no s there
    ref, sim_inputs = run_with_inputs(sim, images, QuantLinear)
    out_exact, exact_inputs = run_with_inputs(exact, images, (Int4Linear, Int8Linear))
    with torch.no_grad():
        out_folded, fp = folded(images), float_model(images)
    flips = sum(int((deployed_layers(exact)[name].quantize_input(x)[0]
                     != simulated_codes(sim.get_submodule(name), sim_inputs[name])[0]).sum())
                for name, x in exact_inputs.items())
    for key in OUTPUTS:  # as test_deployed_model_matches_simulation: exact unless codes flip at ties
        quant_error = rel_err(ref[key], fp[key])
        bound = 1e-5 if flips == 0 else max(1e-5, FLIP_SHARE * quant_error)
        assert rel_err(out_exact[key], ref[key]) < bound, (key, flips)
        assert rel_err(out_folded[key], ref[key]) < max(1e-4, FLIP_SHARE * quant_error), key


def test_fold_follows_the_order_of_rotation_and_smoothing(float_model, images):
    """smooth_then_rotate: x / s comes before R, so the fold is valid for qkv / fc1; proj / fc2
    keep an (unfused) input division. DSFQ (rotate_then_smooth): nothing can fold."""
    dsfq = quantized(float_model, images, QuantVGGTConfig(bits="w4a4", calibrate=False))
    assert fold_smoothing_into_norms(copy.deepcopy(dsfq)) == set()
    sim = quantized(
        float_model,
        images,
        QuantVGGTConfig.ablation("smooth_then_rotate", bits="w4a4", calibrate=False),
    )
    exact = deploy(sim, backend="torch")
    folded = deploy(sim, backend="torch", fold_smoothing=True)
    ref, sim_inputs = run_with_inputs(sim, images, QuantLinear)
    for name, x in sim_inputs.items():  # unfolded: bit-exact codes through the input division
        layer = deployed_layers(exact)[name]
        assert layer.input_divisor is not None and layer.hadamard
        assert layer.act_signs is not None and layer.act_divisor is None  # fwht((x / s) * v)
        codes, scale = simulated_codes(sim.get_submodule(name), x)
        q, s = layer.quantize_input(x)
        assert torch.equal(q, codes) and torch.equal(s, scale)
        fed = name.endswith(("attn.qkv", "mlp.fc1"))
        assert (deployed_layers(folded)[name].input_divisor is None) == fed
    with torch.no_grad():
        out = folded(images)
    for key in OUTPUTS:
        assert rel_err(out[key], ref[key]) < 1e-4, key


# ----------------------------------------------------------------------------- single layers


def dsfq_layer(k=64, n=32, wbits=4, abits=4, seed=0, rotate=True):
    torch.manual_seed(seed)
    layer = QuantLinear.from_float(
        nn.Linear(k, n),
        QuantSpec(wbits, "per_channel"),
        QuantSpec(abits, "per_token"),
        rotation=RandomHadamard(k, seed) if rotate else None,
        smooth=torch.rand(k) + 0.5,
        learnable_weight_clip=True,
        learnable_act_clip=True,
    ).eval()
    return perturb(layer, seed)


def test_w4a8_uses_the_int4_gemm_with_8_bit_codes():
    layer = dsfq_layer(wbits=4, abits=8)
    dep = from_quant_linear(layer, backend="torch")
    assert isinstance(dep, Int4Linear) and dep.act_bits == 8
    assert dep.weight.dtype == torch.uint8 and dep.weight.shape == (32, 32)
    x = torch.randn(3, 7, 64) * 2
    q, _ = dep.quantize_input(x)
    assert int(q.abs().max()) > 7  # 8-bit codes go through the int4-weight GEMM
    assert torch.equal(q, simulated_codes(layer, x)[0])
    with torch.no_grad():
        assert rel_err(dep(x), layer(x)) < 1e-6
    assert isinstance(from_quant_linear(dsfq_layer(wbits=6, abits=6)), Int8Linear)


def test_signs_are_the_kernels_pre_scale():
    """The deployed activation side is quantize_per_token(x, pre_scale=v, hadamard, smooth=s):
    fwht(x * v) / s, the simulation's (x R) / s with R = diag(v) H. Folding v into the
    divisor (fwht(x) / (s * v), the old signs-after order) gives other codes."""
    layer = dsfq_layer(k=128, seed=3)
    dep = from_quant_linear(layer, backend="torch")
    v, s = layer.rotation.signs, layer.smooth.detach().float()
    assert torch.equal(dep.act_signs, v) and torch.equal(dep.act_divisor, s)
    x = torch.randn(40, 128) + 1.5  # a common offset, as a post-GELU input
    q, scale = dep.quantize_input(x)
    q_k, scale_k = qk.quantize_per_token(
        x, 4, hadamard=True, smooth=s, clip=dep.act_clip, pre_scale=v, backend="torch"
    )
    assert torch.equal(q, q_k) and torch.equal(scale, scale_k)
    assert torch.equal(q, simulated_codes(layer, x)[0])
    q_old, _ = qk.quantize_per_token(x, 4, hadamard=True, smooth=s * v, clip=dep.act_clip)
    assert not torch.equal(q_old, q)
    assert dep.layer_config()["act_signs"] is True


@pytest.mark.skipif(not qk.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("rotate", [True, False])
def test_int4linear_through_the_triton_interpreter(rotate):
    """backend="triton" on CPU = Triton's interpreter: the same kernels a GPU runs."""
    layer = dsfq_layer(rotate=rotate)
    torch_layer = from_quant_linear(layer, backend="torch")
    triton_layer = from_quant_linear(layer, backend="triton")
    x = torch.randn(2, 9, 64) * 2
    with torch.no_grad():
        y_torch, y_triton = torch_layer(x), triton_layer(x)
    q_torch, s_torch = torch_layer.quantize_input(x)
    q_triton, s_triton = triton_layer.quantize_input(x)
    if rotate:  # the kernel's FWHT sums in another order than the torch butterflies
        torch.testing.assert_close(s_triton, s_torch, rtol=1e-5, atol=0)
        assert int((q_triton.int() - q_torch.int()).abs().max()) <= 1
        if torch.equal(q_triton, q_torch):
            torch.testing.assert_close(y_triton, y_torch, rtol=1e-5, atol=1e-6)
        assert rel_err(y_triton, y_torch) < 0.05
    else:  # no FWHT: kernel and reference are bit-exact, GEMM included
        assert torch.equal(q_triton, q_torch) and torch.equal(s_triton, s_torch)
        assert torch.equal(y_triton, y_torch)


def test_bf16_cast_keeps_scales_in_fp32():
    dep = from_quant_linear(dsfq_layer(), backend="torch")
    ref = dep.weight_scale.clone()
    dep = dep.to(torch.bfloat16)
    assert dep.weight_scale.dtype == torch.float32 and torch.equal(dep.weight_scale, ref)
    assert dep.act_divisor.dtype == torch.float32 and dep.weight.dtype == torch.uint8
    assert dep.act_signs.dtype == torch.float32
    y = dep(torch.randn(4, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (4, 32)


def test_unsupported_layers_raise():
    linear = nn.Linear(64, 32)
    grouped = QuantLinear.from_float(
        linear, QuantSpec(4, "per_group", group_size=16), QuantSpec(4, "per_token")
    ).eval()
    with pytest.raises(NotImplementedError, match="per-output-channel"):
        from_quant_linear(grouped)
    weight_only = QuantLinear.from_float(linear, QuantSpec(4, "per_channel"), None).eval()
    with pytest.raises(ValueError, match="activations"):
        from_quant_linear(weight_only)
    tampered = dsfq_layer()
    with torch.no_grad():
        tampered.quantized_weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="grid"):
        from_quant_linear(tampered)


# ----------------------------------------------------------------------------- memory


def test_memory_counts_equal_the_deployed_state(dsfq, float_model):
    _, dep = dsfq
    scheme = "w4a4" if isinstance(next(iter(deployed_layers(dep).values())), Int4Linear) else "w8a8"
    report = model_memory_report(float_model)
    layer_bytes = sum(
        t.numel() * t.element_size()
        for m in deployed_layers(dep).values()
        for t in m.state_dict().values()
    )
    assert report.layers[scheme] == layer_bytes
    rest = sum(
        t.numel()
        for k, t in dep.state_dict().items()
        if not k.rsplit(".", 1)[0] in deployed_layers(dep)
    )
    assert report.total_params - report.quantized_params == rest
    assert report.model[scheme] == layer_bytes + 2 * rest
    assert report.model["fp32"] == 4 * sum(t.numel() for t in float_model.state_dict().values())


def test_memory_report_for_vggt_1b_on_meta():
    default = model_memory_report("vggt-1b")
    everything = model_memory_report("vggt-1b", "everything")
    assert default.num_layers == 192 and everything.num_layers == 192 + 24 * 4 + 4 * 4
    assert default.quantized_params == 604_422_144  # the 604.0M of the method notes
    assert default.total_params == 1_190_596_120  # without the track head
    assert (
        default.layers["w4a4"]
        == sum(
            linear_storage_bytes(k, n, 4)
            for k, n in [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]
        )
        * 48
    )
    # the whole-model gain is capped by the unquantized half of the parameters
    assert 1.55 < default.ratio_vs_fp16("w4a4") < 1.65
    assert 3.0 < everything.ratio_vs_fp16("w4a4") < 3.5
    assert 3.9 < default.ratio_vs_fp16("w4a4", "layers") < 4.0
    table = memory_table(names=("tiny",))
    assert table.startswith("| model | scope |") and "whole model" in table


# ----------------------------------------------------------------------------- benchmark script


def test_bench_e2e_smoke(tmp_path):
    results = bench.run(bench.BenchSettings.smoke(), tmp_path / "bench.json")
    rows = results["rows"]
    assert {(r["scheme"], r["frames"]) for r in rows} == {
        (s, f) for s in ("fp32", "bf16", "w8a8", "w4a4") for f in (1, 2)
    }
    assert all(r["ms"] > 0 and r["model"] == "tiny" for r in rows)
    weights = {r["scheme"]: r["weight_bytes"] for r in rows}
    # on CPU everything around the int layers stays fp32, so only the block linears shrink
    assert weights["fp32"] > weights["bf16"] and weights["fp32"] > weights["w8a8"] > weights["w4a4"]
    assert all(r["peak_bytes"] > r["weight_bytes"] for r in rows)  # weights + one forward's tensors
    assert json.loads((tmp_path / "bench.json").read_text())["rows"] == rows
    assert "| scheme | frames |" in bench.table(results)
    assert results["threads"] == torch.get_num_threads() and results["isa"]


def test_bench_shapes_and_block_breakdown(tmp_path):
    settings = bench.BenchSettings(frames=[2], warmup=0, iters=1, config="tiny", depth=2, device="cpu",
                                   schemes=["fp32", "w8a8", "w4a4"])
    results = bench.run(settings, shapes=True, breakdown=True)
    assert {(r["K"], r["N"]) for r in results["shapes"]} == {(128, 384), (128, 128), (128, 512), (512, 128)}
    assert all(r["w8a8_ms"] > 0 and r["w8a8_gemm_ms"] > 0 and r["fp32_ms"] > 0 for r in results["shapes"])
    assert [b["scheme"] for b in results["breakdown"]] == ["w8a8", "w4a4"]
    for b in results["breakdown"]:
        parts = b["parts_ms"]
        assert set(parts) == {"gemm", "activation quant.", "hadamard", "attention", "rest"}
        assert parts["gemm"] > 0 and parts["hadamard"] > 0 and parts["attention"] > 0
    assert "| K -> N |" in bench.shape_table(results) and "| scheme | tokens |" in bench.breakdown_table(results)


def test_qvggt_bench_command_prints_and_writes_the_tables(tmp_path, capsys):
    from qvggt_lib.cli import main

    path = tmp_path / "bench.json"
    assert main(["bench", "--model", "tiny", "--depth", "1", "--frames", "1", "--iters", "1",
                 "--warmup", "0", "--threads", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| scheme | frames |" in out and "| K -> N |" in out and "one frame block" in out
    rows = json.loads(path.read_text())["rows"]
    assert {r["scheme"] for r in rows} == {"fp32", "bf16", "w8a8", "w4a8", "w4a4"}
    assert all({"scheme", "model", "frames", "ms", "peak_bytes"} <= set(r) for r in rows)
