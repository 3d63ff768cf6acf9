"""Camera geometry with the same names, shapes and conventions as upstream VGGT.

Mirrors ``vggt.utils.rotation``, ``vggt.utils.pose_enc`` and ``vggt.utils.geometry``
so code written against upstream runs unchanged.

Conventions
-----------
* Extrinsics are camera-from-world ``[R | t]`` (3x4) in OpenCV axes (x right, y down,
  z forward): ``x_cam = R @ x_world + t``.
* Intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; pixel ``(u, v)`` is column,
  row, with integer pixel coordinates (``u = arange(W)``, no +0.5 offset).
* Quaternions are XYZW (scalar last, like SciPy), standardized to ``w >= 0``.
* Pose encoding ``"absT_quaR_FoV"`` is the 9-vector ``[t (3), q_xyzw (4), fov_h, fov_w]``.
"""

from __future__ import annotations

import numpy as np
import torch

POSE_ENCODING_TYPE = "absT_quaR_FoV"


def _check_trailing_shape(name: str, array, trailing: tuple[int, ...], hint: str) -> None:
    """Raise ValueError unless ``array.shape`` ends with ``trailing``."""
    shape = tuple(array.shape)
    if len(shape) < len(trailing) or shape[len(shape) - len(trailing):] != trailing:
        expected = "[..., " + ", ".join(map(str, trailing)) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {list(shape)}. {hint}")


def _check_image_size(image_size_hw) -> tuple[float, float]:
    """Return ``(H, W)`` or raise ValueError when it is missing or malformed."""
    if image_size_hw is None or len(image_size_hw) != 2:
        raise ValueError(
            f"image_size_hw must be the image size (H, W), got {image_size_hw!r}. "
            "Pass e.g. images.shape[-2:]."
        )
    height, width = image_size_hw
    return float(height), float(width)


def _check_encoding_type(pose_encoding_type: str) -> None:
    if pose_encoding_type != POSE_ENCODING_TYPE:
        raise NotImplementedError(
            f"pose_encoding_type {pose_encoding_type!r} is not supported; "
            f"only {POSE_ENCODING_TYPE!r} (the one VGGT uses) is."
        )


# ---------------------------------------------------------------------------------------
# Rotations (PyTorch3D-derived, XYZW)
# ---------------------------------------------------------------------------------------


