"""Checkpoints: the official ``model.pt`` / ``model.safetensors`` and our own safetensors files.

Our files store the model configuration as JSON in the safetensors metadata, so
``load_model(path)`` rebuilds the right size without being told its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import VGGTConfig
from .vggt import VGGT

SKIPPED_PREFIXES = ("track_head.",)  # the tracker is out of scope; its keys are reported, not loaded
REPO_ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = {"tiny": REPO_ROOT / "data" / "checkpoints" / "vggt-tiny.safetensors"}


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} ({', '.join(sorted({k.split('.')[0] for k in self.skipped})) or 'none'})"


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model, or cannot be read."""


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` or a ``torch.save``-d plain state dict (``.pt``/``.pth``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist; check the path (official VGGT-1B: model.pt)")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path} ({type(exc).__name__}: {exc}); the file is truncated or not a "
            "state dict: download it again or re-save it with save_checkpoint"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not contain a plain state dict of tensors")
    return state, {}


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load official or our own weights into ``model``.

    ``track_head.*`` keys are skipped and reported. With ``strict``, any missing,
    unexpected or mis-shaped key raises a :class:`CheckpointError` listing them all.
    """
    state, _ = read_state_dict(path)
    report = LoadReport(skipped=sorted(k for k in state if k.startswith(SKIPPED_PREFIXES)))
    state = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if strict and (missing or unexpected or mismatched):
        def show(items):
            return ", ".join(items[:10]) + (f" ... (+{len(items) - 10} more)" if len(items) > 10 else "")

        raise CheckpointError(
            f"Checkpoint {path} does not fit this model: "
            + "; ".join(
                f"{label} ({len(items)}): {show(items)}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if items
            )
            + ". Build the model with the checkpoint's configuration (e.g. build_vggt('vggt-1b') for the official "
            "weights), or use load_model() for checkpoints saved by save_checkpoint()."
        )
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    report.loaded = sorted(loadable)
    return report


def save_checkpoint(model: VGGT, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Save weights to safetensors with the configuration in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "qvggt", "config": json.dumps(model.config.to_dict())}
    metadata.update(extra_metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_model(path: str | Path, device=None) -> VGGT:
    """Rebuild the model saved by :func:`save_checkpoint` and load its weights (strict)."""
    _, metadata = read_state_dict(path)
    if "config" not in metadata:
        raise CheckpointError(
            f"{path} has no model configuration in its metadata (it was not written by save_checkpoint); "
            "build the model yourself, e.g. build_vggt('vggt-1b'), then call load_checkpoint(model, path)"
        )
    model = VGGT(VGGTConfig.from_dict(json.loads(metadata["config"])))
    load_checkpoint(model, path, strict=True)
    model.eval()
    return model.to(device) if device is not None else model


def load_pretrained(name: str = "tiny", device=None) -> VGGT:
    """The models shipped in ``data/checkpoints`` (in eval mode). VGGT-1B cannot be downloaded here:
    build it with ``build_vggt('vggt-1b')`` and ``load_checkpoint(model, 'model.pt')``."""
    if name not in PRETRAINED:
        raise ValueError(
            f"No shipped checkpoint named {name!r}; available: {sorted(PRETRAINED)}. For VGGT-1B, download "
            "model.pt yourself and use load_checkpoint(build_vggt('vggt-1b'), path)."
        )
    path = PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"The shipped {name} checkpoint {path} is missing; train it with `qvggt train`")
    return load_model(path, device=device)
