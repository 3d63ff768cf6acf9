"""7-Scenes and NRGBD, read from their public raw layouts for the multi-view reconstruction protocol.

Both are indoor RGB-D sequences of 640 x 480 frames with 16-bit PNG depth in millimetres and one
4 x 4 camera-to-world pose per frame; they differ in file names, pose files, camera axes and
intrinsics (facts and sources in docs/pointcloud_eval.md)::

    7-Scenes  ROOT/{scene}/TestSplit.txt, TrainSplit.txt      lines "sequence{N}" -> seq-0N
              ROOT/{scene}/seq-XX/frame-XXXXXX.color.png      RGB
              ROOT/{scene}/seq-XX/frame-XXXXXX.depth.png      uint16 mm, 65535 = no reading
              ROOT/{scene}/seq-XX/frame-XXXXXX.pose.txt       4 x 4 camera-to-world, OpenCV axes
    NRGBD     ROOT/{scene}/images/img{i}.png                  RGB
              ROOT/{scene}/depth/depth{i}.png                 uint16 mm
              ROOT/{scene}/poses.txt                          4N x 4 camera-to-world, OpenGL axes

Conventions of the returned data (those of ``qvggt_lib.data.render_scene``): ``extrinsics`` are
camera-from-world ``[R | t]`` in OpenCV axes (x right, y down, z forward); pixel ``(u, v)`` sees
the ray ``K^-1 (u, v, 1)`` (integer pixel centres); depth is the camera z in metres and 0 where
there is no trusted value.

    data = SevenScenes(root)                      # or NRGBD(root), open_dataset("7scenes", root)
    data.list_sequences()                         # ["chess/seq-03", ...] (test split)
    data.read_sequence(name, kf_every=100)        # keyframes at the raw 640 x 480 resolution
    data.load_sequence(name, image_size=518)      # VGGT input images + ground truth on their pixels
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..geometry import closed_form_inverse_se3, unproject_depth_map_to_point_map
from ..io import HIGH_BIT_DEPTH_MODES, PATCH, load_and_preprocess_images

RAW_SIZE = (640, 480)  # (width, height) of every frame of both datasets
DEPTH_UNITS_PER_METRE = 1000.0
# upstream keeps depth in [1 mm, 10 m]: 7-Scenes' 65535 ("no reading") falls outside
MIN_DEPTH_M, MAX_DEPTH_M = 1e-3, 10.0
MODES = ("crop", "pad")
SEVEN_SCENES_SPLIT_FILES = {"test": "TestSplit.txt", "train": "TrainSplit.txt"}
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # right-multiplied: flips the camera's y and z


def pinhole_intrinsics(focal: float) -> np.ndarray:
    """``[3, 3]`` ``K`` with ``fx = fy = focal`` and the principal point at the centre of a 640 x 480 frame."""
    return np.array([[focal, 0.0, RAW_SIZE[0] / 2], [0.0, focal, RAW_SIZE[1] / 2], [0.0, 0.0, 1.0]])


def read_depth_png(path: Path) -> np.ndarray:
    """Depth in metres ``[H, W]`` float64 from a 16-bit PNG of millimetres, 0 outside [1 mm, 10 m]."""
    if not path.is_file():
        raise FileNotFoundError(f"Depth image {path} does not exist")
    with Image.open(path) as image:
        image.load()
        mode, millimetres = image.mode, np.asarray(image, dtype=np.int64)
    if mode not in HIGH_BIT_DEPTH_MODES or millimetres.min() < 0 or millimetres.max() > 65535:
        raise ValueError(
            f"Depth image {path} is not a 16-bit single-channel PNG (PIL mode {mode}); the datasets store "
            "depth as uint16 millimetres: re-extract the original file"
        )
    depth = millimetres / DEPTH_UNITS_PER_METRE
    depth[(depth < MIN_DEPTH_M) | (depth > MAX_DEPTH_M)] = 0.0
    return depth


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def _check_frame_size(path: Path, dataset: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{dataset} frame {path} does not exist")
    with Image.open(path) as image:
        size = image.size
    if size != RAW_SIZE:
        raise ValueError(
            f"{path} is {size[0]}x{size[1]} pixels; {dataset} frames are {RAW_SIZE[0]}x{RAW_SIZE[1]}, the size "
            "its intrinsics are defined for"
        )


def model_input_grid(width: int, height: int, size: int, mode: str) -> dict[str, int]:
    """Where ``load_and_preprocess_images(mode, size)`` puts a ``width x height`` image.

    The image is resized to ``resized_w x resized_h`` and shifted by ``(left, top)`` into an
    ``out_w x out_h`` canvas: crop mode cuts the centre rows (``top = -((resized_h - size) // 2)``
    when taller than ``size``), pad mode centres it on a ``size x size`` canvas.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "pad" and height > width:
        resized_w, resized_h = round(width * (size / height) / PATCH) * PATCH, size
    else:
        resized_w, resized_h = size, round(height * (size / width) / PATCH) * PATCH
    if mode == "crop":
        out_w, out_h = resized_w, min(resized_h, size)
        left, top = 0, -((resized_h - size) // 2) if resized_h > size else 0
    else:
        out_w = out_h = size
        left, top = (size - resized_w) // 2, (size - resized_h) // 2
    return {
        "resized_w": resized_w,
        "resized_h": resized_h,
        "left": left,
        "top": top,
        "out_w": out_w,
        "out_h": out_h,
    }


def _nearest_source(
    raw_len: int, resized_len: int, offset: int, out_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel along one axis: the nearest raw pixel, and whether it lies on the image.

    Output pixel ``o`` has its centre at resized coordinate ``o - offset``, i.e. raw coordinate
    ``(o - offset + 1/2) raw_len / resized_len - 1/2``; the nearest raw pixel is the floor of that plus 1/2.
    """
    resized = np.arange(out_len) - offset
    source = np.floor((resized + 0.5) * raw_len / resized_len).astype(np.int64)
    inside = (resized >= 0) & (resized < resized_len)
    return np.clip(source, 0, raw_len - 1), inside


def resample_to_model_input(depth: np.ndarray, intrinsics: np.ndarray, size: int, mode: str):
    """Depth maps ``[S, H, W]`` and their ``[3, 3]`` intrinsics moved onto the model input's pixels.

    Depth is resampled nearest-neighbour (the pixel whose centre is closest; 0 on padding), and
    ``K`` follows the same map: ``f' = f s``, ``c' = (c + 1/2) s - 1/2 + offset`` per axis with
    ``s = resized / raw``. Returns ``(depth [S, H', W'], intrinsics [3, 3])``.
    """
    _, height, width = depth.shape
    grid = model_input_grid(width, height, size, mode)
    rows, rows_inside = _nearest_source(height, grid["resized_h"], grid["top"], grid["out_h"])
    cols, cols_inside = _nearest_source(width, grid["resized_w"], grid["left"], grid["out_w"])
    resampled = depth[:, rows[:, None], cols[None, :]] * (
        rows_inside[:, None] & cols_inside[None, :]
    )
    scaled = intrinsics.astype(np.float64).copy()
    for axis, (resized, raw, offset) in enumerate(
        ((grid["resized_w"], width, grid["left"]), (grid["resized_h"], height, grid["top"]))
    ):
        scale = resized / raw
        scaled[axis, axis] *= scale
        scaled[axis, 2] = (scaled[axis, 2] + 0.5) * scale - 0.5 + offset
    return resampled, scaled


class RGBDDataset:
    """What 7-Scenes and NRGBD share: keyframes, depth decoding, pose inversion, model-input ground truth.

    A subclass names its ``name``, ``focal`` (pixels, at 640 x 480, principal point at the image
    centre) and provides the layout hooks ``_scene_sequences``, ``_num_frames``, ``_keyframe_stride``,
    ``_frame_paths`` and ``_camera_to_world``.
    """

    name: str
    focal: float
    default_kf_every = 100  # QuantVGGT's run_7s.sh / run_nr.sh (--kf 100)

    def __init__(self, root):
        self.root = _require_dir(Path(root), f"{self.name} root folder")

    @property
    def intrinsics(self) -> np.ndarray:
        """``[3, 3]`` pinhole ``K`` of the raw 640 x 480 frames."""
        return pinhole_intrinsics(self.focal)

    def scenes(self) -> list[str]:
        """The scene folders under the root, sorted."""
        return sorted(path.name for path in self.root.iterdir() if path.is_dir())

    def list_sequences(self, scenes=None, split: str = "test") -> list[str]:
        """Sequence names of ``split`` in the given ``scenes`` (all scene folders when None), sorted."""
        available = self.scenes()
        chosen = (
            available if scenes is None else [scenes] if isinstance(scenes, str) else list(scenes)
        )
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise ValueError(
                f"{self.name} has no scene {unknown} under {self.root}; scenes there: {available}"
            )
        return [
            sequence for scene in sorted(chosen) for sequence in self._scene_sequences(scene, split)
        ]

    def keyframes(self, sequence: str, kf_every: int | None = None) -> list[int]:
        """Frame indices ``0, k, 2k, ...`` with the dataset's stride ``k`` for ``kf_every`` (default 100)."""
        kf_every = self.default_kf_every if kf_every is None else kf_every
        if not isinstance(kf_every, (int, np.integer)) or kf_every < 1:
            raise ValueError(f"kf_every must be a positive integer, got {kf_every!r}")
        num_frames = self._num_frames(sequence)
        if num_frames == 0:
            raise FileNotFoundError(
                f"{self.name} sequence {sequence!r} under {self.root} has no frames"
            )
        return list(range(0, num_frames, self._keyframe_stride(int(kf_every), num_frames)))

    def read_sequence(self, sequence: str, kf_every: int | None = None) -> dict:
        """The keyframes of ``sequence`` at the raw resolution.

        Keyframes whose pose is not finite (NRGBD marks unknown poses with nan) are left out.

        Returns:
            ``sequence``, ``frames`` (indices), ``color_paths``, ``depth_paths``, ``depth [S, H, W]``
            metres (0 = none), ``valid [S, H, W]``, ``extrinsics [S, 3, 4]`` camera-from-world (OpenCV
            axes, float64) and ``intrinsics [3, 3]``.
        """
        frames = self.keyframes(sequence, kf_every)
        camera_to_world = self._camera_to_world(sequence, frames)
        known = np.isfinite(camera_to_world).all(axis=(1, 2))
        if not known.any():
            raise ValueError(
                f"{self.name} sequence {sequence!r} has no keyframe with a finite pose"
            )
        frames, camera_to_world = [f for f, ok in zip(frames, known) if ok], camera_to_world[known]
        color_paths, depth_paths = zip(*(self._frame_paths(sequence, frame) for frame in frames))
        for path in (*color_paths, *depth_paths):
            _check_frame_size(path, self.name)
        depth = np.stack([read_depth_png(path) for path in depth_paths])
        return {
            "sequence": sequence,
            "frames": frames,
            "color_paths": list(color_paths),
            "depth_paths": list(depth_paths),
            "depth": depth,
            "valid": depth > 0,
            "extrinsics": closed_form_inverse_se3(camera_to_world)[:, :3],
            "intrinsics": self.intrinsics,
        }

    def load_sequence(
        self, sequence: str, image_size: int = 518, mode: str = "crop", kf_every: int | None = None
    ) -> dict:
        """A sequence as the model sees it, with the ground truth on the same pixels.

        ``images [S, 3, H, W]`` (torch, [0, 1]) come from ``load_and_preprocess_images(mode, image_size)``;
        ``depth``, ``valid``, ``intrinsics [S, 3, 3]`` follow ``resample_to_model_input`` and
        ``world_points [S, H, W, 3]`` unproject that depth (world frame of the dataset, metres).
        ``sequence``, ``frames`` and ``extrinsics [S, 3, 4]`` are those of ``read_sequence``.
        """
        raw = self.read_sequence(sequence, kf_every)
        images = load_and_preprocess_images(raw["color_paths"], mode=mode, size=image_size)
        depth, intrinsics = resample_to_model_input(
            raw["depth"], raw["intrinsics"], image_size, mode
        )
        intrinsics = np.repeat(intrinsics[None], len(depth), axis=0)
        return {
            "sequence": sequence,
            "frames": raw["frames"],
            "images": images,
            "depth": depth,
            "valid": depth > 0,
            "extrinsics": raw["extrinsics"],
            "intrinsics": intrinsics,
            "world_points": unproject_depth_map_to_point_map(depth, raw["extrinsics"], intrinsics),
        }

    def _scene_sequences(self, scene: str, split: str) -> list[str]:
        raise NotImplementedError

    def _num_frames(self, sequence: str) -> int:
        raise NotImplementedError

    def _keyframe_stride(self, kf_every: int, num_frames: int) -> int:
        raise NotImplementedError

    def _frame_paths(self, sequence: str, frame: int) -> tuple[Path, Path]:
        raise NotImplementedError

    def _camera_to_world(self, sequence: str, frames: list[int]) -> np.ndarray:
        raise NotImplementedError


class SevenScenes(RGBDDataset):
    """Microsoft 7-Scenes (Kinect v1). Sequences are named ``"{scene}/seq-XX"``; ``split`` picks the
    sequences listed in ``TestSplit.txt`` or ``TrainSplit.txt``. Intrinsics fx = fy = 525 (those
    SimpleRecon, CUT3R and QuantVGGT use); the depth is the raw ``.depth.png``, as QuantVGGT reads it."""

    name = "7-Scenes"
    focal = 525.0

    def _scene_sequences(self, scene: str, split: str) -> list[str]:
        if split not in SEVEN_SCENES_SPLIT_FILES:
            raise ValueError(
                f"7-Scenes split must be one of {sorted(SEVEN_SCENES_SPLIT_FILES)}, got {split!r}"
            )
        split_file = self.root / scene / SEVEN_SCENES_SPLIT_FILES[split]
        if not split_file.is_file():
            raise FileNotFoundError(
                f"{split_file} does not exist: a 7-Scenes scene folder holds TestSplit.txt and TrainSplit.txt "
                "(lines 'sequence1', ...) beside its seq-XX folders"
            )
        numbers = [
            re.sub(r"\D", "", line) for line in split_file.read_text().splitlines() if line.strip()
        ]
        if not all(numbers):
            raise ValueError(
                f"{split_file} has a line without a sequence number; expected lines like 'sequence1'"
            )
        return sorted(f"{scene}/seq-{int(number):02d}" for number in numbers)

    def _sequence_dir(self, sequence: str) -> Path:
        return _require_dir(self.root / sequence, "7-Scenes sequence folder (ROOT/{scene}/seq-XX)")

    def _num_frames(self, sequence: str) -> int:
        return sum(1 for _ in self._sequence_dir(sequence).glob("frame-*.color.png"))

    def _keyframe_stride(self, kf_every: int, num_frames: int) -> int:
        return kf_every

    def _frame_paths(self, sequence: str, frame: int) -> tuple[Path, Path]:
        folder, name = self._sequence_dir(sequence), f"frame-{frame:06d}"
        return folder / f"{name}.color.png", folder / f"{name}.depth.png"

    def _camera_to_world(self, sequence: str, frames: list[int]) -> np.ndarray:
        poses = []
        for frame in frames:
            path = self._sequence_dir(sequence) / f"frame-{frame:06d}.pose.txt"
            if not path.is_file():
                raise FileNotFoundError(f"7-Scenes pose file {path} does not exist")
            try:
                pose = np.loadtxt(path, dtype=np.float64, ndmin=2)
            except ValueError as exc:
                raise ValueError(
                    f"7-Scenes pose file {path} is not a table of numbers: {exc}"
                ) from exc
            if pose.shape != (4, 4):
                raise ValueError(
                    f"7-Scenes pose file {path} holds a {pose.shape[0]}x{pose.shape[1]} table; expected the 4x4 "
                    "camera-to-world matrix"
                )
            poses.append(pose)
        return np.stack(poses)


class NRGBD(RGBDDataset):
    """Neural RGB-D Surface Reconstruction's synthetic scenes (Azinovic et al. 2022). A sequence is a
    scene folder; there is no split (``split`` must be "test", as upstream calls it). Poses are
    OpenGL camera-to-world and are turned to OpenCV axes; fx = fy = 554.2562584220408 (60 deg
    horizontal field of view, as focal.txt). Keyframe stride ``min(kf_every, N // 2)`` (upstream's)."""

    name = "NRGBD"
    focal = 554.2562584220408

    def _scene_sequences(self, scene: str, split: str) -> list[str]:
        if split != "test":
            raise ValueError(
                f"NRGBD has no {split!r} split: every scene is evaluated (split='test')"
            )
        return [scene]

    def _image_dir(self, sequence: str) -> Path:
        return _require_dir(
            self.root / sequence / "images", "NRGBD image folder (ROOT/{scene}/images/img{i}.png)"
        )

    def _num_frames(self, sequence: str) -> int:
        return sum(1 for _ in self._image_dir(sequence).glob("img*.png"))

    def _keyframe_stride(self, kf_every: int, num_frames: int) -> int:
        return max(1, min(kf_every, num_frames // 2))

    def _frame_paths(self, sequence: str, frame: int) -> tuple[Path, Path]:
        folder = self.root / sequence
        return folder / "images" / f"img{frame}.png", folder / "depth" / f"depth{frame}.png"

    def _camera_to_world(self, sequence: str, frames: list[int]) -> np.ndarray:
        path = self.root / sequence / "poses.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"NRGBD pose file {path} does not exist (ROOT/{{scene}}/poses.txt, 4 lines per frame)"
            )
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if len(rows) % 4 or any(len(row) != 4 for row in rows):
            raise ValueError(
                f"NRGBD pose file {path} must hold 4x4 matrices, 4 lines of 4 numbers per frame; got {len(rows)} "
                f"lines with {sorted({len(row) for row in rows})} numbers"
            )
        try:
            poses = np.array(rows, dtype=np.float64).reshape(-1, 4, 4)
        except ValueError as exc:
            raise ValueError(
                f"NRGBD pose file {path} holds a value that is not a number: {exc}"
            ) from exc
        num_images = self._num_frames(sequence)
        if len(poses) < num_images:
            raise ValueError(
                f"NRGBD pose file {path} has {len(poses)} poses for {num_images} images; every image "
                "img{i}.png needs pose i"
            )
        return poses[frames] @ OPENGL_TO_OPENCV


DATASETS = {"7scenes": SevenScenes, "nrgbd": NRGBD}


def open_dataset(name: str, root) -> RGBDDataset:
    """``SevenScenes(root)`` for ``"7scenes"``, ``NRGBD(root)`` for ``"nrgbd"``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](root)
