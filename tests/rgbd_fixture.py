"""Tiny 7-Scenes and NRGBD trees in the datasets' exact raw formats, rendered with known cameras.

The frames are views of ``qvggt_lib.data.render``'s procedural rooms (its layout, cameras, ray
tracer and shading), but seen through the dataset's own pinhole camera at its own 640 x 480 size:
the readers then run exactly as on the real data (fixed intrinsics, size check), which
``render_scene``'s square images with a random focal per frame could not give. One renderer unit
is ``METRES_PER_UNIT`` metres, so the rooms are 4-6 m wide, like the real ones.

Each writer returns, per sequence name, the truth it encoded: ``extrinsics [S, 3, 4]``
camera-from-world (OpenCV axes, float64), ``intrinsics [3, 3]``, ``depth [S, H, W]`` metres before
millimetre rounding, ``valid [S, H, W]`` (what the file marks as measured), ``world_points
[S, H, W, 3]``, ``images [S, H, W, 3]`` uint8 and the ``seed`` that ``render_rgbd`` re-renders it from.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from qvggt_lib.data import render
from qvggt_lib.data.rgbd_scenes import (
    NRGBD,
    OPENGL_TO_OPENCV,
    RAW_SIZE,
    SevenScenes,
    pinhole_intrinsics,
)
from qvggt_lib.geometry import closed_form_inverse_se3

METRES_PER_UNIT = 0.5
DROPOUT_FRACTION = 0.03  # 7-Scenes pixels written as 65535 (no Kinect reading)
INVALID_DEPTH_CODE = 65535


def render_rgbd(
    seed: int, num_frames: int, width: int, height: int, intrinsics: np.ndarray
) -> dict:
    """``num_frames`` views of the room of ``seed`` through the pinhole ``intrinsics`` at ``width x height``."""
    rng = np.random.default_rng(seed)
    layout = render._sample_layout(rng)
    extrinsics, _ = render._sample_cameras(
        rng, layout.centre, num_frames, width, max_azimuth_deg=60.0
    )
    world_from_camera = extrinsics[:, :, :3].transpose(0, 2, 1)  # [S, 3, 3], columns = camera axes
    origins = -np.einsum("sij,sj->is", world_from_camera, extrinsics[:, :, 3])  # [3, S]
    (fx, _, cx), (_, fy, cy) = intrinsics[:2]
    v, u = np.mgrid[0:height, 0:width]
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones(u.shape)]).reshape(3, -1)
    # world rays through the pixel centres with camera z = 1, so the hit distance is the depth
    directions = np.einsum("sij,jn->isn", world_from_camera, rays).astype(render.DTYPE)
    depth, surface = render._trace(layout, origins[:, :, None].astype(render.DTYPE), directions)
    points = origins[:, :, None] + depth * directions
    num_rays = depth.size
    pixel_steps = tuple(
        (world_from_camera[:, :, axis] / f).T.astype(render.DTYPE) for axis, f in ((0, fx), (1, fy))
    )
    colour, _ = render._shade(
        layout,
        points.reshape(3, num_rays),
        directions.reshape(3, num_rays),
        depth.reshape(num_rays),
        surface.reshape(num_rays),
        np.repeat(np.arange(num_frames), width * height),
        pixel_steps,
    )
    extrinsics = extrinsics.copy()
    extrinsics[:, :, 3] *= METRES_PER_UNIT
    grid = (num_frames, height, width)
    return {
        "extrinsics": extrinsics,
        "intrinsics": np.asarray(intrinsics, np.float64),
        "depth": depth.reshape(grid).astype(np.float64) * METRES_PER_UNIT,
        "world_points": np.moveaxis(points.reshape((3,) + grid), 0, -1) * METRES_PER_UNIT,
        "images": np.moveaxis(
            np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8), 0, -1
        ).reshape(grid + (3,)),
    }


def _millimetres(depth: np.ndarray) -> np.ndarray:
    return np.round(depth * 1000).astype(np.uint16)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _seven_scenes_pose_text(pose: np.ndarray) -> str:
    """A 7-Scenes ``.pose.txt``: rows of tab-separated ``%.7e`` values with 3-digit exponents."""
    cells = [
        [re.sub(r"e([+-])(\d\d)$", r"e\g<1>0\2", f"{value:.7e}") for value in row] for row in pose
    ]
    return "".join("\t".join(row) + "\t\n" for row in cells)


def write_seven_scenes_fixture(
    root, scenes=("chess",), sequences=(1,), test_sequences=None, frames: int = 4, seed: int = 0
) -> dict[str, dict]:
    """``root/{scene}/seq-XX/frame-XXXXXX.{color,depth}.png`` + ``.pose.txt`` and the split files.

    ``test_sequences`` (default: all of ``sequences``) go to TestSplit.txt, the others to
    TrainSplit.txt. A seeded ``DROPOUT_FRACTION`` of the depth pixels is written as 65535.
    """
    root = Path(root)
    test_sequences = sequences if test_sequences is None else test_sequences
    width, height = RAW_SIZE
    truth = {}
    for scene_index, scene in enumerate(scenes):
        for split_file, numbers in (
            ("TestSplit.txt", test_sequences),
            ("TrainSplit.txt", [n for n in sequences if n not in test_sequences]),
        ):
            (root / scene).mkdir(parents=True, exist_ok=True)
            (root / scene / split_file).write_text("".join(f"sequence{n}\n" for n in numbers))
        for number in sequences:
            name = f"{scene}/seq-{number:02d}"
            scene_seed = seed * 1000 + scene_index * 100 + number
            rendered = render_rgbd(
                scene_seed, frames, width, height, pinhole_intrinsics(SevenScenes.focal)
            )
            dropout = (
                np.random.default_rng(scene_seed).random(rendered["depth"].shape) < DROPOUT_FRACTION
            )
            millimetres = _millimetres(rendered["depth"])
            millimetres[dropout] = INVALID_DEPTH_CODE
            for frame, pose in enumerate(closed_form_inverse_se3(rendered["extrinsics"])):
                stem = root / name / f"frame-{frame:06d}"
                _save_png(rendered["images"][frame], Path(f"{stem}.color.png"))
                _save_png(millimetres[frame], Path(f"{stem}.depth.png"))
                Path(f"{stem}.pose.txt").write_text(_seven_scenes_pose_text(pose))
            truth[name] = {**rendered, "valid": ~dropout, "seed": scene_seed}
    return truth


def write_nrgbd_fixture(
    root, scenes=("kitchen",), frames: int = 4, seed: int = 0
) -> dict[str, dict]:
    """``root/{scene}/images/img{i}.png``, ``depth/depth{i}.png``, ``poses.txt`` (OpenGL camera-to-world,
    4 lines per frame) and ``focal.txt``."""
    root = Path(root)
    width, height = RAW_SIZE
    truth = {}
    for scene_index, scene in enumerate(scenes):
        scene_seed = seed * 1000 + 500 + scene_index
        rendered = render_rgbd(scene_seed, frames, width, height, pinhole_intrinsics(NRGBD.focal))
        millimetres = _millimetres(rendered["depth"])
        for frame in range(frames):
            _save_png(rendered["images"][frame], root / scene / "images" / f"img{frame}.png")
            _save_png(millimetres[frame], root / scene / "depth" / f"depth{frame}.png")
        opengl_poses = closed_form_inverse_se3(rendered["extrinsics"]) @ OPENGL_TO_OPENCV
        (root / scene / "poses.txt").write_text(
            "".join(
                " ".join(f"{value:.10f}" for value in row) + "\n"
                for pose in opengl_poses
                for row in pose
            )
        )
        (root / scene / "focal.txt").write_text(f"{NRGBD.focal}\n")
        truth[scene] = {
            **rendered,
            "valid": np.ones(rendered["depth"].shape, bool),
            "seed": scene_seed,
        }
    return truth
