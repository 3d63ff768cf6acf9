"""Tests for qvggt_lib.metrics on hand-built cases with known answers."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from qvggt_lib.metrics import (
    camera_metrics,
    depth_metrics,
    point_metrics,
    pose_auc,
    reconstruction_metrics,
    relative_pose_errors,
    umeyama_sim3,
)


def random_extrinsics(frames: int, seed: int = 0) -> np.ndarray:
    """Camera-from-world [S, 3, 4] with random rotations and well-separated centres."""
    rotations = Rotation.random(frames, random_state=seed).as_matrix()
    translations = np.random.default_rng(seed).normal(scale=2.0, size=(frames, 3, 1))
    return np.concatenate([rotations, translations], axis=-1)


def rotate_camera_about_its_centre(extrinsic: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """[R | t] -> [Q R | Q t]: same camera centre -R^T t, camera frame rotated by Q."""
    return rotation @ extrinsic


def similarity_of_world(extrinsics, scale, rotation, offset):
    """Extrinsics of the same rig after the world change X' = s Q X + c (poses scaled by s)."""
    rotated = extrinsics[:, :, :3] @ rotation.T
    translation = scale * extrinsics[:, :, 3] - rotated @ offset
    return np.concatenate([rotated, translation[..., None]], axis=-1)


def smooth_point_map(frames: int = 2, height: int = 12, width: int = 16) -> np.ndarray:
    """A wavy surface sampled on a pixel grid, [S, H, W, 3]."""
    v, u = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1.5, width), indexing="ij")
    maps = [
        np.stack([u + frame, v, 0.2 * np.sin(3 * u + frame) * np.cos(2 * v)], axis=-1)
        for frame in range(frames)
    ]
    return np.stack(maps)


# ---------------------------------------------------------------------------------------
# Camera pose
# ---------------------------------------------------------------------------------------


def test_identical_poses_are_perfect():
    gt = random_extrinsics(5)
    rot_err, trans_err = relative_pose_errors(gt, gt)
    assert rot_err.shape == trans_err.shape == (10,)
    np.testing.assert_allclose(rot_err, 0, atol=1e-5)
    np.testing.assert_allclose(trans_err, 0, atol=1e-5)
    metrics = camera_metrics(torch.from_numpy(gt), gt)
    assert metrics == pytest.approx(
        {"auc30": 100, "auc15": 100, "auc5": 100, "auc3": 100, "rra30": 100, "rta30": 100}
    )


def test_poses_are_compared_up_to_a_world_similarity():
    gt = random_extrinsics(6, seed=1)
    pred = similarity_of_world(gt, 3.5, Rotation.random(random_state=7).as_matrix(), np.ones(3))
    rot_err, trans_err = relative_pose_errors(pred, gt)
    np.testing.assert_allclose(rot_err, 0, atol=1e-5)
    np.testing.assert_allclose(trans_err, 0, atol=1e-5)


def test_rotating_one_camera_gives_that_angle_and_hand_computed_auc():
    angle_deg = 10.5
    gt = random_extrinsics(4, seed=2)
    pred = gt.copy()
    spin = Rotation.from_euler("z", angle_deg, degrees=True).as_matrix()  # about optical axis
    pred[3] = rotate_camera_about_its_centre(gt[3], spin)

    rot_err, trans_err = relative_pose_errors(pred, gt)
    # Pairs in order (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); camera 3 is in three of them.
    np.testing.assert_allclose(rot_err, [0, 0, angle_deg, 0, angle_deg, angle_deg], atol=1e-5)
    np.testing.assert_allclose(trans_err, 0, atol=1e-5)

    # Half the pairs sit in bin [0, 1), half in bin [10, 11): the cumulative fraction is
    # 0.5 for thresholds 1..10 and 1 from 11 on.
    metrics = camera_metrics(pred, gt)
    assert metrics["auc30"] == pytest.approx(100 * (10 * 0.5 + 20 * 1.0) / 30)
    assert metrics["auc15"] == pytest.approx(100 * (10 * 0.5 + 5 * 1.0) / 15)
    assert metrics["auc5"] == pytest.approx(50)
    assert metrics["auc3"] == pytest.approx(50)
    assert metrics["rra30"] == metrics["rta30"] == 100


def test_translation_direction_flip_is_folded_to_zero():
    gt = random_extrinsics(2, seed=3)
    gt[0] = np.eye(3, 4)
    pred = gt.copy()
    pred[1, :, 3] *= -1  # relative translation T_0 T_1^-1 = -R_1^T t_1 flips sign
    rot_err, trans_err = relative_pose_errors(pred, gt)
    np.testing.assert_allclose(rot_err, 0, atol=1e-5)
    np.testing.assert_allclose(trans_err, 0, atol=1e-5)


def test_zero_translation_gives_finite_errors():
    gt = random_extrinsics(3, seed=4)
    pred = gt.copy()
    pred[:, :, 3] = 0  # all predicted cameras at the origin: no translation direction
    rot_err, trans_err = relative_pose_errors(pred, gt)
    assert np.isfinite(rot_err).all() and np.isfinite(trans_err).all()
    np.testing.assert_allclose(trans_err, 90)


