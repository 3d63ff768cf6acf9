"""Checkpoints: the official ``model.pt`` / ``model.safetensors`` and our own safetensors files.

Our files store the model configuration as JSON in the safetensors metadata, so
``load_model(path)`` rebuilds the right size without being told its name.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import VGGTConfig, get_config
from .vggt import VGGT

SKIPPED_PREFIXES = ("track_head.",)  # the tracker is out of scope; its keys are reported, not loaded
REPO_ROOT = Path(__file__).resolve().parents[2]
# files of the quantization and deployment layers (named here, read there)
OTHER_FORMATS = {"qvggt-quantized": "qvggt_lib.quant.load_quantized",
                 "qvggt-deployed": "qvggt_lib.deploy.load_deployed"}
PRETRAINED = {"tiny": REPO_ROOT / "data" / "checkpoints" / "vggt-tiny.safetensors"}


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did. With ``strict=False`` the model's ``missing`` keys keep their
    random initialisation, so they are always listed (and printed), never hidden."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        groups = ", ".join(sorted({k.split(".")[0] for k in self.skipped})) or "none"
        text = f"loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} ({groups})"
        for label, items in (("MISSING, left randomly initialised", self.missing),
                             ("unexpected, ignored", self.unexpected), ("shape mismatch, ignored", self.mismatched)):
            if items:
                text += f"; {label} ({len(items)}): {_show(items)}"
        return text


def _show(items: list[str]) -> str:
    return ", ".join(items[:10]) + (f" ... (+{len(items) - 10} more)" if len(items) > 10 else "")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model, or cannot be read."""


DIGEST_KEY = "metadata_sha256"


def with_digest(metadata: dict[str, str]) -> dict[str, str]:
    """metadata plus the SHA-256 of its other entries, so that an edit made after saving (a field
    that changes no tensor shape, like rope_freq or the bits label) is noticed when loading."""
    text = json.dumps({k: v for k, v in metadata.items() if k != DIGEST_KEY}, sort_keys=True)
    return {**metadata, DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()}


def check_digest(path, metadata: dict[str, str]) -> None:
    """Raise if the file's metadata was changed after saving (files without a digest pass)."""
    if DIGEST_KEY in metadata and with_digest(metadata)[DIGEST_KEY] != metadata[DIGEST_KEY]:
        raise CheckpointError(f"{path}: its metadata was edited after it was saved (the digest does not "
                              "match); the configuration may not describe the tensors: save the model again")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a ``.safetensors`` file, read from its header alone ({} for other files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist; check the path (official VGGT-1B: model.pt)")
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path} ({type(exc).__name__}: {exc}); the file is truncated or not a "
            "state dict: download it again or re-save it with save_checkpoint"
        ) from exc


def _torch_load_mapped(path: Path):
    """torch.load memory-mapped (the tensors stay in the file until touched); files in the legacy
    pre-1.6 format cannot be mapped and are read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` or a ``torch.save``-d plain state dict (``.pt``/``.pth``)."""
    path = Path(path)
    metadata = read_metadata(path)  # also checks that the file exists and its header reads
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path)), metadata
        state = _torch_load_mapped(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path}: it is not a torch.save-d state dict, or it holds objects "
            "other than tensors, which loading with weights_only=True refuses for safety; re-save the "
            "state dict alone (torch.save(model.state_dict(), path)) or use a .safetensors file"
        ) from exc
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
    unexpected or mis-shaped key raises a :class:`CheckpointError` listing them all; without it
    they are listed in the returned report. Non-float tensors for float parameters always raise.
    A model built on the ``meta`` device takes the file's tensors themselves (``assign``): no
    second copy of the weights is made, and it must load strictly.
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
    not_float = sorted(f"{k} ({state[k].dtype})" for k in set(own) & set(state)
                       if own[k].is_floating_point() and not state[k].is_floating_point())
    if not_float:
        raise CheckpointError(
            f"Checkpoint {path} stores non-float weights where the model has float ones: {_show(not_float)}. "
            "It is not a float VGGT checkpoint (a quantized or deployed file? use load_any or load_deployed)"
        )
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            f"Checkpoint {path} does not fit this model: "
            + "; ".join(
                f"{label} ({len(items)}): {_show(items)}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if items
            )
            + ". Build the model with the checkpoint's configuration (e.g. build_vggt('vggt-1b') for the official "
            "weights), or use load_model() for checkpoints saved by save_checkpoint()."
        )
    assign = any(p.is_meta for p in model.parameters())
    if assign and not strict:
        raise ValueError("a model on the meta device has no weights to keep: load it with strict=True")
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False, assign=assign)
    report.loaded = sorted(loadable)
    report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched
    return report


