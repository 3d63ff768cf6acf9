"""Save and load quantized VGGTs as safetensors, bit-exactly.

The file holds the quantized model's whole state dict (every QuantLinear's fused weight, bias,
cached quantized weight, smoothing vector, clip logits and Hadamard signs) and, as metadata:

    format            "qvggt-quantized"          (float checkpoints: "qvggt", model/checkpoint.py)
    format_version    FORMAT_VERSION
    config            the VGGTConfig as JSON
    quant_config      {"type": "QuantVGGTConfig", "fields": {...}}
    seeds             {layer name: Hadamard seed or null}
    report            the QuantReport as JSON

load_quantized rebuilds the float VGGT from ``config``, swaps in QuantLinear skeletons exactly as
``quantize`` would (same rotations from the same seeds, placeholder s and clips), then loads the
tensors strictly. The cached quantized weights are loaded, not recomputed, so GPTQ weights
survive and outputs are identical to the saved model's.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..model import VGGT, VGGTConfig, load_model
from ..model.checkpoint import (
    CheckpointError,
    check_digest,
    read_metadata,
    read_state_dict,
    with_digest,
)
from .api import convert_layers, layer_plans
from .configs import CONFIGS, QuantConfig, layer_seed
from .linear import QuantLinear
from .report import QuantReport

FORMAT = "qvggt-quantized"
# requantizing a stored weight moves it by ~1e-5 steps (the scale recomputed on another CPU moves
# by an ulp); weights made at other bits sit tenths of a step off the grid
GRID_TOLERANCE = 1e-3
FORMAT_VERSION = "1"
CONFIG_TYPES = {cls.__name__: cls for cls in CONFIGS.values()}
# fields added after files were written, with the value every older file was made with
ADDED_FIELDS = {"QuantVGGTConfig": {"weight_rounding": "rtn", "percdamp": 0.01}}


def config_to_dict(config: QuantConfig) -> dict:
    """{"type": class name, "fields": {field: value}} (JSON-ready)."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    return {"type": type(config).__name__, "fields": {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in values.items()}}


def config_from_dict(d: dict) -> QuantConfig:
    if d.get("type") not in CONFIG_TYPES:
        raise ValueError(f"unknown quantization config type {d.get('type')!r}; "
                         f"known: {sorted(CONFIG_TYPES)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d["fields"].items()}
    return CONFIG_TYPES[d["type"]](**{**ADDED_FIELDS.get(d["type"], {}), **values})


def _seeds(model: nn.Module, config: QuantConfig) -> dict[str, int | None]:
    return {name: layer_seed(config.seed, plan.index) if plan.rotate else None
            for name, plan in layer_plans(model, config).items()}


def save_quantized(model: nn.Module, path) -> Path:
    """Write a model returned by quantize() to ``path`` (.safetensors)."""
    config = getattr(model, "quant_config", None)
    if not isinstance(config, QuantConfig):
        raise TypeError("model has no quant_config: save a model returned by quantize(), or a "
                        "float model with qvggt_lib.model.save_checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = getattr(model, "quant_report", None)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "quant_config": json.dumps(config_to_dict(config)),
        "seeds": json.dumps(_seeds(model, config)),
        "report": json.dumps(report.to_dict() if report is not None else None),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=with_digest(metadata))
    return path


def load_quantized(path, device=None) -> VGGT:
    """Rebuild and load a model written by save_quantized (strict); eval mode."""
    state, metadata = read_state_dict(path)
    check_digest(path, metadata)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a quantized checkpoint (format "
                              f"{metadata.get('format')!r}); load_any reads every kind")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {metadata.get('format_version')!r}; "
                              f"this library reads version {FORMAT_VERSION}")
    model = VGGT(VGGTConfig.from_dict(json.loads(metadata["config"]))).eval()
    config = config_from_dict(json.loads(metadata["quant_config"]))
    seeds = json.loads(metadata["seeds"])
    if seeds != _seeds(model, config):
        raise CheckpointError(f"{path}: the saved Hadamard seeds do not match the ones its config "
                              "gives; it was written by an incompatible version")
    convert_layers(model, config, layer_plans(model, config))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit its own configuration: {exc}") from exc
    off_grid = {name: error for name, layer in model.named_modules() if isinstance(layer, QuantLinear)
                and (error := layer.weight_grid_error()) > GRID_TOLERANCE}
    if off_grid:
        name, error = max(off_grid.items(), key=lambda item: item[1])
        raise CheckpointError(
            f"{path}: the weights of {len(off_grid)} layer(s) are not on the {config.bits} grid their "
            f"metadata describes (worst: {name}, {error:.2f} steps off); the metadata was edited or "
            "does not belong to these tensors: quantize the model again"
        )
    model.eval()
    model.quant_config = config
    report = json.loads(metadata.get("report", "null"))
    model.quant_report = None if report is None else QuantReport.from_dict(report)
    return model.to(device) if device is not None else model


def load_any(path, device=None) -> VGGT:
    """A float (save_checkpoint), quantized (save_quantized) or deployed (save_deployed) checkpoint,
    told apart by the format in its metadata."""
    fmt = read_metadata(path).get("format")
    if fmt == FORMAT:
        return load_quantized(path, device=device)
    from .. import deploy  # the deploy layer sits above this one

    if fmt == deploy.FORMAT:
        return deploy.load_deployed(path, device=device)
    return load_model(path, device=device)
