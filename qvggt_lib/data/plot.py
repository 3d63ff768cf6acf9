"""Figures of rendered scenes: images, depth maps, coloured point cloud and camera frustums."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

MAX_POINTS = 4000
FRUSTUM_SCALE = 0.5  # frustum depth in world units


def camera_frustum(
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    height: int,
    width: int,
    scale: float = FRUSTUM_SCALE,
) -> np.ndarray:
    """Polyline [10, 3] through the camera centre C = -R^T t and the image corners at depth `scale`,
    X = R^T (scale K^-1 (u, v, 1) - t) for (u, v) in {0, W-1} x {0, H-1}."""
    rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
    pixels = np.array(
        [[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]],
        dtype=np.float64,
    )
    corners = (scale * pixels @ np.linalg.inv(intrinsic).T - translation) @ rotation
    centre = -translation @ rotation
    a, b, c, d = corners
    return np.stack([a, b, c, d, a, centre, b, c, centre, d])


def _draw_cameras(ax, extrinsics, intrinsics, height, width, colour, label):
    for index, (extrinsic, intrinsic) in enumerate(zip(extrinsics, intrinsics, strict=True)):
        line = camera_frustum(extrinsic, intrinsic, height, width)
        ax.plot(*line.T, color=colour, linewidth=1.0, label=label if index == 0 else None)


def plot_scene(scene: dict, pred: dict | None = None, max_frames: int = 4) -> Figure:
    """Figure with rows of the first min(S, max_frames) images, their depth maps and, if `pred` has
    "depth" [S, H, W], the predicted depth (same colour scale); a 3-D panel shows the valid world
    points (subsampled to MAX_POINTS, coloured by the images) with the camera frustums, and the
    predicted cameras pred["extrinsics"] [S, 3, 4] (world frame of the scene, GT intrinsics unless
    pred["intrinsics"]) in red. Arrays may be numpy or CPU torch tensors.
    """
    scene = {key: np.asarray(value) for key, value in scene.items()}
    pred = {key: np.asarray(value) for key, value in (pred or {}).items()}
    images, depth = scene["images"], scene["depth"]
    num_shown = min(len(images), max_frames)
    height, width = depth.shape[1:]
    rows = [("image", None), ("depth", depth)] + (
        [("predicted depth", pred["depth"])] if "depth" in pred else []
    )
    fig = plt.figure(figsize=(2.4 * num_shown + 7.5, 2.4 * len(rows) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(rows), num_shown + 3)
    depth_range = (float(depth[:num_shown].min()), float(depth[:num_shown].max()))
    for row, (name, values) in enumerate(rows):
        row_axes = [fig.add_subplot(grid[row, frame]) for frame in range(num_shown)]
        for frame, ax in enumerate(row_axes):
            if values is None:
                ax.imshow(images[frame].transpose(1, 2, 0).clip(0.0, 1.0))
                ax.set_title(f"frame {frame}")
            else:
                shown = ax.imshow(
                    values[frame], cmap="viridis", vmin=depth_range[0], vmax=depth_range[1]
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if frame == 0:
                ax.set_ylabel(name)
        if values is not None:
            fig.colorbar(shown, ax=row_axes, shrink=0.9, label="z-depth")

    ax3d = fig.add_subplot(grid[:, num_shown:], projection="3d")
    ax3d.view_init(elev=35.0, azim=-60.0)
    valid = scene["valid"][:num_shown]
    points = scene["world_points"][:num_shown][valid]
    colours = images[:num_shown].transpose(0, 2, 3, 1)[valid]
    keep = np.random.default_rng(0).permutation(len(points))[:MAX_POINTS]
    ax3d.scatter(*points[keep].T, c=colours[keep].clip(0.0, 1.0), s=1.0, depthshade=False)
    _draw_cameras(ax3d, scene["extrinsics"], scene["intrinsics"], height, width, "black", "cameras")
    if "extrinsics" in pred:
        _draw_cameras(
            ax3d,
            pred["extrinsics"],
            pred.get("intrinsics", scene["intrinsics"]),
            height,
            width,
            "red",
            "predicted cameras",
        )
    ax3d.set_box_aspect(np.ptp(points[keep], axis=0) + 1e-6, zoom=0.85)
    ax3d.set_xlabel("x")
    ax3d.set_ylabel("y")
    ax3d.set_zlabel("z")
    ax3d.set_title(f"scene {int(scene['seed'])}: points and cameras")
    ax3d.legend(loc="upper left", fontsize="small")
    return fig