def save_checkpoint(model: VGGT, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Save a float VGGT's weights to safetensors with the configuration in the metadata."""
    with torch.device("meta"):
        float_keys = set(VGGT(model.config).state_dict())
    extra = sorted(set(model.state_dict()) - float_keys)
    if extra:
        raise TypeError(
            f"save_checkpoint writes float models, but this one has {len(extra)} tensors a float VGGT "
            f"does not ({_show(extra)}): save a quantize()-d model with "
            "qvggt_lib.quant.save_quantized, a deploy()-ed one with qvggt_lib.deploy.save_deployed"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "qvggt", "config": json.dumps(model.config.to_dict())}
    metadata = with_digest({**metadata, **(extra_metadata or {})})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_official(path: str | Path, config: str = "vggt-1b", device=None) -> VGGT:
    """The official weights (``model.pt`` or ``model.safetensors`` of facebook/VGGT-1B) in eval mode.

    The model is built on the ``meta`` device and its parameters take the file's tensors
    (memory-mapped for ``.pt``), so loading the 4.7 GB checkpoint needs its size once, not twice.
    """
    with torch.device("meta"):
        model = VGGT(get_config(config))
    try:
        load_checkpoint(model, path, strict=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (a file without our metadata is read as the official {config} "
                              "checkpoint; our own files are written by save_checkpoint)") from None
    model.aggregator.reset_constants()
    model.eval()
    return model.to(device) if device is not None else model


def load_model(path: str | Path, device=None) -> VGGT:
    """Rebuild the model saved by :func:`save_checkpoint` and load its weights (strict); a file
    without our metadata (the official ``model.pt``) goes to :func:`load_official`."""
    metadata = read_metadata(path)  # the header only: nothing is allocated before the checks
    loader = OTHER_FORMATS.get(metadata.get("format"))
    if loader is not None:
        raise CheckpointError(f"{path} is a {metadata['format']} checkpoint, not a float one: load it with "
                              f"{loader} (or qvggt_lib.quant.load_any, which reads every kind)")
    check_digest(path, metadata)
    if "config" not in metadata:
        return load_official(path, device=device)
    try:
        config = VGGTConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as exc:  # json errors are ValueErrors
        raise CheckpointError(f"{path} has an invalid model configuration in its metadata: {exc}") from exc
    check_shapes_before_building(config, path)
    model = VGGT(config)
    load_checkpoint(model, path, strict=True)
    model.eval()
    return model.to(device) if device is not None else model


def check_shapes_before_building(config: VGGTConfig, path: str | Path) -> None:
    """Compare the file's tensor shapes with a model built on the ``meta`` device (no memory),
    so a configuration that does not match its tensors fails before anything is allocated."""
    from safetensors import safe_open

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VGGT(config).state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    stored = {k: v for k, v in stored.items() if not k.startswith(SKIPPED_PREFIXES)}
    wrong = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    if wrong or missing or unexpected:
        raise CheckpointError(
            f"{path}: the configuration in its metadata does not match its tensors (shape mismatch "
            f"{len(wrong)}: {_show(wrong)}; missing {len(missing)}: {_show(missing)}; unexpected "
            f"{len(unexpected)}: {_show(unexpected)}). The file was edited or corrupted: save it again "
            "with save_checkpoint"
        )


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