def test_pose_auc_by_hand():
    # Bins [0,1) [1,2) [2,3]: counts 1, 0, 1 of 3 -> cumulative 1/3, 1/3, 2/3.
    assert pose_auc(np.array([0.5, 2.5, 40.0]), 3) == pytest.approx(100 * 4 / 9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: relative_pose_errors(np.zeros((3, 4, 4)), np.zeros((3, 4, 4))),
        lambda: relative_pose_errors(random_extrinsics(3), random_extrinsics(4)),
        lambda: relative_pose_errors(random_extrinsics(1), random_extrinsics(1)),
        lambda: pose_auc(np.array([]), 30),
        lambda: depth_metrics(np.ones((2, 4, 4)), np.ones((2, 4, 5)), np.ones((2, 4, 4))),
        lambda: depth_metrics(np.ones((2, 4, 4)), np.ones((2, 4, 4)), np.zeros((2, 4, 4))),
        lambda: umeyama_sim3(np.zeros((5, 3)), np.zeros((5, 3))),
        lambda: umeyama_sim3(np.ones((5, 2)), np.ones((5, 2))),
        lambda: point_metrics(np.ones((2, 4, 4, 3)), np.ones((2, 4, 4, 3)), np.ones((2, 4))),
        lambda: reconstruction_metrics({"extrinsics": 0}, {}),
    ],
)
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------------------


def test_scaled_depth_is_perfect_after_median_alignment():
    gt = np.random.default_rng(5).uniform(0.5, 10, size=(3, 8, 10))
    valid = np.ones_like(gt, dtype=bool)
    metrics = depth_metrics(torch.from_numpy(gt * 2.7), gt, valid)
    assert metrics["depth_abs_rel"] == pytest.approx(0, abs=1e-12)
    assert metrics["depth_delta1"] == 1.0


def test_depth_metrics_by_hand():
    gt = np.ones((1, 1, 5))
    pred = np.array([[[2.0, 2.0, 2.0, 4.0, -3.0]]])  # median 2 -> scale 1/2
    valid = np.array([[[True, True, True, True, False]]])
    metrics = depth_metrics(pred, gt, valid)
    assert metrics["depth_abs_rel"] == pytest.approx(0.25)  # errors 0, 0, 0, 1
    assert metrics["depth_delta1"] == pytest.approx(0.75)


def test_non_positive_predictions_stay_finite():
    gt = np.full((1, 2, 2), 3.0)
    metrics = depth_metrics(np.array([[[0.0, -1.0], [1.0, 2.0]]]), gt, np.ones((1, 2, 2)))
    assert all(np.isfinite(value) for value in metrics.values())


# ---------------------------------------------------------------------------------------
# Point maps
# ---------------------------------------------------------------------------------------


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(6)
    src = rng.normal(size=(50, 3))
    scale, rotation, offset = 0.37, Rotation.random(random_state=6).as_matrix(), rng.normal(size=3)
    dst = scale * src @ rotation.T + offset
    est_scale, est_rotation, est_offset = umeyama_sim3(src, dst)
    assert est_scale == pytest.approx(scale)
    np.testing.assert_allclose(est_rotation, rotation, atol=1e-10)
    np.testing.assert_allclose(est_offset, offset, atol=1e-10)


def test_umeyama_never_returns_a_reflection():
    src = np.random.default_rng(8).normal(size=(30, 3))
    mirrored = src * np.array([1.0, 1.0, -1.0])
    _, rotation, _ = umeyama_sim3(src, mirrored)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_similarity_transformed_points_are_perfect_after_alignment():
    gt = smooth_point_map()
    valid = np.ones(gt.shape[:-1], dtype=bool)
    valid[0, :3, :4] = False
    rng = np.random.default_rng(9)
    scale, rotation = rng.uniform(0.2, 5), Rotation.random(random_state=9).as_matrix()
    pred = scale * gt @ rotation.T + rng.normal(size=3)

    metrics = point_metrics(pred, gt, valid, max_points=200, seed=1)
    for key in ("point_acc", "point_comp", "point_acc_med", "point_comp_med"):
        assert metrics[key] == pytest.approx(0, abs=1e-9)
    assert metrics["point_nc"] == pytest.approx(1, abs=1e-9)
    assert metrics["point_nc_med"] == pytest.approx(1, abs=1e-9)
    assert point_metrics(pred, gt, valid, max_points=200, seed=1) == metrics


def test_reconstruction_metrics_combines_all_keys():
    gt_points = smooth_point_map()
    gt = {
        "extrinsics": random_extrinsics(2, seed=10),
        "depth": gt_points[..., 2] + 2.0,
        "world_points": gt_points,
        "valid": np.ones(gt_points.shape[:-1], dtype=bool),
    }
    pred = {key: gt[key] for key in ("extrinsics", "depth", "world_points")}
    metrics = reconstruction_metrics(pred, gt)
    assert set(metrics) == {
        "auc30", "auc15", "auc5", "auc3", "rra30", "rta30", "depth_abs_rel", "depth_delta1",
        "point_acc", "point_comp", "point_nc", "point_acc_med", "point_comp_med", "point_nc_med",
    }
    assert metrics["auc30"] == pytest.approx(100)
    assert metrics["depth_abs_rel"] == pytest.approx(0)
    assert metrics["point_nc"] == pytest.approx(1)
