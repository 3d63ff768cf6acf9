"""Facts about the model-level API: quantize, configs, reports, save/load, and the CLI."""

import json

import pytest
import torch

from qvggt_lib.cli import main
from qvggt_lib.model import build_vggt, save_checkpoint
from qvggt_lib.quant.api import quantize
from qvggt_lib.quant.configs import (
    ABLATIONS,
    BITS,
    METHODS,
    GPTQConfig,
    QuantVGGTConfig,
    QuaRotConfig,
    RTNConfig,
    SmoothQuantConfig,
    make_config,
    parse_bits,
)
from qvggt_lib.quant.linear import QuantLinear
from qvggt_lib.quant.serialization import load_any, load_quantized, save_quantized
from qvggt_lib.quant.targets import quantizable_linears

FRAMES, SIZE = 3, 28
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
FAST = {"quantvggt": {"epochs": 1}}  # one epoch is enough to exercise the calibration path


def small_model(outliers: bool = False):
    model = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0).eval()
    if outliers:  # full-strength residual branches: quantization error reaches the outputs
        with torch.no_grad():
            for name, module in model.named_modules():
                if name.endswith(("ls1", "ls2")) and name.startswith("aggregator.frame_blocks"):
                    module.gamma.fill_(1.0)
                if name.endswith(("ls1", "ls2")) and name.startswith("aggregator.global_blocks"):
                    module.gamma.fill_(1.0)
    return model


