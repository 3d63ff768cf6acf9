"""Seed splits, `.npz` scene files and batching of rendered scenes into torch tensors.

A scene is fully determined by its seed (see ``render.render_scene``); the splits are disjoint seed
ranges, so train, calibration and test scenes never coincide.
"""

import zipfile
from pathlib import Path

import numpy as np
import torch

from .render import render_scene

SPLITS = {
    "train": range(10_000_000),
    "calib": range(10_000_000, 10_010_000),
    "test": range(20_000_000, 20_010_000),
}
ARRAY_KEYS = ("images", "depth", "extrinsics", "intrinsics", "world_points", "valid")
SCALAR_KEYS = ("seed", "num_frames")


def scene_seed(split: str, index: int) -> int:
    """Seed of scene `index` (0-based) of `split`: SPLITS[split][index]."""
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    seeds = SPLITS[split]
    if not 0 <= index < len(seeds):
        raise IndexError(f"index {index} out of range for split {split!r} with {len(seeds)} scenes")
    return seeds[index]


def render_split(split: str, index: int, **render_kwargs) -> dict:
    """Render scene `index` of `split`; keyword arguments go to ``render_scene``."""
    return render_scene(scene_seed(split, index), **render_kwargs)


def save_scene(scene: dict, path: str | Path) -> None:
    """Write the arrays of a rendered scene to an uncompressed `.npz` file (exact round trip)."""
    np.savez(Path(path), **{key: np.asarray(scene[key]) for key in ARRAY_KEYS + SCALAR_KEYS})


def load_scene(path: str | Path) -> dict:
    """Read a scene written by ``save_scene``; raises FileNotFoundError or ValueError (truncated or
    incomplete file) with the path in the message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no scene file at {path}")
    try:
        with np.load(path) as archive:
            scene = {key: archive[key] for key in ARRAY_KEYS + SCALAR_KEYS}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as error:
        raise ValueError(f"corrupt or truncated scene file {path}: {error}") from error
    scene["seed"], scene["num_frames"] = scene["seed"][()], scene["num_frames"][()]
    return scene


def render_batch(seeds, num_frames: int = 8, image_size: int = 112) -> dict:
    """Render the scenes `seeds` (length B) and stack them as torch tensors:

    images [B, S, 3, H, W] float32, depth [B, S, H, W] float32, extrinsics [B, S, 3, 4] float32,
    intrinsics [B, S, 3, 3] float32, world_points [B, S, H, W, 3] float32, valid [B, S, H, W] bool,
    seed [B] int64.
    """
    scenes = [
        render_scene(int(seed), num_frames=num_frames, image_size=image_size) for seed in seeds
    ]
    batch = {
        key: torch.from_numpy(np.stack([scene[key] for scene in scenes])) for key in ARRAY_KEYS
    }
    batch["seed"] = torch.tensor([int(scene["seed"]) for scene in scenes], dtype=torch.int64)
    return batch
