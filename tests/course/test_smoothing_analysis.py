"""Facts about the smoothing-lesson measurements (qvggt_lib.course.smoothing_analysis) on a tiny random VGGT."""

import pytest
import torch

from qvggt_lib.course.rotation_analysis import layer_quant_errors
from qvggt_lib.course.smoothing_analysis import (
    block_output_errors,
    outlier_ratio,
    prediction_errors,
    quantize_from_statistics,
    smoothed_layer_errors,
    smoothed_layers,
    smoothing_statistics,
)
from qvggt_lib.data import render_split
from qvggt_lib.model import build_vggt
from qvggt_lib.quant import (
    GPTQConfig,
    QuantVGGTConfig,
    RandomHadamard,
    RTNConfig,
    SmoothQuantConfig,
    collect_linear_statistics,
    quantize,
    smoothing_factors,
)

FRAMES, SIZE = 3, 28
CLOSED_FORM = {
    "rtn": RTNConfig(),
    "smoothquant": SmoothQuantConfig(alpha=0.6),
    "smoothquant_all": SmoothQuantConfig(smooth_layers="all"),
    **{name: QuantVGGTConfig.ablation(name, calibrate=False, seed=3)
       for name in ("base", "rotation", "smoothing", "smooth_then_rotate", "dsfq")},
}


@pytest.fixture(scope="module")
def model():
    return build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0).eval()


@pytest.fixture(scope="module")
def calib():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(FRAMES, 3, SIZE, SIZE, generator=g) for _ in range(3)]


def test_outlier_ratio_bounds():
    assert outlier_ratio(torch.ones(16)) == pytest.approx(1.0)
    one_hot = torch.zeros(16)
    one_hot[5] = -2.0
    assert outlier_ratio(one_hot) == pytest.approx(16.0)


def test_smoothed_layer_errors_reduce_to_layer_quant_errors_without_s():
    torch.manual_seed(0)
    x, w = torch.randn(40, 64), torch.randn(32, 64)
    rot = RandomHadamard(64, seed=1)
    assert smoothed_layer_errors(x, w) == layer_quant_errors(x, w)
    assert smoothed_layer_errors(x, w, rotation=rot) == layer_quant_errors(x, w, rot)
    ones = torch.ones(64)  # s = 1 changes nothing, in either order
    for order in ("rotate_then_smooth", "smooth_then_rotate"):
        assert smoothed_layer_errors(x, w, ones, rot, order) == pytest.approx(
            layer_quant_errors(x, w, rot), rel=1e-6)


def test_smoothing_an_outlier_channel_lowers_the_output_error():
    torch.manual_seed(0)
    x, w = torch.randn(256, 64), torch.randn(32, 64) * 0.1
    x[:, 7] *= 40.0  # a channel that is large in every token
    s = smoothing_factors(x.abs().amax(0), w, 0.5)
    plain, smoothed = smoothed_layer_errors(x, w), smoothed_layer_errors(x, w, s)
    assert smoothed["output"] < plain["output"] / 2
    assert smoothed["weight"] > plain["weight"]  # the difficulty moved to the weights
    # relative to ||x'||, not ||x||: the exact outlier no longer dominates the norm of x / s
    assert smoothed["act"] > plain["act"]
    assert outlier_ratio((x / s).abs().amax(0)) < outlier_ratio(x.abs().amax(0))


def test_statistics_are_those_quantize_uses(model, calib):
    dsfq, smooth_only = CLOSED_FORM["dsfq"], CLOSED_FORM["smoothing"]
    plans, names, rotations = smoothed_layers(model, dsfq)
    assert names == list(plans) and set(rotations) == set(names)
    stats = smoothing_statistics(model, calib, dsfq)
    reference = collect_linear_statistics(model, calib, names, rotations, progress=False)
    for name in names:
        torch.testing.assert_close(stats[name], reference[name].rotated_absmax)
    plain = smoothing_statistics(model, calib, smooth_only)
    per_scene = smoothing_statistics(model, calib, smooth_only, per_scene=True)
    for name in names:
        torch.testing.assert_close(plain[name], reference[name].act_absmax)
        assert per_scene[name].shape == (len(calib), model.get_submodule(name).in_features)
        torch.testing.assert_close(per_scene[name].amax(0), plain[name])
    assert smoothing_statistics(model, calib, CLOSED_FORM["rotation"]) == {}


@pytest.mark.parametrize("name", list(CLOSED_FORM))
def test_quantize_from_statistics_equals_quantize(model, calib, name):
    config = CLOSED_FORM[name]
    images = torch.rand(FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    expected = quantize(model, config, calibration=calib, progress=False)
    built = quantize_from_statistics(model, config, smoothing_statistics(model, calib, config))
    assert built.quant_config == config
    with torch.no_grad():
        a, b = expected(images), built(images)
    for key in ("depth", "world_points", "pose_enc"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert all(type(m).__name__ != "QuantLinear" for m in model.modules())  # source untouched


def test_quantize_from_statistics_options_and_refusals(model, calib):
    config = CLOSED_FORM["smoothing"]
    stats = smoothing_statistics(model, calib, config)
    assert quantize_from_statistics(model, config, stats, alpha=0.3).quant_config.alpha == 0.3
    with pytest.raises(ValueError, match="closed-form"):
        quantize_from_statistics(model, QuantVGGTConfig(), stats)
    with pytest.raises(ValueError, match="closed-form"):
        quantize_from_statistics(model, GPTQConfig(), stats)
    with pytest.raises(ValueError, match="no activation statistics"):
        quantize_from_statistics(model, config, {})


def test_block_and_prediction_errors(model, calib):
    q = quantize_from_statistics(model, CLOSED_FORM["base"])
    same = block_output_errors(model, model, calib[:1])
    assert list(same) == [f"aggregator.{k}_blocks.{i}" for i in range(2) for k in ("frame", "global")]
    assert all(v == 0.0 for v in same.values())
    errors = block_output_errors(model, q, calib[:1])
    assert all(0 < v < 1 for v in errors.values())
    scene = render_split("test", 0, num_frames=FRAMES, image_size=SIZE)
    with torch.no_grad():
        reference = [model(torch.as_tensor(scene["images"]))]
    zero = prediction_errors(model, [scene], reference)
    assert zero["depth"] == zero["world_points"] == 0.0 and zero["depth_abs_rel"] > 0
    assert prediction_errors(q, [scene], reference)["depth"] > 0


def test_prediction_errors_per_scene(model, calib):
    q = quantize_from_statistics(model, CLOSED_FORM["base"])
    scenes = [render_split("test", i, num_frames=FRAMES, image_size=SIZE) for i in range(2)]
    with torch.no_grad():
        reference = [model(torch.as_tensor(scene["images"])) for scene in scenes]
    both = prediction_errors(q, scenes, reference, per_scene=True)
    assert "depth_per_scene" not in prediction_errors(q, scenes, reference)
    for key in ("depth", "world_points"):
        alone = [prediction_errors(q, [scene], [ref])[key] for scene, ref in zip(scenes, reference)]
        assert both[f"{key}_per_scene"] == pytest.approx(alone, rel=1e-12)  # same forward, same arithmetic
        # the pooled error lies between the per-scene ones (a weighted root mean square of them)
        assert min(alone) * (1 - 1e-12) <= both[key] <= max(alone) * (1 + 1e-12)