def quat_to_mat(quaternions: torch.Tensor) -> torch.Tensor:
    """Quaternions ``[..., 4]`` (XYZW, need not be unit) -> rotation matrices ``[..., 3, 3]``.

    With ``q = (x, y, z, w)`` and ``s = 2 / |q|^2`` (so unnormalized inputs are fine)::

        R = [[1 - s(y²+z²),  s(xy - zw),    s(xz + yw)],
             [s(xy + zw),    1 - s(x²+z²),  s(yz - xw)],
             [s(xz - yw),    s(yz + xw),    1 - s(x²+y²)]]
    """
    _check_trailing_shape("quaternions", quaternions, (4,), "Use XYZW (scalar-last) order.")
    x, y, z, w = torch.unbind(quaternions, dim=-1)
    two_s = 2.0 / (quaternions * quaternions).sum(dim=-1)
    entries = (
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    )
    return torch.stack(entries, dim=-1).reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive_part(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip XYZW quaternions ``[..., 4]`` to the representative with ``w >= 0``."""
    return torch.where(quaternions[..., 3:4] < 0, -quaternions, quaternions)


def mat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (XYZW, ``w >= 0``).

    The four magnitudes ``2|w| = sqrt(1 + m00 + m11 + m22)``, ``2|x| = sqrt(1 + m00 - m11
    - m22)``, ... are computed first; each gives one candidate quaternion by dividing the
    matching row of ``4·q·q_k`` products by ``4|q_k|``. The candidate with the largest
    divisor is the best conditioned and is returned.
    """
    _check_trailing_shape("matrix", matrix, (3, 3), "Pass rotation matrices.")
    batch_shape = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(
        matrix.reshape(batch_shape + (9,)), dim=-1
    )
    # Order within every 4-vector below is (w, x, y, z).
    q_abs = _sqrt_positive_part(torch.stack([
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ], dim=-1))
    quat_times_component = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    # The 0.1 floor only guards the division; a small q_abs is never the one selected.
    candidates = quat_times_component / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(dim=-1)[..., None, None].expand(batch_shape + (1, 4))
    quat_wxyz = torch.gather(candidates, dim=-2, index=best).squeeze(-2)
    return standardize_quaternion(quat_wxyz[..., [1, 2, 3, 0]])


# ---------------------------------------------------------------------------------------
# Pose encoding
# ---------------------------------------------------------------------------------------


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    image_size_hw=None,
    pose_encoding_type: str = POSE_ENCODING_TYPE,
) -> torch.Tensor:
    """Cameras -> VGGT pose encoding ``[B, S, 9]`` (float32).

    Args:
        extrinsics: ``[B, S, 3, 4]`` camera-from-world ``[R | t]``.
        intrinsics: ``[B, S, 3, 3]`` pinhole ``K``.
        image_size_hw: ``(H, W)`` of the images the intrinsics refer to.

    Returns ``[t, mat_to_quat(R), fov_h, fov_w]`` with ``fov_h = 2 atan((H/2) / fy)`` and
    ``fov_w = 2 atan((W/2) / fx)``.
    """
    _check_encoding_type(pose_encoding_type)
    _check_trailing_shape("extrinsics", extrinsics, (3, 4), "Expected camera-from-world [R|t].")
    _check_trailing_shape("intrinsics", intrinsics, (3, 3), "Expected pinhole K matrices.")
    if extrinsics.shape[:-2] != intrinsics.shape[:-2]:
        raise ValueError(
            f"extrinsics {list(extrinsics.shape)} and intrinsics {list(intrinsics.shape)} "
            "must share their leading [B, S] dimensions (one K per camera)."
        )
    height, width = _check_image_size(image_size_hw)
    rotation, translation = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    return torch.cat(
        [translation, mat_to_quat(rotation), fov_h[..., None], fov_w[..., None]], dim=-1
    ).float()


