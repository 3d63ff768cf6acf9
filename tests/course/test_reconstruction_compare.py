"""qvggt_lib.course.reconstruction_compare on a random tiny model and small rendered scenes."""

from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from qvggt_lib.course import reconstruction_compare as rc
from qvggt_lib.data import render_split
from qvggt_lib.eval.evaluate import METRIC_KEYS, evaluate
from qvggt_lib.model import build_vggt

SIZE, FRAMES = 56, 3


@pytest.fixture(scope="module")
def model():
    return build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0).eval()


@pytest.fixture(scope="module")
def perturbed(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        fc = other.aggregator.frame_blocks[0].mlp.fc2
        fc.weight.add_(0.05 * torch.randn(fc.weight.shape, generator=torch.Generator().manual_seed(1)))
    return other.eval()


@pytest.fixture(scope="module")
def scenes():
    return [render_split("test", i, num_frames=FRAMES, image_size=SIZE) for i in range(2)]


@pytest.fixture(scope="module")
def predictions(model, perturbed, scenes):
    return rc.predict_all({"FP": model, "noisy": perturbed}, scenes, progress=False)


def test_predict_all_shapes(predictions, scenes):
    assert list(predictions) == ["FP", "noisy"]
    for preds in predictions.values():
        assert len(preds) == len(scenes)
        assert preds[0]["depth"].shape == (FRAMES, SIZE, SIZE)
        assert preds[0]["world_points"].shape == (FRAMES, SIZE, SIZE, 3)


def test_reference_has_zero_difference(predictions, scenes):
    table = rc.compare(predictions, scenes, reference="FP")
    for key in rc.FIDELITY_KEYS:
        assert table["FP"][key] == pytest.approx(0.0, abs=1e-6)
        assert np.isfinite(table["noisy"][key])
    assert table["noisy"]["depth_rel_diff"] > 0 and table["noisy"]["points_rel_diff"] > 0
    assert table["FP"]["num_scenes"] == len(scenes)


def test_default_reference_is_first(predictions, scenes):
    assert rc.compare(predictions, scenes) == rc.compare(predictions, scenes, reference="FP")


def test_ground_truth_metrics_match_evaluate(model, predictions, scenes):
    table = rc.compare(predictions, scenes)
    results = evaluate(model, num_scenes=len(scenes), num_frames=FRAMES, image_size=SIZE,
                       progress=False, baselines=False)
    for key in METRIC_KEYS:
        assert table["FP"][key] == pytest.approx(results[key], rel=1e-12, abs=1e-12), key


def test_fidelity_by_hand():
    valid = np.ones((2, 2, 2), dtype=bool)
    valid[0, 0, 0] = False  # excluded pixel: a huge difference there must not count
    eye = np.tile(np.eye(3, 4), (2, 1, 1))
    ref = {"depth": np.ones((2, 2, 2)), "world_points": np.ones((2, 2, 2, 3)), "extrinsics": eye}
    pred = {"depth": np.full((2, 2, 2), 1.1), "world_points": np.ones((2, 2, 2, 3)),
            "extrinsics": eye.copy()}
    pred["depth"][0, 0, 0] = 1e6
    angle = np.radians(10.0)
    pred["extrinsics"][1, :2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    out = rc.fidelity_metrics(pred, ref, valid)
    assert out["depth_rel_diff"] == pytest.approx(10.0)  # percent
    assert out["points_rel_diff"] == 0.0
    assert out["rotation_diff_deg"] == pytest.approx(5.0)  # mean of 0 and 10 degrees


def test_errors(predictions, scenes):
    with pytest.raises(ValueError, match="reference"):
        rc.compare(predictions, scenes, reference="nope")
    with pytest.raises(ValueError, match="predictions for"):
        rc.compare(predictions, scenes[:1])
    with pytest.raises(ValueError, match="empty"):
        rc.compare({}, scenes)
    with pytest.raises(ValueError, match="empty"):
        rc.predict_all({}, scenes)
    with pytest.raises(ValueError, match="valid"):
        rc.fidelity_metrics(predictions["FP"][0], predictions["FP"][0],
                    np.zeros((FRAMES, SIZE, SIZE), dtype=bool))


def test_figures(predictions, scenes):
    preds = {name: p[0] for name, p in predictions.items()}
    fig = rc.plot_depth_comparison(scenes[0], preds, frame=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert "FP depth" in titles and "noisy depth" in titles
    assert any("vs FP" in t for t in titles) and any("vs ground truth" in t for t in titles)
    plt.close(fig)
    fig = rc.plot_point_cloud_comparison(scenes[0], preds, max_points=200)
    assert sum(ax.name == "3d" for ax in fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="reference"):
        rc.plot_depth_comparison(scenes[0], preds, reference="nope")