def scenes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(FRAMES, 3, SIZE, SIZE, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def calib():
    return scenes(2)


@pytest.fixture(scope="module")
def images():
    return scenes(1, seed=7)[0]


def outputs(model, images):
    with torch.no_grad():
        out = model(images)
    return {k: out[k] for k in OUTPUTS}


def relative_error(out, ref):
    return max(((out[k] - ref[k]).norm() / ref[k].norm()).item() for k in ("pose_enc", "depth"))


@pytest.mark.parametrize("order", ["rotate_then_smooth", "smooth_then_rotate"])
def test_rotation_and_smoothing_without_quantization_give_the_float_outputs(model, calib, images,
                                                                            order):
    config = QuantVGGTConfig(bits="w16a16", order=order, calibrate=False)
    q = quantize(model, config, calibration=calib, progress=False)
    layers = [m for m in q.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 16 and all(m.rotation is not None and m.smooth is not None
                                     for m in layers)
    assert not all(torch.allclose(m.smooth, torch.ones_like(m.smooth)) for m in layers)
    ref, out = outputs(model, images), outputs(q, images)
    for key in OUTPUTS:
        assert torch.allclose(out[key], ref[key], atol=1e-5, rtol=1e-5), key


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_quantizes_every_target_and_leaves_the_input_alone(model, calib, method,
                                                                        bits):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize(model, method, bits=bits, calibration=calib, progress=False,
                 **FAST.get(method, {}))
    targets = quantizable_linears(q)
    assert len(targets) == 16 and all(isinstance(m, QuantLinear) for m in targets.values())
    assert sum(isinstance(m, QuantLinear) for m in q.modules()) == 16
    assert not q.training and q.quant_config.method == method and q.quant_config.bits == bits
    report = q.quant_report
    assert [layer.name for layer in report.layers] == list(targets)
    assert report.layers[0].weight_bits == int(bits[1]) and report.seconds["total"] > 0
    assert all(isinstance(m, torch.nn.Linear) for m in quantizable_linears(model).values())
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training


def test_w8a8_is_close_to_float_and_w4a4_is_further():
    model, calib, images = small_model(outliers=True), scenes(2), scenes(1, seed=7)[0]
    ref = outputs(model, images)
    for method in ("rtn", "quarot", "quantvggt"):
        errors = {bits: relative_error(outputs(quantize(
            model, method, bits=bits, calibration=calib, progress=False,
            **FAST.get(method, {})), images), ref) for bits in ("w8a8", "w4a4")}
        assert errors["w8a8"] < 0.05 and errors["w8a8"] < errors["w4a4"], (method, errors)


def test_layer_flags_and_seeds_follow_the_config(model, calib):
    q = quantize(model, "quarot", bits="w4a4", calibration=calib, seed=3, progress=False)
    layers = q.quant_report.layers
    assert all(layer.rotation and not layer.smooth for layer in layers)
    assert len({layer.hadamard_seed for layer in layers}) == len(layers)
    again = quantize(model, "quarot", bits="w4a4", calibration=calib, seed=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(q.state_dict().values(),
                                                 again.state_dict().values()))
    other = quantize(model, "quarot", bits="w4a4", calibration=calib, seed=4, progress=False)
    qkv = "aggregator.frame_blocks.0.attn.qkv"
    assert not torch.equal(q.get_submodule(qkv).rotation.signs,
                           other.get_submodule(qkv).rotation.signs)
    sq = quantize(model, SmoothQuantConfig(bits="w8a8"), calibration=calib, progress=False)
    assert [layer.smooth for layer in sq.quant_report.layers[:4]] == [True, False, True, False]
    sq_all = quantize(model, "smoothquant", bits="w8a8", calibration=calib, smooth_layers="all",
                      progress=False)
    assert all(layer.smooth for layer in sq_all.quant_report.layers)


def test_ablation_variants():
    flags = {name: (c.rotate, c.smooth, c.order) for name in ABLATIONS
             for c in [QuantVGGTConfig.ablation(name, bits="w4a4")]}
    assert flags["base"][:2] == (False, False) and flags["rotation"][:2] == (True, False)
    assert flags["smoothing"][:2] == (False, True)
    assert flags["smooth_then_rotate"] == (True, True, "smooth_then_rotate")
    assert flags["dsfq"] == (True, True, "rotate_then_smooth")


def test_options_scopes_and_group_size(model, calib):
    assert make_config("gptq", "w4a8", percdamp=0.1) == GPTQConfig(bits="w4a8", percdamp=0.1)
    assert make_config(QuaRotConfig(), bits="w8a8").bits == "w8a8"
    q = quantize(model, RTNConfig(bits="w4a4", weight_group_size=32,
                                  scopes=("patch_embed", "frame_blocks", "camera_head")))
    targets = quantizable_linears(q, ("patch_embed", "frame_blocks", "camera_head"))
    assert len(targets) == (3 + 2 + 2) * 4 and all(isinstance(m, QuantLinear)
                                                   for m in targets.values())
    assert isinstance(q.aggregator.global_blocks[0].attn.qkv, torch.nn.Linear)
    assert q.camera_head.trunk[0].attn.qkv.weight_quantizer.spec.group_size == 32
    assert parse_bits("w4a8") == (4, 8) and parse_bits("w16a16") == (16, 16)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, c: quantize(m, "awq", bits="w4a4"), "unknown method 'awq'"),
        (lambda m, c: quantize(m, "rtn", bits="int4"), "unknown bits 'int4'"),
        (lambda m, c: quantize(m, "rtn", bits="w9a9"), "unknown bits 'w9a9'"),
        (lambda m, c: quantize(m, "rtn", weight_group_size=48), "does not divide K=128"),
        (lambda m, c: quantize(m, "rtn", weight_group_size=0), "weight_group_size"),
        (lambda m, c: quantize(m, "rtn", scopes=("dpt_head",)), "unknown scope"),
        (lambda m, c: quantize(m, "quantvggt"), "needs calibration data"),
        (lambda m, c: quantize(m, "gptq", calibration=[]), "calibration is empty"),
        (lambda m, c: quantize(m, "smoothquant", calibration=[torch.rand(3, 28, 28)]),
         r"must be one scene \[S, 3, H, W\]"),
        (lambda m, c: quantize(m, "smoothquant", calibration=[255 * torch.rand(2, 3, 28, 28)]),
         r"\[0, 1\]"),
        (lambda m, c: quantize(m, "rtn", alpha=0.5), "unknown option"),
        (lambda m, c: quantize(m, "quantvggt", calibration=c, alpha=2.0), "alpha"),
        (lambda m, c: quantize(m, "quantvggt", calibration=c, order="rotate"), "order"),
        (lambda m, c: quantize(m, "quantvggt", calibration=c, epochs=-1), "epochs"),
        (lambda m, c: quantize(m, "quantvggt", calibration=c, input_from="int"), "input_from"),
        (lambda m, c: quantize(quantize(m, "rtn"), "rtn"), "already quantized"),
        (lambda m, c: QuantVGGTConfig.ablation("rotation_only"), "unknown ablation"),
    ],
)
def test_bad_arguments_name_the_problem(model, calib, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, calib)


