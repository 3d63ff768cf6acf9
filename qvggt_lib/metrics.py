"""Reconstruction metrics following the VGGT / QuantVGGT evaluation protocols.

* Camera pose: VGGT's Co3D protocol (``evaluation/test_co3d.py``): relative poses over
  all frame pairs, rotation and translation-direction angles, AUC of their maximum.
* Depth: per-frame median-scaled AbsRel and delta < 1.25.
* Point maps: Sim(3) (Umeyama) alignment, then accuracy, completeness and normal
  consistency as in the DUSt3R / CUT3R 7-Scenes evaluation.

Inputs are NumPy arrays or torch tensors (converted to float64 NumPy). Extrinsics are
camera-from-world ``[S, 3, 4]`` in OpenCV axes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from qvggt_lib.geometry import closed_form_inverse_se3, mat_to_quat

AUC_THRESHOLDS_DEG = (30, 15, 5, 3)
ACCURACY_THRESHOLD_DEG = 30
DEPTH_EPS = 1e-6


def _to_float64(name: str, array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array or tensor, got dtype object.")
    return array.astype(np.float64)


def _to_bool(name: str, array, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array).astype(bool)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(array.shape)}.")
    return array


def _drop_channel(array: np.ndarray) -> np.ndarray:
    """``[S, H, W, 1]`` -> ``[S, H, W]``; other shapes unchanged."""
    return array[..., 0] if array.ndim == 4 and array.shape[-1] == 1 else array


# ---------------------------------------------------------------------------------------
# Camera pose
# ---------------------------------------------------------------------------------------


def _to_homogeneous(extrinsics: np.ndarray) -> np.ndarray:
    """``[S, 3, 4]`` -> ``[S, 4, 4]`` by appending the row ``[0, 0, 0, 1]``."""
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (len(extrinsics), 1, 4))
    return np.concatenate([extrinsics, bottom], axis=1)


def _check_extrinsics(name: str, extrinsics: np.ndarray) -> None:
    if extrinsics.ndim != 3 or extrinsics.shape[1:] != (3, 4):
        raise ValueError(
            f"{name} must have shape [S, 3, 4] (camera-from-world), got "
            f"{list(extrinsics.shape)}. Drop the batch axis (x[0]) or the homogeneous row."
        )


def relative_pose_errors(pred_extrinsics, gt_extrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Angular errors of all ``P = S(S-1)/2`` relative poses, in degrees.

    For each pair ``i < j`` (lexicographic order) the relative pose is
    ``T_ij = T_i T_j^-1`` (4x4 camera-from-world ``T``), for prediction and ground truth.

    * rotation: ``arccos(1 - 2 (1 - <q_pred, q_gt>^2))``, the angle of
      ``R_pred R_gt^T`` computed from unit quaternions;
    * translation: the angle ``e`` between the unit translation directions, folded to
      ``min(e, 180 - e)`` because the direction sign is ambiguous. A zero translation has no
      direction; it is treated as orthogonal to the other, giving 90 (as upstream), not NaN.

    Args:
        pred_extrinsics, gt_extrinsics: ``[S, 3, 4]`` with ``S >= 2``.

    Returns:
        ``(rot_err_deg [P], trans_err_deg [P])``.
    """
    pred = _to_float64("pred_extrinsics", pred_extrinsics)
    gt = _to_float64("gt_extrinsics", gt_extrinsics)
    _check_extrinsics("pred_extrinsics", pred)
    _check_extrinsics("gt_extrinsics", gt)
    if pred.shape != gt.shape or len(pred) < 2:
        raise ValueError(
            f"need the same number S >= 2 of predicted and ground-truth cameras, got "
            f"{len(pred)} and {len(gt)}."
        )
    first, second = np.triu_indices(len(pred), k=1)

    def relative(extrinsics: np.ndarray) -> np.ndarray:
        se3 = _to_homogeneous(extrinsics)
        return se3[first] @ closed_form_inverse_se3(se3[second])

    rel_pred, rel_gt = relative(pred), relative(gt)
    q_pred = mat_to_quat(torch.from_numpy(rel_pred[:, :3, :3])).numpy()
    q_gt = mat_to_quat(torch.from_numpy(rel_gt[:, :3, :3])).numpy()
    one_minus_cos_sq = np.clip(1.0 - np.sum(q_pred * q_gt, axis=-1) ** 2, 0.0, 1.0)
    rot_err = np.degrees(np.arccos(1.0 - 2.0 * one_minus_cos_sq))

    def unit(vectors: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    cos_t = np.clip(np.sum(unit(rel_pred[:, :3, 3]) * unit(rel_gt[:, :3, 3]), axis=-1), -1, 1)
    trans_err = np.degrees(np.arccos(cos_t))
    return rot_err, np.minimum(trans_err, 180.0 - trans_err)


def pose_auc(errors_deg, max_threshold: int) -> float:
    """Area under the accuracy-vs-threshold curve up to ``max_threshold`` degrees, in percent.

    ``100 * mean_k(cumsum(histogram(errors, bins=[0, 1, ..., max_threshold]) / P)[k])``,
    i.e. the fraction of the ``P`` errors below ``k + 1`` degrees averaged over the
    ``max_threshold`` integer thresholds (NumPy's last bin includes its right edge).
    """
    errors = _to_float64("errors_deg", errors_deg).reshape(-1)
    if errors.size == 0:
        raise ValueError("errors_deg is empty; pose AUC needs at least one camera pair.")
    if int(max_threshold) != max_threshold or max_threshold < 1:
        raise ValueError(f"max_threshold must be a positive integer, got {max_threshold!r}.")
    histogram, _ = np.histogram(errors, bins=np.arange(int(max_threshold) + 1))
    return float(np.mean(np.cumsum(histogram / errors.size)) * 100.0)


def rotation_angles_deg(extrinsics, reference) -> np.ndarray:
    """[S] angles between the rotations of two camera sets [S, 3, 4], from
    ``||R - R_ref||_F = 2 sqrt(2) sin(angle / 2)`` (exact near 0, unlike arccos of the trace)."""
    rot = np.asarray(extrinsics, np.float64)[:, :, :3]
    rot_ref = np.asarray(reference, np.float64)[:, :, :3]
    half_sin = np.linalg.norm(rot - rot_ref, axis=(1, 2)) / (2 * np.sqrt(2))
    return np.degrees(2 * np.arcsin(np.clip(half_sin, 0, 1)))


def camera_metrics(pred_extrinsics, gt_extrinsics) -> dict[str, float]:
    """Co3D-style pose metrics of one sequence, all in percent.

    Per pair error ``max(rot_err, trans_err)`` feeds ``auc30, auc15, auc5, auc3``;
    ``rra30`` / ``rta30`` are the percentages of pairs with rotation / translation error
    below 30 degrees.
    """
    rot_err, trans_err = relative_pose_errors(pred_extrinsics, gt_extrinsics)
    pair_err = np.maximum(rot_err, trans_err)
    metrics = {f"auc{t}": pose_auc(pair_err, t) for t in AUC_THRESHOLDS_DEG}
    limit = ACCURACY_THRESHOLD_DEG
    metrics[f"rra{limit}"] = float(np.mean(rot_err < limit) * 100)
    metrics[f"rta{limit}"] = float(np.mean(trans_err < limit) * 100)
    return metrics


# ---------------------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------------------


def depth_metrics(pred_depth, gt_depth, valid) -> dict[str, float]:
    """Median-scaled depth errors over valid pixels.

    Per frame, ``p = max(pred, eps) * median(g) / median(max(pred, eps))`` over that frame's
    valid pixels (``valid & g > 0``). Over all valid pixels of all frames:

    * ``depth_abs_rel = mean(|p - g| / g)``;
    * ``depth_delta1`` = fraction (in [0, 1], not percent) with ``max(p/g, g/p) < 1.25``.

    Args:
        pred_depth, gt_depth: ``[S, H, W]`` (a trailing channel of 1 is accepted).
        valid: ``[S, H, W]`` boolean mask of pixels with trusted ground truth.
    """
    pred = _drop_channel(_to_float64("pred_depth", pred_depth))
    gt = _drop_channel(_to_float64("gt_depth", gt_depth))
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"pred_depth and gt_depth must both have shape [S, H, W], got "
            f"{list(pred.shape)} and {list(gt.shape)}."
        )
    valid = _to_bool("valid", valid, gt.shape) & np.isfinite(pred) & np.isfinite(gt) & (gt > 0)
    if not valid.any():
        raise ValueError("no valid pixels: check the mask and that gt_depth has positive values.")
    pred = np.maximum(pred, DEPTH_EPS)
    aligned, target = [], []
    for frame_pred, frame_gt, frame_valid in zip(pred, gt, valid):
        if frame_valid.any():
            p, g = frame_pred[frame_valid], frame_gt[frame_valid]
            aligned.append(p * (np.median(g) / np.median(p)))
            target.append(g)
    p, g = np.concatenate(aligned), np.concatenate(target)
    return {
        "depth_abs_rel": float(np.mean(np.abs(p - g) / g)),
        "depth_delta1": float(np.mean(np.maximum(p / g, g / p) < 1.25)),
    }


