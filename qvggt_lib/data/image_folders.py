"""Your own photos as scenes: a folder of images is one scene, a folder of such folders is many.

    image_scenes(root)                 -> {scene name: [image paths sorted by name]}
    image_folder_pool(root, frames, size) -> NFDS candidates [frames, 3, size', size] from the scenes

A scene's frames are its image files (``IMAGE_SUFFIXES``, case-insensitive) in name order, so
``frame_001.jpg, frame_002.jpg, ...`` keep their order; VGGT takes the first frame as the
reference camera. Hidden files (``.*``) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import load_and_preprocess_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def image_scenes(root) -> dict[str, list[Path]]:
    """The scenes under ``root``: ``{root.name: images}`` if ``root`` holds images itself, else
    ``{subfolder name: images}`` for every subfolder that holds images (in name order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (give a folder of images, "
                                "or a folder of such folders, one per scene)")
    images = _images_in(root)
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if images:
        nested = [p.name for p in subfolders if _images_in(p)]
        if nested:
            raise ValueError(f"{root} holds images and also subfolders of images ({', '.join(nested[:5])}): "
                             "put each scene's images in a folder of its own, or the images of one "
                             "scene directly in the folder, not both")
        return {root.name: images}
    scenes = {p.name: found for p in subfolders if (found := _images_in(p))}
    if not scenes:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root} or its subfolders")
    return scenes


def spread_frames(count: int, num_frames: int) -> list[list[int]]:
    """Split ``count`` frames into ``count // num_frames`` candidates of ``num_frames`` frames, each
    spread over the whole sequence: candidate j takes frames j, j + k, j + 2k, ... with k the
    number of candidates (so every candidate sees the scene from all around)."""
    groups = count // num_frames
    return [list(range(j, groups * num_frames, groups)) for j in range(groups)]


def image_folder_pool(root, num_frames: int = 8, image_size: int = 518, mode: str = "crop") -> list[torch.Tensor]:
    """NFDS calibration candidates from your own scenes: every scene of ``image_scenes(root)``
    gives ``len(images) // num_frames`` candidates (``spread_frames``), each ``[num_frames, 3, H, W]``
    preprocessed as VGGT's own loader does. A scene with fewer than ``num_frames`` images is an error."""
    scenes = image_scenes(root)
    short = {name: len(paths) for name, paths in scenes.items() if len(paths) < num_frames}
    if short:
        listed = ", ".join(f"{name} ({count})" for name, count in list(short.items())[:5])
        raise ValueError(f"calibration scenes need at least {num_frames} images each; {listed} have fewer: "
                         "add images, remove those folders, or lower the frames per calibration scene")
    pool = []
    for paths in scenes.values():
        for frames in spread_frames(len(paths), num_frames):
            pool.append(load_and_preprocess_images([paths[i] for i in frames], mode=mode, size=image_size))
    return pool