@pytest.mark.parametrize("method", ["rtn", "gptq", "quantvggt"])
def test_save_load_round_trip_is_bit_exact(model, calib, images, tmp_path, method):
    q = quantize(model, method, bits="w4a4", calibration=calib, progress=False,
                 **FAST.get(method, {}))
    path = save_quantized(q, tmp_path / f"{method}.safetensors")
    loaded = load_quantized(path)
    assert loaded.quant_config == q.quant_config
    assert loaded.quant_report.summary() == q.quant_report.summary()
    expected, got = outputs(q, images), outputs(loaded, images)
    assert all(torch.equal(expected[k], got[k]) for k in OUTPUTS)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in q.state_dict().items())
    assert isinstance(load_any(path).aggregator.global_blocks[1].mlp.fc2, QuantLinear)
    float_path = save_checkpoint(model, tmp_path / "fp.safetensors")
    assert isinstance(load_any(float_path).aggregator.global_blocks[1].mlp.fc2, torch.nn.Linear)
    with pytest.raises(TypeError, match="quant_config"):
        save_quantized(model, tmp_path / "nope.safetensors")


def test_cli_quantize_eval_and_table(tmp_path, capsys):
    tiny = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), img_size=28, seed=0)
    fp_path = save_checkpoint(tiny, tmp_path / "fp.safetensors")  # 28 px: fast eval and calib
    calib = ["--calib", "random", "--calib-size", "2", "--calib-pool", "2", "--calib-frames", "2"]
    q_path = tmp_path / "q.safetensors"
    assert main(["quantize", "--checkpoint", str(fp_path), "--method", "smoothquant", "--bits",
                 "w4a4", *calib, "--out", str(q_path), "--no-progress"]) == 0
    assert "smoothquant w4a4: 16 linears" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(q_path), "--scenes", "1", "--frames", "2",
                 "--no-baselines", "--no-progress"]) == 0
    assert "AUC@30" in capsys.readouterr().out
    json_path = tmp_path / "table.json"
    assert main(["table", "--checkpoint", str(fp_path), "--methods", "rtn", "--bits", "w8a8",
                 "--scenes", "1", "--frames", "2", *calib, "--json", str(json_path),
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| FP |" in table and "| RTN | W8A8 |" in table and "AUC@30 ret." in table
    rows = json.loads(json_path.read_text())["rows"]
    assert [(r["method"], r["bits"]) for r in rows] == [("fp", "w16a16"), ("rtn", "w8a8")]
    assert main(["quantize", "--checkpoint", str(fp_path), "--method", "nope", "--bits", "w4a4",
                 "--out", str(q_path)]) == 2
    assert main(["quantize", "--checkpoint", str(fp_path), "--method", "rtn", "--epochs", "3",
                 "--out", str(q_path)]) == 2  # epochs is a QuantVGGT option
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["quantize", "--checkpoint", str(fp_path), "--method", "rtn", "--recipe", "paper",
                 "--out", str(q_path)]) == 2
    assert "--recipe paper applies to quantvggt" in capsys.readouterr().err
    assert main(["quantize", "--checkpoint", str(fp_path), "--method", "quantvggt", "--recipe",
                 "paper", "--epochs", "0", "--weight-rounding", "gptq", *calib, "--out", str(q_path),
                 "--no-progress"]) == 0
    assert "GPTQ rounding: kept in" in capsys.readouterr().out
    config = load_any(q_path).quant_config  # the paper's recipe, with the options given
    assert (config.clip_init_logit, config.epochs, config.weight_rounding) == (4.0, 0, "gptq")


def test_public_quantize_is_the_model_level_api():
    """Issue contract: qvggt_lib.quant.quantize(model, method, bits, calibration) returns a new model."""
    from qvggt_lib import quant
    from qvggt_lib.quant import api

    assert quant.quantize is api.quantize
    assert quant.quantize_tensor.__module__ == "qvggt_lib.quant.quantizer"
