"""save_deployed / load_deployed: a deployed VGGT as one safetensors file (state dict + layer table)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..model import VGGT, VGGTConfig
from ..model.checkpoint import CheckpointError, check_digest, read_state_dict, with_digest
from ..quant.configs import QuantConfig
from ..quant.serialization import config_to_dict
from .convert import deployed_layers
from .int_linear import LAYER_TYPES

FORMAT = "qvggt-deployed"
FORMAT_VERSION = "2"  # 2: act_signs (pre-scale) buffer, act_divisor = s
# version 1 files (no act_signs, act_divisor = s * v) hold the older signs-after rotation
# H diag(v) consistently in their weights and divisors, so they still load and run exactly
READABLE_VERSIONS = ("1", "2")


def save_deployed(model: nn.Module, path) -> Path:
    """Write a deploy()-ed VGGT to ``path`` (.safetensors): its whole state dict, and metadata

    format, format_version   "qvggt-deployed", FORMAT_VERSION
    config                   the VGGTConfig as JSON
    layers                   {name: layer_config()} of every deployed layer
    quant_config             the quantization config it came from (informational) or null
    """
    layers = deployed_layers(model)
    if not layers:
        raise ValueError("the model has no deployed layers: call deploy(model) first")
    if not isinstance(getattr(model, "config", None), VGGTConfig):
        raise TypeError("save_deployed writes VGGT models (model.config is a VGGTConfig)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quant_config = getattr(model, "quant_config", None)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "layers": json.dumps({name: layer.layer_config() for name, layer in layers.items()}),
        "quant_config": json.dumps(config_to_dict(quant_config)
                                   if isinstance(quant_config, QuantConfig) else None),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=with_digest(metadata))
    return path


def load_deployed(path, device=None, backend: str = "auto") -> VGGT:
    """Rebuild a model written by save_deployed (strict load, bit-exact); eval mode."""
    state, metadata = read_state_dict(path)
    check_digest(path, metadata)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deployed checkpoint (format "
                              f"{metadata.get('format')!r}); load_any reads every kind")
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has format version {metadata.get('format_version')!r}; "
                              f"this library reads versions {', '.join(READABLE_VERSIONS)}")
    model = VGGT(VGGTConfig.from_dict(json.loads(metadata["config"]))).eval()
    for name, config in json.loads(metadata["layers"]).items():
        if config.get("type") not in LAYER_TYPES:
            raise CheckpointError(f"{path}: unknown layer type {config.get('type')!r} at {name}")
        model.set_submodule(name, LAYER_TYPES[config["type"]].from_layer_config(config, backend))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit its own layer table: {exc}") from exc
    model.quant_config_dict = json.loads(metadata.get("quant_config", "null"))
    model.eval()
    return model.to(device) if device is not None else model
