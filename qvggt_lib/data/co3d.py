"""Co3Dv2 read as VGGT's camera-pose evaluation reads it (docs/co3d.md has the upstream sources).

Files
-----
``co3d_dir/{category}/{sequence}/images/frame{NNNNNN}.jpg``: the Co3Dv2 release (frames from 1).
``anno_dir/{category}_{split}.jgz``: gzip JSON ``{sequence: [frame, ...]}``, one frame
``{"filepath", "R", "T", "focal_length", "principal_point"}``, ``filepath`` relative to ``co3d_dir``
(``"apple/110_13051_23361/images/frame000001.jpg"``). VGGT's ``preprocess_co3d.py`` writes them from
Co3Dv2's annotations (splits "train" and "test" of ``set_lists_fewview_dev.json``, sequences with
viewpoint quality > 0.5).

Cameras
-------
``R, T`` are PyTorch3D's: a world point (row vector) ``x`` maps to ``x R + T`` in camera axes
+X left, +Y up, +Z forward. With ``F = diag(-1, -1, 1)`` the OpenCV camera-from-world extrinsics
(x right, y down, z forward) are ``[(R F)^T | F T]``. ``focal_length, principal_point`` are in
Co3Dv2's "ndc_isotropic" units (``pixel_intrinsics``); the pose protocol does not use them.

Frames
------
A sequence is used when it has at least ``min_frames`` (50) frames and no ``T_x + T_y + T_z > 1e5``.
Its frames are ``RandomState(seed).choice(n, num_frames, replace=False)`` from one generator shared
by all sequences in evaluation order: upstream seeds NumPy's global generator once, so the same
annotation files give the same frame ids as upstream.
"""
from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import torch

from ..io import load_and_preprocess_images

CO3D_CATEGORIES = (
    "apple", "backpack", "banana", "baseballbat", "baseballglove",
    "bench", "bicycle", "bottle", "bowl", "broccoli",
    "cake", "car", "carrot", "cellphone", "chair",
    "cup", "donut", "hairdryer", "handbag", "hydrant",
    "keyboard", "laptop", "microwave", "motorcycle", "mouse",
    "orange", "parkingmeter", "pizza", "plant", "stopsign",
    "teddybear", "toaster", "toilet", "toybus", "toyplane",
    "toytrain", "toytruck", "tv", "umbrella", "vase", "wineglass",
)  # the 41 categories of VGGT's evaluation/test_co3d.py, in its order
SPLITS = ("train", "test")
REQUIRED_FIELDS = ("filepath", "R", "T")
MIN_FRAMES = 50
MAX_TRANSLATION_SUM = 1e5
PYTORCH3D_TO_OPENCV_AXES = np.array([-1.0, -1.0, 1.0])  # F = diag(-1, -1, 1)


def check_categories(categories) -> tuple[str, ...]:
    """``categories`` (None: all of CO3D_CATEGORIES) as a tuple, each one of CO3D_CATEGORIES."""
    categories = CO3D_CATEGORIES if categories is None else (
        (categories,) if isinstance(categories, str) else tuple(categories))
    if not categories:
        raise ValueError("categories is empty; pass None for all 41 Co3D categories")
    unknown = [c for c in categories if c not in CO3D_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown Co3D categories {unknown}; expected names from "
                         f"{list(CO3D_CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories has duplicates: {list(categories)}")
    return categories


def check_frame_counts(num_frames: int, min_frames: int) -> None:
    """Pairs need ``num_frames >= 2``; distinct frames need ``min_frames >= num_frames``."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (the pose metrics use frame pairs), got {num_frames}")
    if min_frames < num_frames:
        raise ValueError(f"min_frames ({min_frames}) must be >= num_frames ({num_frames}): shorter "
                         "sequences cannot give num_frames distinct frames")


def annotation_path(anno_dir, category: str, split: str = "test") -> Path:
    """``anno_dir/{category}_{split}.jgz``, split "train" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(anno_dir) / f"{category}_{split}.jgz"