# ---------------------------------------------------------------------------------------
# Point maps
# ---------------------------------------------------------------------------------------


def umeyama_sim3(src, dst) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``(s, R, t)`` minimizing ``sum |dst - (s R src + t)|^2``.

    Umeyama (1991): with centred clouds and ``Sigma = dst_c^T src_c / N = U D V^T``,
    ``R = U F V^T`` where ``F = diag(1, 1, sign(det U det V))`` rules out reflections,
    ``s = trace(D F) / mean |src_c|^2`` and ``t = mean(dst) - s R mean(src)``.

    Args:
        src, dst: ``[N, 3]`` corresponding points, ``N >= 3``.

    Returns:
        ``(scale, R [3, 3], t [3])``.
    """
    src = _to_float64("src", src)
    dst = _to_float64("dst", dst)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape or len(src) < 3:
        raise ValueError(
            f"src and dst must be corresponding [N, 3] point sets with N >= 3, got "
            f"{list(src.shape)} and {list(dst.shape)}."
        )
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = np.mean(np.sum(src_c**2, axis=1))
    if src_var <= 0:
        raise ValueError("src points all coincide; a similarity transform is undefined.")
    U, D, Vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    fix = np.ones(3)
    fix[2] = np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0
    rotation = U @ np.diag(fix) @ Vt
    scale = float(np.sum(D * fix) / src_var)
    return scale, rotation, dst_mean - scale * rotation @ src_mean


def _normal_map(points: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``[S, H, W, 3]`` and their validity ``[S, H, W]`` from a point map.

    ``n = normalize((P[v, u+1] - P[v, u-1]) x (P[v+1, u] - P[v-1, u]))`` with edge
    replication at the image border; a normal is valid when the pixel and its four
    neighbours are valid and the cross product is non-zero.
    """
    pad = ((0, 0), (1, 1), (1, 1))
    padded_points = np.pad(points, pad + ((0, 0),), mode="edge")
    padded_valid = np.pad(valid, pad, mode="edge")
    d_u = padded_points[:, 1:-1, 2:] - padded_points[:, 1:-1, :-2]
    d_v = padded_points[:, 2:, 1:-1] - padded_points[:, :-2, 1:-1]
    normals = np.cross(d_u, d_v)
    norms = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.divide(normals, norms, out=np.zeros_like(normals), where=norms > 0)
    neighbours_valid = (
        padded_valid[:, 1:-1, 2:] & padded_valid[:, 1:-1, :-2]
        & padded_valid[:, 2:, 1:-1] & padded_valid[:, :-2, 1:-1]
    )
    return normals, valid & neighbours_valid & (norms[..., 0] > 0)


