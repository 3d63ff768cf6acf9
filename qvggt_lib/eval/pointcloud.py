"""Point-cloud reconstruction on 7-Scenes and NRGBD: the protocol of QuantVGGT's Table 3.

QuantVGGT (``evaluation/run_7andN.py``) scores VGGT's point maps with the multi-view
reconstruction evaluation of Spann3R and CUT3R (docs/pointcloud_eval.md has the sources). Per
sequence of keyframes (every ``kf_every``-th frame):

1. Ground truth: the dataset depth unprojected on the model input's pixels, moved into the first
   camera's frame (VGGT's world frame); only pixels with valid depth count.
2. Scale and shift (upstream's ``Regr3D_t_ScaleShiftInv(norm_mode=False, gt_scale=True)``): each
   cloud's median z is subtracted, then the prediction is scaled by ``s_gt / s_pred`` with
   ``s = median |P - median(P)|`` (``s_pred`` clipped to [1e-3, 1e3]). Medians are over the valid
   pixels of all frames and, as torch's, the lower middle value.
3. Only the central window of each frame is kept: 224 x 224 pixels of a 518-wide input, scaled
   with the width for other input sizes.
4. Point-to-point ICP of the prediction onto the ground truth (open3d's ``registration_icp``:
   threshold 0.1 m, identity start, at most 30 iterations, stop when fitness and inlier RMSE change
   by less than 1e-6).
5. Normals of both clouds by PCA of the 30 nearest neighbours (open3d's ``estimate_normals()``).
6. Accuracy: distance from each predicted point to its nearest ground-truth point; completeness:
   the reverse; normal consistency ``|n . n_nearest|`` in each direction. Means and medians; nc is
   the average of the two directions' values (upstream's ``nc1``, ``nc2``). Distances in metres.

``evaluate_pointclouds`` averages the per-sequence numbers over all sequences (as upstream).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..data.rgbd_scenes import open_dataset
from ..metrics import _nearest_neighbour_stats, umeyama_sim3
from .evaluate import FIDELITY_KEYS, POSE_FIDELITY_KEYS, fidelity_metrics, predict_scene

METRIC_KEYS = ("acc", "acc_med", "comp", "comp_med", "nc", "nc_med")
WINDOW_HALF_AT_518 = (
    112  # upstream keeps pixels [c - 112, c + 112) around the centre of a 518-wide input
)
REFERENCE_WIDTH = 518
PRED_SCALE_RANGE = (1e-3, 1e3)
ICP_THRESHOLD_M = 0.1
ICP_MAX_ITERATIONS = 30
ICP_RELATIVE_CHANGE = 1e-6  # open3d's relative_fitness and relative_rmse defaults
NORMAL_NEIGHBOURS = 30
MAX_POINTS = 999_999  # upstream subsamples larger clouds to this many points
NORMAL_CHUNK = 65_536  # points per batch of normal estimation (bounds the memory)


def to_first_camera(world_points, extrinsics) -> np.ndarray:
    """World points ``[..., 3]`` in the frame of the camera ``extrinsics[0] = [R | t]``: ``R x + t``."""
    first = np.asarray(extrinsics, dtype=np.float64)[0]
    return np.asarray(world_points, dtype=np.float64) @ first[:, :3].T + first[:, 3]


def _lower_median(values: np.ndarray) -> np.ndarray:
    """Median along axis 0 taking the lower middle value for an even count (torch.median's rule)."""
    middle = (len(values) - 1) // 2
    return np.partition(values, middle, axis=0)[middle]


def _spread(points: np.ndarray) -> float:
    """``median |p - median(p)|`` of points ``[N, 3]`` (per-axis median centre)."""
    return float(_lower_median(np.linalg.norm(points - _lower_median(points), axis=1)))


def normalize_scale_shift(pred_points, gt_points, valid) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's scale and shift alignment (step 2 of the module docstring).

    Returns ``(pred, gt)`` with ``gt_z -= median(gt_z)``, ``pred_z -= median(pred_z)`` and then
    ``pred *= s_gt / clip(s_pred)``, statistics over ``valid`` pixels.
    """
    pred = np.array(pred_points, dtype=np.float64)
    gt = np.array(gt_points, dtype=np.float64)
    for cloud in (pred, gt):
        cloud[..., 2] -= _lower_median(cloud[valid][:, 2])
    pred *= _spread(gt[valid]) / np.clip(_spread(pred[valid]), *PRED_SCALE_RANGE)
    return pred, gt


def central_window(height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the central evaluation window of an ``height x width`` map (step 3)."""
    half = round(WINDOW_HALF_AT_518 * width / REFERENCE_WIDTH)
    rows = slice(max(height // 2 - half, 0), height // 2 + half)
    cols = slice(max(width // 2 - half, 0), width // 2 + half)
    return rows, cols


def _rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[4, 4]`` least-squares rotation and translation (Umeyama without scale) taking source to target."""
    _, rotation, _ = umeyama_sim3(source, target)
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = target.mean(axis=0) - rotation @ source.mean(axis=0)
    return transform


def icp_point_to_point(
    source, target, threshold: float = ICP_THRESHOLD_M, max_iterations: int = ICP_MAX_ITERATIONS
) -> np.ndarray:
    """``[4, 4]`` rigid transform aligning ``source [N, 3]`` onto ``target [M, 3]``, as open3d's ICP.

    Each iteration pairs every moved source point with its nearest target point if closer than
    ``threshold``, fits a rotation and translation to the pairs and composes it; it stops after
    ``max_iterations`` or when the pairs' fitness (share of paired source points) and RMSE both
    change by less than 1e-6. Fewer than 3 pairs end it (open3d returns identity for none).
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    tree = cKDTree(target)

    def pair(points: np.ndarray):
        distances, nearest = tree.query(points, distance_upper_bound=threshold)
        paired = np.isfinite(distances)
        rmse = float(np.sqrt(np.mean(distances[paired] ** 2))) if paired.any() else 0.0
        return paired, nearest, float(paired.mean()), rmse

    transform, moved = np.eye(4), source
    paired, nearest, fitness, rmse = pair(moved)
    for _ in range(max_iterations):
        if paired.sum() < 3:
            break
        update = _rigid_fit(moved[paired], target[nearest[paired]])
        transform, moved = update @ transform, moved @ update[:3, :3].T + update[:3, 3]
        previous = (fitness, rmse)
        paired, nearest, fitness, rmse = pair(moved)
        if (
            abs(previous[0] - fitness) < ICP_RELATIVE_CHANGE
            and abs(previous[1] - rmse) < ICP_RELATIVE_CHANGE
        ):
            break
    return transform


def estimate_normals(points, neighbours: int = NORMAL_NEIGHBOURS) -> np.ndarray:
    """Unit normals ``[N, 3]``: the least-variance axis of each point's ``neighbours`` nearest points
    (itself included), as open3d's ``estimate_normals()`` (sign arbitrary; (0, 0, 1) where they coincide)."""
    points = np.asarray(points, np.float64)
    count = min(neighbours, len(points))
    tree = cKDTree(points)
    normals = np.empty_like(points)
    for start in range(0, len(points), NORMAL_CHUNK):
        _, nearest = tree.query(points[start : start + NORMAL_CHUNK], k=count)
        group = points[nearest.reshape(len(nearest), count)]
        centred = group - group.mean(axis=1, keepdims=True)
        covariance = np.einsum("nki,nkj->nij", centred, centred) / count
        normals[start : start + NORMAL_CHUNK] = np.linalg.eigh(covariance)[1][:, :, 0]
        normals[start : start + NORMAL_CHUNK][~covariance.any(axis=(1, 2))] = (0.0, 0.0, 1.0)
    return normals


def cloud_metrics(pred_cloud, gt_cloud) -> dict[str, float]:
    """Accuracy, completeness and normal consistency of two aligned clouds ``[N, 3]``, ``[M, 3]`` (step 6)."""
    pred_cloud, gt_cloud = np.asarray(pred_cloud, np.float64), np.asarray(gt_cloud, np.float64)
    pred = (pred_cloud, estimate_normals(pred_cloud), np.ones(len(pred_cloud), bool))
    gt = (gt_cloud, estimate_normals(gt_cloud), np.ones(len(gt_cloud), bool))
    acc, nc_acc = _nearest_neighbour_stats(*pred, *gt)
    comp, nc_comp = _nearest_neighbour_stats(*gt, *pred)
    return {
        "acc": float(np.mean(acc)),
        "acc_med": float(np.median(acc)),
        "comp": float(np.mean(comp)),
        "comp_med": float(np.median(comp)),
        "nc": float(np.mean(nc_acc) + np.mean(nc_comp)) / 2,
        "nc_med": float(np.median(nc_acc) + np.median(nc_comp)) / 2,
    }


def pointcloud_metrics(pred_points, gt_points, valid, seed: int = 0) -> dict[str, float]:
    """The protocol's metrics of one sequence (steps 2 to 6 of the module docstring).

    Args:
        pred_points: ``[S, H, W, 3]`` predicted world points (VGGT's: first camera's frame).
        gt_points: ``[S, H, W, 3]`` ground truth in the first camera's frame (``to_first_camera``).
        valid: ``[S, H, W]`` pixels with ground-truth depth.
        seed: picks the ``MAX_POINTS`` pixels kept when a window holds more (one subset for both clouds).

    Returns:
        ``METRIC_KEYS`` (metres; nc in [0, 1]) and ``num_points``.
    """
    pred_points, gt_points = np.asarray(pred_points, np.float64), np.asarray(gt_points, np.float64)
    if pred_points.ndim != 4 or pred_points.shape[-1] != 3 or pred_points.shape != gt_points.shape:
        raise ValueError(
            f"pred_points and gt_points must both be [S, H, W, 3], got {list(pred_points.shape)} "
            f"and {list(gt_points.shape)}"
        )
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != gt_points.shape[:-1]:
        raise ValueError(
            f"valid must be [S, H, W] = {list(gt_points.shape[:-1])}, got {list(valid.shape)}"
        )
    valid = valid & np.isfinite(pred_points).all(axis=-1) & np.isfinite(gt_points).all(axis=-1)
    rows, cols = central_window(*valid.shape[1:])
    window = np.zeros_like(valid)
    window[:, rows, cols] = True
    if (valid & window).sum() < NORMAL_NEIGHBOURS:
        raise ValueError(
            f"only {(valid & window).sum()} valid ground-truth points in the central windows; "
            f"the protocol needs at least {NORMAL_NEIGHBOURS}"
        )
    pred, gt = normalize_scale_shift(pred_points, gt_points, valid)
    pixels = np.flatnonzero(valid & window)
    if len(pixels) > MAX_POINTS:
        pixels = np.sort(np.random.default_rng(seed).choice(pixels, MAX_POINTS, replace=False))
    pred_cloud, gt_cloud = pred.reshape(-1, 3)[pixels], gt.reshape(-1, 3)[pixels]
    transform = icp_point_to_point(pred_cloud, gt_cloud)
    pred_cloud = pred_cloud @ transform[:3, :3].T + transform[:3, 3]
    return {**cloud_metrics(pred_cloud, gt_cloud), "num_points": len(pixels)}


def evaluate_pointclouds(
    model: torch.nn.Module,
    dataset: str,
    root,
    scenes=None,
    kf_every: int | None = None,
    image_size: int | None = None,
    reference: list[dict] | None = None,
    keep_predictions: bool = False,
    progress: bool = True,
    max_sequences: int | None = None,
) -> dict:
    """Mean point-cloud metrics of ``model`` over the test sequences of ``dataset`` under ``root``.

    Args:
        dataset: ``"7scenes"`` or ``"nrgbd"`` (raw layouts in ``qvggt_lib.data.rgbd_scenes``).
        scenes: scene names to keep (all when None); ``max_sequences`` keeps the first N sequences.
        kf_every: keyframe stride (dataset default 100, QuantVGGT's).
        image_size: model input width (default ``model.config.img_size``), crop preprocessing.
        reference: one ``predict_scene`` dict per sequence from a reference (e.g. float) model,
            ``evaluate_pointclouds(reference_model, ..., keep_predictions=True)["predictions"]``.

    Returns:
        ``METRIC_KEYS`` averaged over sequences; ``per_sequence`` (``sequence``, ``frames``,
        ``num_points`` and the metrics); ``dataset``, ``kf_every``, ``image_size``,
        ``num_sequences``; with ``reference``: ``fidelity``, the sequence means of ``FIDELITY_KEYS``
        and ``POSE_FIDELITY_KEYS`` of ``qvggt_lib.eval.evaluate`` over valid pixels; with
        ``keep_predictions``: ``predictions``. Deterministic.
    """
    from tqdm.auto import tqdm

    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be a positive integer or None, got {max_sequences!r}")
    data = open_dataset(dataset, root)
    sequences = data.list_sequences(scenes)[:max_sequences]
    if not sequences:
        raise ValueError(f"no {data.name} test sequences under {root} (scenes={scenes!r})")
    if reference is not None and len(reference) != len(sequences):
        raise ValueError(
            f"reference has predictions for {len(reference)} sequences, evaluation uses "
            f"{len(sequences)}; make it with keep_predictions=True on the same sequences"
        )
    size = int(image_size or model.config.img_size)
    kf_every = data.default_kf_every if kf_every is None else kf_every
    per_sequence, fidelity, predictions = [], [], []
    for index, sequence in enumerate(
        tqdm(sequences, desc=dataset, unit="seq", disable=not progress)
    ):
        gt = data.load_sequence(sequence, image_size=size, kf_every=kf_every)
        if len(gt["frames"]) < 2:
            raise ValueError(
                f"{sequence} gives {len(gt['frames'])} keyframe with kf_every={kf_every}; "
                "multi-view reconstruction needs at least 2: lower kf_every"
            )
        pred = predict_scene(model, gt["images"])
        gt_points = to_first_camera(gt["world_points"], gt["extrinsics"])
        per_sequence.append(
            {
                "sequence": sequence,
                "frames": gt["frames"],
                **pointcloud_metrics(pred["world_points"], gt_points, gt["valid"]),
            }
        )
        if reference is not None:
            if reference[index]["depth"].shape != pred["depth"].shape:
                raise ValueError(
                    f"reference for {sequence} has depth {reference[index]['depth'].shape}, this "
                    f"model {pred['depth'].shape}: use the same sequences, kf_every and image_size"
                )
            fidelity.append(fidelity_metrics(pred, reference[index], gt["valid"]))
        if keep_predictions:
            predictions.append(pred)
    results = {key: float(np.mean([seq[key] for seq in per_sequence])) for key in METRIC_KEYS}
    if reference is not None:
        results["fidelity"] = {
            key: float(np.mean([f[key] for f in fidelity]))
            for key in (*FIDELITY_KEYS, *POSE_FIDELITY_KEYS)
        }
    if keep_predictions:
        results["predictions"] = predictions
    return {
        **results,
        "per_sequence": per_sequence,
        "dataset": dataset,
        "kf_every": kf_every,
        "image_size": size,
        "num_sequences": len(sequences),
    }