def pose_encoding_to_extri_intri(
    pose_encoding: torch.Tensor,
    image_size_hw=None,
    pose_encoding_type: str = POSE_ENCODING_TYPE,
    build_intrinsics: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """VGGT pose encoding ``[B, S, 9]`` -> ``(extrinsics [B, S, 3, 4], intrinsics | None)``.

    ``R = quat_to_mat(q)`` (q need not be unit), ``extrinsics = [R | t]``, and when
    ``build_intrinsics`` is set ``K [B, S, 3, 3]`` has ``fy = (H/2) / tan(fov_h/2)``,
    ``fx = (W/2) / tan(fov_w/2)`` and principal point ``(W/2, H/2)``.
    ``image_size_hw = (H, W)`` is needed only to build intrinsics.
    """
    _check_encoding_type(pose_encoding_type)
    _check_trailing_shape(
        "pose_encoding", pose_encoding, (9,), "Expected [t(3), quat_xyzw(4), fov_h, fov_w]."
    )
    translation, quaternion = pose_encoding[..., :3], pose_encoding[..., 3:7]
    fov_h, fov_w = pose_encoding[..., 7], pose_encoding[..., 8]
    extrinsics = torch.cat([quat_to_mat(quaternion), translation[..., None]], dim=-1)
    if not build_intrinsics:
        return extrinsics, None

    height, width = _check_image_size(image_size_hw)
    intrinsics = pose_encoding.new_zeros(pose_encoding.shape[:-1] + (3, 3))
    intrinsics[..., 0, 0] = (width / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics[..., 1, 1] = (height / 2.0) / torch.tan(fov_h / 2.0)
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


# ---------------------------------------------------------------------------------------
# SE(3) and unprojection
# ---------------------------------------------------------------------------------------


def closed_form_inverse_se3(se3, R=None, T=None):
    """Invert a batch of rigid transforms without a general matrix inverse.

    ``[R | T]^-1 = [R^T | -R^T T]``.

    Args:
        se3: ``[N, 4, 4]`` or ``[N, 3, 4]`` NumPy array or torch tensor.
        R: optional ``[N, 3, 3]`` rotations (taken from ``se3`` when omitted).
        T: optional ``[N, 3, 1]`` translations (taken from ``se3`` when omitted).

    Returns:
        ``[N, 4, 4]`` inverses, same array type, dtype and device as ``se3``.
    """
    if se3.ndim != 3 or tuple(se3.shape[-2:]) not in ((4, 4), (3, 4)):
        raise ValueError(
            f"se3 must have shape [N, 4, 4] or [N, 3, 4], got {list(se3.shape)}. "
            "Add a leading batch axis for a single matrix (se3[None])."
        )
    R = se3[:, :3, :3] if R is None else R
    T = se3[:, :3, 3:] if T is None else T
    if isinstance(se3, np.ndarray):
        R_transposed = np.transpose(R, (0, 2, 1))
        inverse = np.tile(np.eye(4, dtype=se3.dtype), (len(R), 1, 1))
        inverse[:, :3, :3] = R_transposed
        inverse[:, :3, 3:] = -(R_transposed @ T)
        return inverse
    R_transposed = R.transpose(1, 2)
    inverse = torch.eye(4, dtype=R.dtype, device=R.device).repeat(len(R), 1, 1)
    inverse[:, :3, :3] = R_transposed
    inverse[:, :3, 3:] = -torch.bmm(R_transposed, T)
    return inverse


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def depth_to_cam_coords_points(depth_map: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Depth ``[H, W]`` -> camera-frame points ``[H, W, 3]`` (zero-skew pinhole).

    ``x = (u - cx) d / fx``, ``y = (v - cy) d / fy``, ``z = d`` with ``u = arange(W)``
    and ``v = arange(H)`` (no half-pixel offset).
    """
    if depth_map.ndim != 2:
        raise ValueError(f"depth_map must have shape [H, W], got {list(depth_map.shape)}.")
    if intrinsic.shape != (3, 3):
        raise ValueError(f"intrinsic must have shape [3, 3], got {list(intrinsic.shape)}.")
    if intrinsic[0, 1] != 0 or intrinsic[1, 0] != 0:
        raise ValueError("intrinsic must have zero skew (K[0,1] == K[1,0] == 0).")
    height, width = depth_map.shape
    fx, fy = intrinsic[0, 0], intrinsic[1, 1]
    cx, cy = intrinsic[0, 2], intrinsic[1, 2]
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    x_cam = (u - cx) * depth_map / fx
    y_cam = (v - cy) * depth_map / fy
    dtype = np.result_type(depth_map.dtype, np.float32)
    return np.stack((x_cam, y_cam, depth_map), axis=-1).astype(dtype, copy=False)


def depth_to_world_coords_points(
    depth_map: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray, eps: float = 1e-8
):
    """Depth ``[H, W]`` -> ``(world [H, W, 3], cam [H, W, 3], valid [H, W])``.

    ``world = R^T (cam - t)`` for the camera-from-world ``extrinsic = [R | t]`` ``[3, 4]``;
    ``valid = depth > eps``. Returns ``(None, None, None)`` when ``depth_map`` is None.
    """
    if depth_map is None:
        return None, None, None
    if extrinsic.shape != (3, 4):
        raise ValueError(
            f"extrinsic must have shape [3, 4] (camera-from-world), got {list(extrinsic.shape)}."
        )
    cam_points = depth_to_cam_coords_points(depth_map, intrinsic)
    world_from_cam = closed_form_inverse_se3(extrinsic[None])[0]
    world_points = cam_points @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    return world_points, cam_points, depth_map > eps


def unproject_depth_map_to_point_map(depth_map, extrinsics_cam, intrinsics_cam) -> np.ndarray:
    """Depth maps -> world point maps (NumPy out; torch inputs are converted).

    Args:
        depth_map: ``[S, H, W, 1]`` or ``[S, H, W]``.
        extrinsics_cam: ``[S, 3, 4]`` camera-from-world.
        intrinsics_cam: ``[S, 3, 3]``.

    Returns:
        ``[S, H, W, 3]`` world points, per frame ``R^T (K^-1 [u, v, 1]^T d - t)``.
    """
    depth_map = _as_numpy(depth_map)
    extrinsics_cam = _as_numpy(extrinsics_cam)
    intrinsics_cam = _as_numpy(intrinsics_cam)
    if depth_map.ndim == 4 and depth_map.shape[-1] == 1:
        depth_map = depth_map[..., 0]
    if depth_map.ndim != 3:
        raise ValueError(
            f"depth_map must have shape [S, H, W] or [S, H, W, 1], got {list(depth_map.shape)}."
        )
    num_frames = depth_map.shape[0]
    if extrinsics_cam.shape != (num_frames, 3, 4) or intrinsics_cam.shape != (num_frames, 3, 3):
        raise ValueError(
            f"expected extrinsics [{num_frames}, 3, 4] and intrinsics [{num_frames}, 3, 3] "
            f"for {num_frames} depth maps, got {list(extrinsics_cam.shape)} and "
            f"{list(intrinsics_cam.shape)}."
        )
    return np.stack([
        depth_to_world_coords_points(depth, extrinsic, intrinsic)[0]
        for depth, extrinsic, intrinsic in zip(depth_map, extrinsics_cam, intrinsics_cam)
    ])


def unproject_depth_torch(
    depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """Differentiable depth -> world points, same convention as the NumPy path.

    Args:
        depth: ``[..., H, W]``.
        extrinsics: ``[..., 3, 4]`` camera-from-world ``[R | t]``.
        intrinsics: ``[..., 3, 3]`` zero-skew ``K`` (skew is ignored).

    Returns:
        ``[..., H, W, 3]`` with ``world = R^T (cam - t)``, ``cam = ((u-cx) d/fx, (v-cy) d/fy, d)``.
    """
    _check_trailing_shape("extrinsics", extrinsics, (3, 4), "Expected camera-from-world [R|t].")
    _check_trailing_shape("intrinsics", intrinsics, (3, 3), "Expected pinhole K matrices.")
    if depth.ndim < 2 or depth.shape[:-2] != extrinsics.shape[:-2] \
            or depth.shape[:-2] != intrinsics.shape[:-2]:
        raise ValueError(
            f"depth [..., H, W] {list(depth.shape)}, extrinsics {list(extrinsics.shape)} and "
            f"intrinsics {list(intrinsics.shape)} must share their leading dimensions. "
            "Squeeze a trailing depth channel with depth[..., 0]."
        )
    height, width = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=depth.dtype, device=depth.device),
        torch.arange(width, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    per_pixel = intrinsics[..., None, None, :, :]  # [..., 1, 1, 3, 3]
    x_cam = (u - per_pixel[..., 0, 2]) * depth / per_pixel[..., 0, 0]
    y_cam = (v - per_pixel[..., 1, 2]) * depth / per_pixel[..., 1, 1]
    cam_points = torch.stack((x_cam, y_cam, depth), dim=-1)
    rotation = extrinsics[..., None, None, :3, :3]
    translation = extrinsics[..., None, None, :3, 3]
    # Row-vector form of R^T (cam - t): (cam - t) @ R.
    return ((cam_points - translation)[..., None, :] @ rotation)[..., 0, :]
