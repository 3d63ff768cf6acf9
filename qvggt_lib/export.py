"""A prediction on your own images, written out: every output in a ``.npz``, a coloured point cloud in a ``.ply``.

    save_predictions(pred, images, path)        -> .npz with PREDICTION_KEYS + images (+ image_paths)
    colored_points(pred, images, source, keep)  -> points [N, 3] and colours [N, 3] uint8
    write_ply(path, points, colors)             -> binary little-endian PLY (x y z red green blue)

Points come from one of VGGT's two branches, as its demo offers them: ``"depth"`` unprojects each
depth map with the predicted camera (x_world = R^T (d K^-1 [u, v, 1]^T - t); usually the more
accurate), ``"point_map"`` takes the point head's world points. A pixel is kept when its
confidence (depth_conf or world_points_conf) is at least the ``keep``-quantile of that map over all
frames (keep = 0.5: the more confident half, VGGT demo's default percentile of 50).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from .geometry import unproject_depth_map_to_point_map

PREDICTION_KEYS = ("extrinsics", "intrinsics", "depth", "depth_conf", "world_points", "world_points_conf")
POINT_SOURCES = {"depth": "depth_conf", "point_map": "world_points_conf"}


def save_predictions(pred: dict, images, path, image_paths=None) -> Path:
    """Write ``PREDICTION_KEYS`` of ``pred`` (predict_scene's output), the preprocessed ``images``
    [S, 3, H, W] in [0, 1] and, if given, the source ``image_paths`` to an uncompressed ``.npz``."""
    missing = [key for key in PREDICTION_KEYS if key not in pred]
    if missing:
        raise ValueError(f"pred lacks {missing}; pass predict_scene(model, images)'s output")
    arrays = {key: np.asarray(pred[key], np.float32) for key in PREDICTION_KEYS}
    arrays["images"] = np.asarray(images, np.float32)
    if image_paths is not None:
        arrays["image_paths"] = np.array([str(p) for p in image_paths])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def colored_points(pred: dict, images, source: str = "depth", keep: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The confident points of one scene and their colours (see the module docstring)."""
    if source not in POINT_SOURCES:
        raise ValueError(f"source must be one of {sorted(POINT_SOURCES)}, got {source!r}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be the fraction of pixels to keep, in (0, 1], got {keep}")
    if source == "depth":
        points = unproject_depth_map_to_point_map(pred["depth"], pred["extrinsics"], pred["intrinsics"])
    else:
        points = np.asarray(pred["world_points"], np.float64)
    confidence = np.asarray(pred[POINT_SOURCES[source]], np.float64)
    mask = (confidence >= np.quantile(confidence, 1 - keep)) & np.isfinite(points).all(axis=-1)
    colors = np.round(np.clip(np.moveaxis(np.asarray(images, np.float64), 1, -1), 0, 1) * 255).astype(np.uint8)
    return points[mask].astype(np.float32), colors[mask]


def write_ply(path, points, colors) -> Path:
    """A binary little-endian PLY of ``points`` [N, 3] (float32 x, y, z) and ``colors`` [N, 3] (uint8 rgb)."""
    points, colors = np.asarray(points, np.float32), np.asarray(colors)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [N, 3], got {points.shape} and {colors.shape}")
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colors[:, i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(path))
    return path
