"""Tests for qvggt_lib.geometry against SciPy, NumPy and hand-derived identities."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from qvggt_lib.geometry import (
    closed_form_inverse_se3,
    depth_to_world_coords_points,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_map_to_point_map,
    unproject_depth_torch,
)

IMAGE_HW = (294, 518)


def random_cameras(batch: int, frames: int, seed: int = 0):
    """Random camera-from-world extrinsics [B, S, 3, 4] and intrinsics [B, S, 3, 3]."""
    rng = np.random.default_rng(seed)
    rotations = Rotation.random(batch * frames, random_state=seed).as_matrix()
    translations = rng.normal(size=(batch * frames, 3, 1))
    extrinsics = np.concatenate([rotations, translations], axis=-1).reshape(batch, frames, 3, 4)
    height, width = IMAGE_HW
    intrinsics = np.zeros((batch, frames, 3, 3))
    intrinsics[..., 0, 0] = rng.uniform(200, 600, size=(batch, frames))
    intrinsics[..., 1, 1] = rng.uniform(200, 600, size=(batch, frames))
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1
    return extrinsics, intrinsics


def standardized_scipy_quat(rotation: Rotation) -> np.ndarray:
    quat = rotation.as_quat()  # XYZW, like ours
    return np.where(quat[..., 3:] < 0, -quat, quat)


def project(world_points, extrinsic, intrinsic):
    """World points [..., 3] -> pixels [..., 2] via K (R X + t)."""
    cam = world_points @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    pixels = cam @ intrinsic.T
    return pixels[..., :2] / pixels[..., 2:]


def test_mat_to_quat_matches_scipy():
    rotations = Rotation.random(500, random_state=1)
    quat = mat_to_quat(torch.from_numpy(rotations.as_matrix())).numpy()
    np.testing.assert_allclose(quat, standardized_scipy_quat(rotations), atol=1e-12)
    assert (quat[:, 3] >= 0).all()


def test_quat_to_mat_matches_scipy_for_unnormalized_quaternions():
    rotations = Rotation.random(500, random_state=2)
    scales = np.random.default_rng(2).uniform(0.1, 10, size=(500, 1))
    matrices = quat_to_mat(torch.from_numpy(rotations.as_quat() * scales)).numpy()
    np.testing.assert_allclose(matrices, rotations.as_matrix(), atol=1e-12)


def test_mat_to_quat_has_finite_gradients_at_identity():
    identity = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1).requires_grad_(True)
    mat_to_quat(identity).sum().backward()
    assert torch.isfinite(identity.grad).all()


def test_pose_encoding_round_trip():
    extrinsics, intrinsics = random_cameras(batch=3, frames=5)
    encoding = extri_intri_to_pose_encoding(
        torch.from_numpy(extrinsics), torch.from_numpy(intrinsics), IMAGE_HW
    )
    assert encoding.shape == (3, 5, 9) and encoding.dtype == torch.float32

    height, width = IMAGE_HW
    np.testing.assert_allclose(encoding[..., :3], extrinsics[..., :3, 3], atol=1e-5)
    rotations = Rotation.from_matrix(extrinsics[..., :3, :3].reshape(-1, 3, 3))
    quat_ref = standardized_scipy_quat(rotations)
    np.testing.assert_allclose(encoding[..., 3:7].reshape(-1, 4), quat_ref, atol=1e-5)
    np.testing.assert_allclose(
        encoding[..., 7], 2 * np.arctan(height / 2 / intrinsics[..., 1, 1]), atol=1e-5
    )
    np.testing.assert_allclose(
        encoding[..., 8], 2 * np.arctan(width / 2 / intrinsics[..., 0, 0]), atol=1e-5
    )

    extrinsics_back, intrinsics_back = pose_encoding_to_extri_intri(encoding.double(), IMAGE_HW)
    np.testing.assert_allclose(extrinsics_back, extrinsics, atol=1e-5)
    np.testing.assert_allclose(intrinsics_back, intrinsics, rtol=1e-5)


def test_pose_encoding_without_intrinsics():
    encoding = torch.randn(2, 4, 9)
    extrinsics, intrinsics = pose_encoding_to_extri_intri(encoding, build_intrinsics=False)
    assert extrinsics.shape == (2, 4, 3, 4) and intrinsics is None


def test_closed_form_inverse_matches_numpy_inverse():
    extrinsics, _ = random_cameras(batch=1, frames=8)
    se3 = np.tile(np.eye(4), (8, 1, 1))
    se3[:, :3, :] = extrinsics[0]
    expected = np.linalg.inv(se3)
    np.testing.assert_allclose(closed_form_inverse_se3(se3), expected, atol=1e-12)
    np.testing.assert_allclose(closed_form_inverse_se3(se3[:, :3]), expected, atol=1e-12)
    from_torch = closed_form_inverse_se3(torch.from_numpy(se3))
    assert isinstance(from_torch, torch.Tensor)
    np.testing.assert_allclose(from_torch.numpy(), expected, atol=1e-12)


def test_unprojection_then_projection_returns_pixel_grid():
    frames, (height, width) = 2, (6, 9)
    extrinsics, intrinsics = random_cameras(batch=1, frames=frames, seed=3)
    extrinsics, intrinsics = extrinsics[0], intrinsics[0]
    depth = np.random.default_rng(3).uniform(1, 5, size=(frames, height, width, 1))

    world = unproject_depth_map_to_point_map(depth, extrinsics, intrinsics)
    assert world.shape == (frames, height, width, 3)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    for frame in range(frames):
        pixels = project(world[frame], extrinsics[frame], intrinsics[frame])
        np.testing.assert_allclose(pixels, np.stack([u, v], axis=-1), atol=1e-8)
        cam = world[frame] @ extrinsics[frame, :, :3].T + extrinsics[frame, :, 3]
        np.testing.assert_allclose(cam[..., 2], depth[frame, ..., 0], atol=1e-10)

    from_torch = unproject_depth_map_to_point_map(
        torch.from_numpy(depth[..., 0]), torch.from_numpy(extrinsics), torch.from_numpy(intrinsics)
    )
    np.testing.assert_allclose(from_torch, world, atol=1e-12)

    _, _, mask = depth_to_world_coords_points(depth[0, ..., 0], extrinsics[0], intrinsics[0])
    assert mask.all()


def test_torch_unprojection_matches_numpy_and_is_differentiable():
    extrinsics, intrinsics = random_cameras(batch=2, frames=3, seed=4)
    depth = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    world = unproject_depth_torch(depth, torch.from_numpy(extrinsics), torch.from_numpy(intrinsics))
    assert world.shape == (2, 3, 5, 7, 3)
    for batch in range(2):
        expected = unproject_depth_map_to_point_map(
            depth[batch].detach(), extrinsics[batch], intrinsics[batch]
        )
        np.testing.assert_allclose(world[batch].detach().numpy(), expected, atol=1e-12)
    world.sum().backward()
    assert torch.isfinite(depth.grad).all()


zeros = torch.zeros


@pytest.mark.parametrize(
    "call",
    [
        lambda: quat_to_mat(zeros(5, 3)),
        lambda: mat_to_quat(zeros(5, 3, 4)),
        lambda: extri_intri_to_pose_encoding(zeros(1, 2, 4, 4), zeros(1, 2, 3, 3), (8, 8)),
        lambda: extri_intri_to_pose_encoding(zeros(1, 2, 3, 4), zeros(1, 3, 3, 3), (8, 8)),
        lambda: extri_intri_to_pose_encoding(zeros(1, 2, 3, 4), zeros(1, 2, 3, 3)),
        lambda: pose_encoding_to_extri_intri(zeros(1, 2, 8), (8, 8)),
        lambda: pose_encoding_to_extri_intri(zeros(1, 2, 9)),
        lambda: closed_form_inverse_se3(np.zeros((3, 3))),
        lambda: closed_form_inverse_se3(np.zeros((2, 3, 3))),
        lambda: unproject_depth_map_to_point_map(
            np.ones((2, 4, 4)), np.zeros((3, 3, 4)), np.zeros((2, 3, 3))
        ),
        lambda: unproject_depth_map_to_point_map(
            np.ones((4, 4)), np.zeros((1, 3, 4)), np.zeros((1, 3, 3))
        ),
        lambda: unproject_depth_torch(torch.ones(2, 4, 4), zeros(3, 3, 4), zeros(2, 3, 3)),
        lambda: unproject_depth_torch(torch.ones(2, 4, 4), zeros(2, 4, 4), zeros(2, 3, 3)),
    ],
)
def test_bad_shapes_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_unknown_pose_encoding_type_raises():
    with pytest.raises(NotImplementedError):
        pose_encoding_to_extri_intri(torch.zeros(1, 2, 9), (8, 8), pose_encoding_type="relT_quaR")