def _nearest_neighbour_stats(
    query_points, query_normals, query_normal_ok, ref_points, ref_normals, ref_normal_ok
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest reference point ``[M]`` and ``|cos|`` of normal pairs ``[K]``.

    ``|cos|`` is kept only where both the query normal and its neighbour's normal are valid.
    """
    distances, nearest = cKDTree(ref_points).query(query_points)
    both_ok = query_normal_ok & ref_normal_ok[nearest]
    abs_cos = np.abs(np.sum(query_normals[both_ok] * ref_normals[nearest[both_ok]], axis=-1))
    return distances, abs_cos


def point_metrics(
    pred_points, gt_points, valid, max_points: int = 20000, seed: int = 0
) -> dict[str, float]:
    """Accuracy, completeness and normal consistency after Sim(3) alignment.

    1. ``(s, R, t) = umeyama_sim3(pred[valid], gt[valid])``; ``pred <- s R pred + t``.
    2. Normals of both maps from image-space central differences (see ``_normal_map``).
    3. The same ``max_points`` valid pixels (seeded, without replacement) are kept in both
       clouds.
    4. accuracy = distance from each predicted point to its nearest gt point;
       completeness = distance from each gt point to its nearest predicted point;
       normal consistency = ``|cos|`` between a point's normal and its nearest neighbour's,
       averaged over both directions (as CUT3R does).

    Args:
        pred_points, gt_points: ``[S, H, W, 3]`` world point maps.
        valid: ``[S, H, W]`` boolean mask of trusted ground-truth pixels.

    Returns:
        ``point_acc, point_comp, point_nc`` (means) and ``point_acc_med, point_comp_med,
        point_nc_med`` (medians); distances are in ground-truth units.
    """
    pred = _to_float64("pred_points", pred_points)
    gt = _to_float64("gt_points", gt_points)
    if pred.ndim != 4 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"pred_points and gt_points must both have shape [S, H, W, 3], got "
            f"{list(pred.shape)} and {list(gt.shape)}."
        )
    valid = _to_bool("valid", valid, gt.shape[:-1])
    valid &= np.isfinite(pred).all(axis=-1) & np.isfinite(gt).all(axis=-1)
    if valid.sum() < 3:
        raise ValueError("fewer than 3 valid points; Sim(3) alignment needs at least 3.")

    scale, rotation, translation = umeyama_sim3(pred[valid], gt[valid])
    pred = scale * pred @ rotation.T + translation
    pred_normals, pred_normal_ok = _normal_map(pred, valid)
    gt_normals, gt_normal_ok = _normal_map(gt, valid)

    pixels = np.flatnonzero(valid)
    if len(pixels) > max_points:
        rng = np.random.default_rng(seed)
        pixels = np.sort(rng.choice(pixels, size=max_points, replace=False))

    def take(array: np.ndarray) -> np.ndarray:
        return array.reshape((-1,) + array.shape[valid.ndim:])[pixels]

    pred_cloud = (take(pred), take(pred_normals), take(pred_normal_ok))
    gt_cloud = (take(gt), take(gt_normals), take(gt_normal_ok))
    acc, nc_acc = _nearest_neighbour_stats(*pred_cloud, *gt_cloud)
    comp, nc_comp = _nearest_neighbour_stats(*gt_cloud, *pred_cloud)

    def mean_or_nan(values: np.ndarray, reduce) -> float:
        return float(reduce(values)) if values.size else float("nan")

    return {
        "point_acc": float(np.mean(acc)),
        "point_comp": float(np.mean(comp)),
        "point_nc": (mean_or_nan(nc_acc, np.mean) + mean_or_nan(nc_comp, np.mean)) / 2,
        "point_acc_med": float(np.median(acc)),
        "point_comp_med": float(np.median(comp)),
        "point_nc_med": (mean_or_nan(nc_acc, np.median) + mean_or_nan(nc_comp, np.median)) / 2,
    }


# ---------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------

PRED_KEYS = ("extrinsics", "depth", "world_points")
GT_KEYS = ("extrinsics", "depth", "world_points", "valid")


def reconstruction_metrics(pred: dict, gt: dict) -> dict[str, float]:
    """Camera, depth and point metrics of one sequence in a single dict.

    Args:
        pred: ``extrinsics [S, 3, 4]``, ``depth [S, H, W]``, ``world_points [S, H, W, 3]``.
        gt: the same keys plus ``valid [S, H, W]`` (used for depth and points).

    Returns:
        The union of ``camera_metrics``, ``depth_metrics`` and ``point_metrics``.
    """
    for name, given, required in (("pred", pred, PRED_KEYS), ("gt", gt, GT_KEYS)):
        missing = [key for key in required if key not in given]
        if missing:
            raise ValueError(f"{name} is missing keys {missing}; it needs {list(required)}.")
    return {
        **camera_metrics(pred["extrinsics"], gt["extrinsics"]),
        **depth_metrics(pred["depth"], gt["depth"], gt["valid"]),
        **point_metrics(pred["world_points"], gt["world_points"], gt["valid"]),
    }
