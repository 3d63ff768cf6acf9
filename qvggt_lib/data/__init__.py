"""Procedural multi-view training data: rendering, seed splits, scene files and figures."""

from .plot import plot_scene
from .render import render_scene
from .scenes import SPLITS, load_scene, render_batch, render_split, save_scene, scene_seed

__all__ = [
    "SPLITS",
    "load_scene",
    "plot_scene",
    "render_batch",
    "render_scene",
    "render_split",
    "save_scene",
    "scene_seed",
]
