"""Shared set-up for the course notebooks: one parameter cell decides which model and data they use.

This package holds the notebook-only measurements and figures (activations, rotation, smoothing
and sampling analyses, reconstruction comparisons, plots, memory counts). It imports the core
library; the core never imports it (tests/test_packaging.py checks that).

Every notebook starts with a ``parameters`` cell (papermill style)::

    MODEL = "tiny"        # or "vggt-1b"
    CHECKPOINT = None     # path to model.pt / .safetensors; None = the shipped tiny model
    DEVICE = "cpu"

and calls :func:`load_course_model` and :func:`course_scenes`, so the same notebook runs
on the shipped tiny VGGT or on the real VGGT-1B with a user's checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import warnings

import numpy as np
import torch

from ..data import render_split
from ..model import VGGT, build_vggt, load_checkpoint, load_model, load_pretrained


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_course_model(model: str = "tiny", checkpoint: str | None = None, device: str = "cpu") -> VGGT:
    """The model a notebook studies, in eval mode.

    - ``model="tiny"``: the shipped trained tiny VGGT, or ``checkpoint`` if given (our safetensors).
    - ``model="vggt-1b"``: the official architecture; ``checkpoint`` is the official ``model.pt`` /
      ``model.safetensors``. Without one the weights are random (fine for shapes, speed and memory,
      meaningless for accuracy): a warning says so.
    """
    if model == "tiny":
        net = load_pretrained("tiny") if checkpoint is None else load_model(checkpoint)
    elif model == "vggt-1b":
        net = build_vggt("vggt-1b")
        if checkpoint is None:
            warnings.warn("MODEL='vggt-1b' without CHECKPOINT: random weights, so accuracy numbers are meaningless")
        else:
            print(load_checkpoint(net, checkpoint))
    else:
        raise ValueError(f"MODEL must be 'tiny' or 'vggt-1b', got {model!r}")
    return net.to(device).eval()


def course_scenes(
    split: str = "test", count: int = 4, frames: int = 8, image_size: int | None = None, model: VGGT | None = None,
    start: int = 0,
) -> list[dict]:
    """Rendered scenes ``start .. start+count-1`` of a split, at the model's image size by default."""
    if image_size is None:
        image_size = model.config.img_size if model is not None else 112
    return [render_split(split, start + i, num_frames=frames, image_size=image_size) for i in range(count)]


def scene_images(scene: dict, device: str = "cpu") -> torch.Tensor:
    """A rendered scene's images as a model input [S, 3, H, W]."""
    return torch.from_numpy(scene["images"]).to(device)


@contextlib.contextmanager
def quiet_native_stderr():
    """Send file descriptor 2 to /dev/null inside the block. torch's C++ profiler (behind the
    benchmark timings) prints a start and a stop line there for every session; they say nothing
    about the measurement. Python errors still raise as usual."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)

