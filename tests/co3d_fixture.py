"""write_co3d_fixture: a tiny Co3Dv2 tree in the exact upstream formats, rendered with known cameras.

    root/co3d/{category}/{sequence}/images/frame000001.jpg, ...        (the Co3Dv2 release layout)
    root/co3d_v2_annotations/{category}_{split}.jgz                    (VGGT's preprocess_co3d.py output)

Splits "train" and "test" hold disjoint sequences. Every frame's annotation is
``{"filepath": "{category}/{sequence}/images/frameNNNNNN.jpg", "R", "T", "focal_length",
"principal_point"}``: R, T in PyTorch3D's convention (``opencv_to_pytorch3d`` of the renderer's
cameras), intrinsics in Co3Dv2's "ndc_isotropic" units. Images are ``render_scene`` frames as JPEG.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from qvggt_lib.data.co3d import SPLITS, opencv_to_pytorch3d
from qvggt_lib.data.render import render_scene


def fixture_sequences(categories=("apple", "bench"), sequences_per_category=2, frames_per_sequence=12,
                      image_size=56, seed=0):
    """Yield ``(split, category, sequence_name, scene)`` for every fixture sequence, ``scene`` the
    ``render_scene`` dict (its ``extrinsics`` / ``intrinsics`` are the ground truth)."""
    count = 0
    for split in SPLITS:
        for category_index, category in enumerate(categories):
            for _ in range(sequences_per_category):
                count += 1
                name = f"{count}_{100 + category_index}_{seed}"  # Co3D names look like 110_13051_23361
                scene = render_scene(seed * 1_000_000 + count, frames_per_sequence, image_size)
                yield split, category, name, scene


def ndc_isotropic(intrinsics: np.ndarray, width: int, height: int) -> tuple[list[float], list[float]]:
    """Pixel K -> Co3Dv2 ``(focal_length, principal_point)``: ``f_px / s`` and ``((W/2, H/2) - c_px) / s``
    with ``s = min(W, H) / 2`` (the inverse of ``pixel_intrinsics``)."""
    scale = min(width, height) / 2
    focal = [intrinsics[0, 0] / scale, intrinsics[1, 1] / scale]
    principal = [(width / 2 - intrinsics[0, 2]) / scale, (height / 2 - intrinsics[1, 2]) / scale]
    return [float(v) for v in focal], [float(v) for v in principal]


def write_annotations(anno_dir, category: str, split: str, sequences: dict[str, list[dict]]) -> Path:
    """``anno_dir/{category}_{split}.jgz``: gzip-compressed JSON of ``{sequence: [frame, ...]}``."""
    path = Path(anno_dir) / f"{category}_{split}.jgz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as file:
        file.write(json.dumps(sequences).encode("utf-8"))
    return path


def write_co3d_fixture(root, categories=("apple", "bench"), sequences_per_category=2,
                       frames_per_sequence=12, image_size=56, seed=0) -> tuple[Path, Path]:
    """Render and write the fixture under ``root``; returns ``(co3d_dir, anno_dir)``."""
    co3d_dir, anno_dir = Path(root) / "co3d", Path(root) / "co3d_v2_annotations"
    annotations = {(split, category): {} for split in SPLITS for category in categories}
    for split, category, name, scene in fixture_sequences(categories, sequences_per_category,
                                                          frames_per_sequence, image_size, seed):
        R, T = opencv_to_pytorch3d(scene["extrinsics"])
        frames = []
        for index, image in enumerate(scene["images"]):
            filepath = f"{category}/{name}/images/frame{index + 1:06d}.jpg"
            (co3d_dir / filepath).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.round(image.transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(co3d_dir / filepath, quality=95)
            focal, principal = ndc_isotropic(scene["intrinsics"][index], image_size, image_size)
            frames.append({"filepath": filepath, "R": R[index].tolist(), "T": T[index].tolist(),
                           "focal_length": focal, "principal_point": principal})
        annotations[split, category][name] = frames
    for (split, category), sequences in annotations.items():
        write_annotations(anno_dir, category, split, sequences)
    return co3d_dir, anno_dir
