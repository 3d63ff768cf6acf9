"""Notebook helpers: tables, alignment, captured activations, quantization error, figures."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from qvggt_lib.course.activations import activation_statistics, token_groups
from qvggt_lib.course.viz import (
    activation_fake_quantize,
    align_prediction,
    capture_inputs,
    granularity_errors,
    load_training_stats,
    parameter_breakdown,
    plot_block_curves,
    plot_channel_absmax,
    plot_point_clouds,
    plot_scene_prediction,
    plot_token_channel_heatmap,
    plot_token_distributions,
    plot_training_evolution,
    quantization_error,
)
from qvggt_lib.model import build_vggt


def small_model():
    return build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0)


def test_parameter_breakdown_matches_official_vggt_1b_counts():
    groups = parameter_breakdown(build_vggt("vggt-1b", device="meta"))
    assert groups["patch embed (DINOv2)"] == 304_372_736
    assert groups["frame blocks"] == groups["global blocks"] == 302_364_672
    assert groups["camera + register tokens"] == 10_240
    assert groups["camera head"] == 216_174_610
    assert groups["total"] == 1_190_596_120
    assert sum(v for k, v in groups.items() if k != "total") == groups["total"]


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_align_prediction_undoes_a_similarity():
    rng = np.random.default_rng(0)
    S, H, W = 3, 4, 5
    gt_points = rng.normal(size=(S, H, W, 3)) + np.array([0.0, 0.0, 4.0])
    gt_ext = np.concatenate(
        [np.stack([_rotation(a) for a in (0.0, 0.2, -0.3)]), rng.normal(size=(S, 3, 1))], -1
    )
    cam = np.einsum("sij,shwj->shwi", gt_ext[:, :, :3], gt_points) + gt_ext[:, None, None, :, 3]
    scene = {"world_points": gt_points, "valid": np.ones((S, H, W), bool), "extrinsics": gt_ext}
    # A prediction in another frame: X_gt = s0 R0 X_pred + t0; cameras and depth scaled by 1 / s0.
    s0, R0, t0 = 2.5, _rotation(0.7), np.array([1.0, -2.0, 0.5])
    pred_points = (gt_points - t0) @ R0 / s0
    pred_rot = gt_ext[:, :, :3] @ R0
    pred_trans = (gt_ext[:, :, :3] @ t0 + gt_ext[:, :, 3]) / s0
    pred_ext = np.concatenate([pred_rot, pred_trans[..., None]], -1)
    pred = {"world_points": pred_points, "extrinsics": pred_ext, "depth": cam[..., 2] / s0}
    out = align_prediction(pred, scene)
    np.testing.assert_allclose(out["world_points"], gt_points, atol=1e-4)
    np.testing.assert_allclose(out["extrinsics"], gt_ext, atol=1e-4)
    np.testing.assert_allclose(out["depth"], cam[..., 2], atol=1e-4)
    assert abs(out["sim3_scale"] - s0) < 1e-6
    np.testing.assert_allclose(out["sim3_rotation"], R0, atol=1e-6)


def test_capture_inputs_shapes_and_token_groups():
    model = small_model()
    images = torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    sites = [
        ("frame_blocks", 0, "residual"),
        ("global_blocks", 1, "fc1"),
        ("frame_blocks", 1, "fc2"),
    ]
    got = capture_inputs(model, images, sites)
    P = model.aggregator.patch_start_idx + 4
    C = model.config.embed_dim
    assert got[sites[0]].shape == (3, P, C) and got[sites[1]].shape == (3, P, C)
    assert got[sites[2]].shape == (3, P, 4 * C)
    # the residual entering frame block 0 holds the learned special tokens: frame 0 has its own
    camera = model.aggregator.camera_token.detach()
    torch.testing.assert_close(got[sites[0]][0, 0], camera[0, 0, 0])
    torch.testing.assert_close(got[sites[0]][2, 0], camera[0, 1, 0])
    groups = token_groups(got[sites[0]], model.aggregator.patch_start_idx)
    assert groups["camera"].shape == (3, C) and groups["register"].shape == (12, C)
    assert groups["patch"].shape == (12, C)
    # hooks are removed afterwards
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_activation_granularities_and_errors():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=gen)
    x[3] *= 50.0  # one huge token
    x[:, 7] *= 30.0  # one outlier channel
    err = granularity_errors(x, bits=(4, 8))
    assert set(err) == {(b, g) for b in (4, 8) for g in ("per_tensor", "per_token", "per_channel")}
    for g in ("per_tensor", "per_token", "per_channel"):
        assert err[(8, g)]["sqnr_db"] > err[(4, g)]["sqnr_db"]
    # per-channel scales are per column: quantizing the transpose per token is the same thing
    torch.testing.assert_close(
        activation_fake_quantize(x, 4, "per_channel"),
        activation_fake_quantize(x.T, 4, "per_token").T,
    )
    # finer granularity never loses here
    assert err[(4, "per_token")]["rel_mse"] < err[(4, "per_tensor")]["rel_mse"]
    assert quantization_error(x, x)["sqnr_db"] == float("inf")
    e = quantization_error(
        torch.ones(4, dtype=torch.float64), torch.full((4,), 1.1, dtype=torch.float64)
    )
    assert abs(e["rel_mse"] - 0.01) < 1e-12 and abs(e["sqnr_db"] - 20.0) < 1e-9
    with pytest.raises(ValueError):
        activation_fake_quantize(x, 4, "per_group")


def _stats():
    model = small_model()
    scenes = [
        torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)
    ]
    return activation_statistics(model, scenes, progress=False)


def test_figures_have_labelled_axes(tmp_path):
    stats = _stats()
    groups = {
        t: torch.randn(10 * (i + 1), 16) for i, t in enumerate(("camera", "register", "patch"))
    }
    figures = [
        plot_block_curves(stats, "qkv"),
        plot_token_distributions(groups, "test"),
        plot_channel_absmax(groups, "test"),
    ]
    path = tmp_path / "activation_stats.json"
    assert load_training_stats(path) is None
    path.write_text(json.dumps({"setup": {}, "steps": {"100": stats, "20": stats}}))
    history = load_training_stats(path)
    assert list(history) == [20, 100]
    figures.append(plot_training_evolution(history))
    for fig in figures:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
            # readable labels, not the raw dictionary keys of activation_statistics
            assert not {"max_abs", "channel_outlier_ratio"} & {ax.get_ylabel(), ax.get_title()}
        plt.close(fig)


def test_training_evolution_draws_snapshots_as_markers_not_curves():
    stats = _stats()
    history = {0: stats, 50: stats, 100: stats}
    fig = plot_training_evolution(history, keys=("kurtosis",))
    ax = fig.axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
    assert points and all(line.get_linestyle() == "None" for line in points)   # no joining lines
    assert all(len(line.get_xdata()) == 3 for line in points)                   # one marker per snapshot
    assert list(ax.get_xticks()) == [0, 50, 100] and "3 snapshots" in ax.get_xlabel()
    plt.close(fig)


def test_channel_absmax_is_a_sorted_profile_and_draws_into_given_axes():
    x = torch.randn(40, 32, generator=torch.Generator().manual_seed(0))
    x[:, 7] *= 20.0  # one outlier channel
    groups = {"camera": x[:4], "register": x[4:8], "patch": x[8:]}
    fig, axes = plt.subplots(1, 2)
    assert plot_channel_absmax(groups, "test", ax=axes[1]) is fig
    curves = [line for line in axes[1].get_lines() if len(line.get_ydata()) == 32]
    assert len(curves) == 3
    for line in curves:
        y = np.asarray(line.get_ydata())
        assert np.all(np.diff(y) <= 0)  # sorted from the largest channel down
    labels = [text.get_text() for text in axes[1].get_legend().get_texts()]
    assert all("top channels 7" in label for label in labels)
    assert not axes[0].get_lines()
    plt.close(fig)


def test_token_channel_heatmap_marks_special_tokens_and_has_a_colour_bar():
    x = torch.randn(2, 5 + 16, 32, generator=torch.Generator().manual_seed(0))
    x[:, :5, 3] = 40.0
    fig = plot_token_channel_heatmap({"residual": x, "qkv": x[1]}, 5, "test", max_patch_tokens=8)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 4  # special strip and patch block per panel
    special = images[0]
    assert [t.get_text() for t in special.get_yticklabels()] == ["camera"] + [f"register {i}" for i in range(1, 5)]
    assert special.images[0].get_array().shape == (5, 32) and images[1].images[0].get_array().shape == (8, 32)
    assert "first 8" in images[1].get_ylabel() and images[1].get_xlabel() == "channel"
    # one colour bar per panel, labelled; the special strip and the patches share one colour scale
    colour_bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("|x|")]
    assert len(colour_bars) == 2
    assert special.images[0].norm.vmax == images[1].images[0].norm.vmax == 40.0
    with pytest.raises(ValueError):
        plot_token_channel_heatmap({"bad": torch.zeros(3, 32)}, 5, "test")
    plt.close(fig)


def test_scene_prediction_figure_has_units_legend_and_title():
    from qvggt_lib.data import render_scene

    scene = render_scene(0, num_frames=2, image_size=28)
    pred = {"extrinsics": scene["extrinsics"], "depth": scene["depth"]}
    fig = plot_scene_prediction(scene, pred)
    assert fig._suptitle is not None and fig._suptitle.get_text()
    ax3d = [ax for ax in fig.axes if ax.name == "3d"][0]
    labels = [text.get_text() for text in ax3d.get_legend().get_texts()]
    assert labels[:2] == ["true cameras", "predicted cameras (aligned by Sim(3))"] and len(labels) == 3
    assert "scene units" in ax3d.get_xlabel() and "scene units" in ax3d.get_zlabel()
    colour_bar_labels = [ax.get_ylabel() for ax in fig.axes if "depth (scene units)" == ax.get_ylabel()]
    assert len(colour_bar_labels) == 2  # true and predicted depth
    plt.close(fig)


def test_point_cloud_figure():
    rng = np.random.default_rng(0)
    scene = {
        "images": rng.random((2, 3, 4, 5)),
        "world_points": rng.normal(size=(2, 4, 5, 3)),
        "valid": np.ones((2, 4, 5), bool),
    }
    fig = plot_point_clouds(scene, {"world_points": scene["world_points"] + 0.1})
    assert len(fig.axes) == 2 and all(ax.get_title() for ax in fig.axes)
    plt.close(fig)