def _check_frame(path: Path, sequence: str, index: int, frame) -> None:
    where = f"{path}: sequence {sequence!r} frame {index}"
    if not isinstance(frame, dict):
        raise TypeError(f"{where} is a {type(frame).__name__}, expected a dict with {REQUIRED_FIELDS}")
    for field in REQUIRED_FIELDS:
        if field not in frame:
            raise ValueError(f"{where} has no {field!r} field (needs {REQUIRED_FIELDS}); "
                             "re-create the file with VGGT's preprocess_co3d.py")
    for field, shape in (("R", (3, 3)), ("T", (3,))):
        try:
            value = np.asarray(frame[field], np.float64)
        except (TypeError, ValueError):
            value = None
        if value is None or value.shape != shape:
            raise ValueError(f"{where}: {field!r} must be {list(shape)} numbers, "
                             f"got {frame[field]!r:.80}")


def read_annotations(anno_dir, category: str, split: str = "test") -> dict[str, list[dict]]:
    """Sequence name -> its frames as stored in ``anno_dir/{category}_{split}.jgz``."""
    path = annotation_path(anno_dir, category, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"Co3D annotation file {path} not found: anno_dir must hold one {{category}}_{{split}}.jgz "
            "per category and split, as VGGT's evaluation/preprocess/preprocess_co3d.py writes them "
            "from the Co3Dv2 release")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as file:
            annotations = json.load(file)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"could not read {path} as gzip-compressed JSON ({exc}); the file is corrupt "
                         "or truncated: re-create it with preprocess_co3d.py") from exc
    if not isinstance(annotations, dict):
        raise TypeError(f"{path} holds a {type(annotations).__name__}, "
                        "expected {sequence: [frame, ...]}")
    for sequence, frames in annotations.items():
        if not isinstance(frames, list):
            raise TypeError(f"{path}: sequence {sequence!r} holds a {type(frames).__name__}, "
                            "expected a list of frames")
        for index, frame in enumerate(frames):
            _check_frame(path, sequence, index, frame)
    return annotations


def pytorch3d_to_opencv(R, T) -> np.ndarray:
    """PyTorch3D ``R [..., 3, 3], T [..., 3]`` -> OpenCV camera-from-world ``[(R F)^T | F T]``
    ``[..., 3, 4]`` float64."""
    R, T = np.asarray(R, np.float64), np.asarray(T, np.float64)
    rotation = np.swapaxes(R * PYTORCH3D_TO_OPENCV_AXES, -1, -2)
    return np.concatenate([rotation, (T * PYTORCH3D_TO_OPENCV_AXES)[..., None]], axis=-1)


def opencv_to_pytorch3d(extrinsics) -> tuple[np.ndarray, np.ndarray]:
    """The exact inverse of pytorch3d_to_opencv: ``[R_cv | t_cv]`` -> ``(R_cv^T F, F t_cv)``."""
    extrinsics = np.asarray(extrinsics, np.float64)
    R = np.swapaxes(extrinsics[..., :3, :3], -1, -2) * PYTORCH3D_TO_OPENCV_AXES
    return R, extrinsics[..., :3, 3] * PYTORCH3D_TO_OPENCV_AXES


def pixel_intrinsics(focal_length, principal_point, width: int, height: int) -> np.ndarray:
    """Co3Dv2 "ndc_isotropic" intrinsics -> pixel ``K [3, 3]`` of a ``width x height`` image: with
    ``s = min(width, height) / 2``, ``f_px = f s`` and ``c_px = (width / 2, height / 2) - p s``."""
    scale = min(width, height) / 2
    fx, fy = np.asarray(focal_length, np.float64) * scale
    cx, cy = np.array([width / 2, height / 2]) - np.asarray(principal_point, np.float64) * scale
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def usable_sequence(frames: list[dict], min_frames: int = MIN_FRAMES) -> bool:
    """Upstream's filter: at least ``min_frames`` frames and no frame with ``T_x + T_y + T_z > 1e5``."""
    return len(frames) >= min_frames and all(
        sum(frame["T"]) <= MAX_TRANSLATION_SUM for frame in frames)


