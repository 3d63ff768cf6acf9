"""Image loading with VGGT's official preprocessing (``vggt.utils.load_fn.load_and_preprocess_images``).

crop mode: width -> size, height -> round(h * (size / w) / 14) * 14, bicubic resize,
           centre-crop the height to ``size`` if larger (for images resized to more than 16
           times that height, only the kept band is resampled: memory stays bounded).
pad mode:  longer side -> size, the other rounded to a multiple of 14, then padded
           with white (1.0) to size x size.
RGBA is composited onto white; 16-bit greyscale is mapped to 8 bits (v / 257) before
the RGB conversion, which would otherwise clip it. Mixed shapes are padded (white) to the largest.
Returns [N, 3, H, W] float32 in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PATCH = 14
# crop mode resamples only the kept band when the resized height exceeds BAND_FACTOR x size: far
# beyond any photo (a 9:16 portrait is 1.8x), so ordinary images keep upstream's exact pixels
BAND_FACTOR = 16
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey PNGs open as I;16 or I


def _open_rgb(source) -> Image.Image:
    if isinstance(source, Image.Image):
        img = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Image {path} does not exist")
        try:
            img = Image.open(path)
            img.load()
        except OSError as exc:
            raise ValueError(f"Could not read image {path}: {exc}; is it a valid PNG/JPEG file?") from exc
    if img.width == 0 or img.height == 0:
        raise ValueError(f"Image {_describe(source)} is empty ({img.width}x{img.height} pixels)")
    if img.mode in HIGH_BIT_DEPTH_MODES:
        # PIL's convert("RGB") clips 16-bit values at 255 (a 0..65535 gradient becomes almost all
        # white): map the full 16-bit range onto 8 bits first, v -> round(v / 257).
        values = np.asarray(img, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"Image {_describe(source)} has {img.mode} pixels outside 0..65535 "
                f"([{values.min():.6g}, {values.max():.6g}]); save it as an 8- or 16-bit PNG/JPEG"
            )
        img = Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")
    elif img.mode == "F":
        raise ValueError(
            f"Image {_describe(source)} holds floating-point pixels (mode F) with no defined range; "
            "save it as an 8- or 16-bit PNG/JPEG"
        )
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("RGB")


def _describe(source) -> str:
    return "(PIL image)" if isinstance(source, Image.Image) else str(source)


def _pad_white(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dh, dw = height - img.shape[1], width - img.shape[2]
    if dh <= 0 and dw <= 0:
        return img
    top, left = dh // 2, dw // 2
    return F.pad(img, (left, dw - left, top, dh - top), mode="constant", value=1.0)


def load_and_preprocess_images(paths, mode: str = "crop", size: int = 518) -> torch.Tensor:
    """Load image files (or PIL images) as a VGGT input batch [N, 3, H, W] in [0, 1]."""
    if isinstance(paths, (str, Path, Image.Image)):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("At least 1 image is required")
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    if not isinstance(size, int) or size <= 0 or size % PATCH:
        raise ValueError(f"size must be a positive multiple of the patch size {PATCH}, got {size!r}")
    images = []
    for source in paths:
        img = _open_rgb(source)
        w, h = img.size
        # Same float expression order as upstream, h * (size / w), not h * size / w: the two
        # round differently when the exact value is a .5 tie (e.g. 222x219 -> 518 vs 504 rows).
        if mode == "pad" and h > w:
            new_h, new_w = size, round(w * (size / h) / PATCH) * PATCH
        else:
            new_w, new_h = size, round(h * (size / w) / PATCH) * PATCH
        if new_w == 0 or new_h == 0:
            raise ValueError(
                f"Image {_describe(source)} ({w}x{h}) is too elongated: at size {size} its short side "
                f"rounds to 0 patches; crop it closer to square first"
            )
        top = (new_h - size) // 2
        if mode == "crop" and new_h > BAND_FACTOR * size:
            # A tall, narrow image: resample only the rows the centre crop keeps (PIL's box), so
            # memory follows the output, not new_h x size (a 5x2000 image at 518 would otherwise
            # allocate about 1.3 GB). The filter positions match the full resize up to float
            # rounding: on smooth content within a level or two of 255 (tests/test_bad_inputs.py).
            scale = h / new_h
            img = img.resize((new_w, size), Image.Resampling.BICUBIC, box=(0, top * scale, w, (top + size) * scale))
        else:
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if mode == "crop" and tensor.shape[1] > size:
            tensor = tensor[:, top : top + size]
        if mode == "pad":
            tensor = _pad_white(tensor, size, size)
        images.append(tensor)
    height = max(t.shape[1] for t in images)
    width = max(t.shape[2] for t in images)
    return torch.stack([_pad_white(t, height, width) for t in images]).contiguous()
