"""A faithful, state-dict-compatible VGGT and its checkpoints."""

from .checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint,
    load_model,
    load_pretrained,
    save_checkpoint,
)
from .config import CONFIGS, VGGTConfig, get_config
from .vggt import VGGT, build_vggt

__all__ = [
    "CONFIGS",
    "VGGT",
    "CheckpointError",
    "LoadReport",
    "VGGTConfig",
    "build_vggt",
    "get_config",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "save_checkpoint",
]