def sample_frames(num_available: int, num_frames: int, rng: np.random.RandomState) -> np.ndarray:
    """``num_frames`` distinct indices, ``rng.choice(num_available, num_frames, replace=False)``."""
    if num_frames > num_available:
        raise ValueError(f"cannot draw {num_frames} distinct frames from a sequence of {num_available}")
    return rng.choice(num_available, num_frames, replace=False)


def load_sequence(co3d_dir, frames: list[dict], image_size: int = 518, mode: str = "crop") -> dict:
    """Frames of one sequence -> ``images [S, 3, H, W]`` float32 (``load_and_preprocess_images``),
    ``extrinsics [S, 3, 4]`` float64 OpenCV camera-from-world, ``paths``."""
    paths = [Path(co3d_dir) / frame["filepath"] for frame in frames]
    for path, frame in zip(paths, frames):
        if not path.is_file():
            raise FileNotFoundError(
                f"Co3D image {path} not found (annotation filepath {frame['filepath']!r}); co3d_dir "
                "must be the Co3Dv2 root that holds {category}/{sequence}/images/frameNNNNNN.jpg")
    extrinsics = pytorch3d_to_opencv([frame["R"] for frame in frames], [frame["T"] for frame in frames])
    images = load_and_preprocess_images([str(path) for path in paths], mode=mode, size=image_size)
    return {"images": images, "extrinsics": extrinsics, "paths": paths}


def _interleaved_sequences(per_category: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(category, sequence) dealt round-robin: every category's first sequence, then every second..."""
    longest = max((len(names) for names in per_category.values()), default=0)
    return [(category, names[rank]) for rank in range(longest)
            for category, names in per_category.items() if rank < len(names)]


def co3d_calibration_pool(co3d_dir, anno_dir, categories=None, num_candidates: int = 400,
                          num_frames: int = 8, image_size: int = 518, seed: int = 0,
                          split: str = "train", min_frames: int = MIN_FRAMES,
                          mode: str = "pad") -> list[torch.Tensor]:
    """The NFDS candidate pool: ``num_candidates`` Co3D sequences of ``num_frames`` frames [S, 3, H, W].

    Spread over categories: each category's usable sequences (``usable_sequence``) are shuffled by
    ``RandomState(seed)``, then dealt round-robin in category order, so every category gives
    ``num_candidates / C`` sequences, give or take one, until it runs out (the others then fill
    in). Frames: ``sample_frames`` with the same generator. ``mode="pad"``: square images, as
    QuantVGGT's calibration code loads them (docs/co3d.md: how its code draws the pool). Raises if
    fewer usable sequences exist. Memory: 4 S 3 image_size^2 bytes a candidate (400 x 8 frames at
    518: 10 GB).
    """
    categories = check_categories(categories)
    check_frame_counts(num_frames, min_frames)
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be a positive integer, got {num_candidates!r}")
    rng = np.random.RandomState(seed)
    annotations = {category: read_annotations(anno_dir, category, split) for category in categories}
    shuffled = {}
    for category, sequences in annotations.items():
        names = [name for name in sorted(sequences) if usable_sequence(sequences[name], min_frames)]
        shuffled[category] = [names[i] for i in rng.permutation(len(names))]
    chosen = _interleaved_sequences(shuffled)[:num_candidates]
    if len(chosen) < num_candidates:
        raise ValueError(
            f"only {len(chosen)} usable {split} sequences (>= {min_frames} frames) in {anno_dir} for "
            f"categories {list(categories)}, {num_candidates} candidates asked; lower num_candidates "
            "or min_frames")
    pool = []
    for category, name in chosen:
        frames = annotations[category][name]
        picked = [frames[i] for i in sample_frames(len(frames), num_frames, rng)]
        pool.append(load_sequence(co3d_dir, picked, image_size, mode)["images"])
    return pool
