"""Exact weight-memory counts of a VGGT under FP32, BF16, W8A8 and W4A4 (no weights needed).

What is counted (bytes of the state dict; activations and workspaces are not):

    scheme  quantized linears                                    everything else
    fp32    4 B / parameter                                      4 B / parameter
    bf16    2 B / parameter (= fp16)                             2 B / parameter
    w8a8    int8 codes [N, K] + fp32 scale [N] + fp32 bias [N]   2 B / parameter (bf16)
            + fp32 activation divisor s [K] + fp32 signs v [K]
    w4a4    packed int4 codes [N, K/2] + the same fp32 vectors   2 B / parameter (bf16)

exactly what deploy.Int8Linear / Int4Linear store (deploy.linear_storage_bytes; the divisor s
exists when a layer smooths and the Hadamard signs v, the kernel's pre-scale, when it rotates,
both as in DSFQ: pass act_divisor=False / act_signs=False for RTN or SmoothQuant).
Scopes (quant/targets.py): "default" = the aggregator's frame and global blocks (the paper's
accuracy setting, 192 linears of VGGT-1B); "everything" = also the DINO patch-embed blocks and
the camera-head trunk. The DPT heads (convolutions) and the embeddings stay 16-bit.

Whole-model ratio vs FP16: the paper's "3.7x" (Table 14: 3.65x) cannot come from the default
scope. With 50.8% of our model's parameters quantized (48.1% with the official track head),
even free 4-bit storage gives at most 1.61x (1.56x); docs/memory.md has the exact numbers.

    python -m qvggt_lib.memory            # prints the markdown tables of docs/memory.md
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..deploy.int_linear import linear_storage_bytes
from ..eval.tables import markdown_table
from ..model import VGGT, VGGTConfig, get_config
from ..quant.targets import DEFAULT_SCOPES, SCOPES, check_scopes, quantizable_linears

SCHEMES = ("fp32", "bf16", "w8a8", "w4a4")
SCOPE_PRESETS = {"default": DEFAULT_SCOPES, "everything": tuple(SCOPES)}
_WEIGHT_BITS = {"w8a8": 8, "w4a4": 4}


@dataclass
class MemoryReport:
    """Byte counts of one model and one scope.

    layers[scheme]: bytes of the quantized linears (their weights + biases in fp32/bf16, their
    deployed state in w8a8/w4a4); model[scheme]: bytes of the whole state dict.
    """

    name: str
    scope: str
    total_params: int
    quantized_params: int  # weights + biases of the target linears
    num_layers: int
    layers: dict[str, int] = field(default_factory=dict)
    model: dict[str, int] = field(default_factory=dict)

    @property
    def quantized_share(self) -> float:
        return self.quantized_params / self.total_params

    def ratio_vs_fp16(self, scheme: str, part: str = "model") -> float:
        counts = self.model if part == "model" else self.layers
        return counts["bf16"] / counts[scheme]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "scope": self.scope,
            "total_params": self.total_params,
            "quantized_params": self.quantized_params,
            "num_layers": self.num_layers,
            "layers": dict(self.layers),
            "model": dict(self.model),
        }


def _meta_model(model_or_config) -> tuple[str, VGGT]:
    if isinstance(model_or_config, str):
        return model_or_config, _on_meta(get_config(model_or_config))
    if isinstance(model_or_config, VGGTConfig):
        return "custom", _on_meta(model_or_config)
    if isinstance(model_or_config, nn.Module) and isinstance(
        getattr(model_or_config, "config", None), VGGTConfig
    ):  # count the float architecture, whatever its layers have become
        return "model", _on_meta(model_or_config.config)
    raise TypeError(
        "model_or_config must be a VGGT, a VGGTConfig or a preset name, got "
        f"{type(model_or_config).__name__}"
    )


def _on_meta(config: VGGTConfig) -> VGGT:
    with torch.device("meta"):
        return VGGT(config)


def model_memory_report(
    model_or_config, scope="default", act_divisor: bool = True, act_signs: bool = True
) -> MemoryReport:
    """Exact byte counts (see the module docstring) for ``scope``: "default", "everything" or
    a tuple of scope names. Works on the meta device: vggt-1b needs no weights."""
    name, model = _meta_model(model_or_config)
    if isinstance(scope, str) and scope in SCOPE_PRESETS:
        scope_name, scopes = scope, SCOPE_PRESETS[scope]
    else:
        scopes = check_scopes(scope)
        scope_name = "+".join(scopes)
    total = sum(t.numel() for t in model.state_dict().values())
    linears = quantizable_linears(model, scopes)
    shapes = [(m.in_features, m.out_features, m.bias is not None) for m in linears.values()]
    quantized = sum(k * n + (n if b else 0) for k, n, b in shapes)
    report = MemoryReport(name, scope_name, total, quantized, len(shapes))
    for scheme in SCHEMES:
        if scheme in _WEIGHT_BITS:
            layer_bytes = sum(
                linear_storage_bytes(k, n, _WEIGHT_BITS[scheme], b, act_divisor, act_signs)
                for k, n, b in shapes
            )
            rest_bytes = 2 * (total - quantized)
        else:
            size = 4 if scheme == "fp32" else 2
            layer_bytes, rest_bytes = size * quantized, size * (total - quantized)
        report.layers[scheme] = layer_bytes
        report.model[scheme] = layer_bytes + rest_bytes
    return report


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def memory_table(names=("tiny", "vggt-1b"), scopes=("default", "everything")) -> str:
    """Markdown tables (MiB = 2^20 bytes, and exact bytes) for every model and scope."""
    reports = [model_memory_report(n, s) for n in names for s in scopes]
    header = ["model", "scope", "quantized linears", "share of params",
              *(f"{s.upper()} MiB" for s in SCHEMES), "FP16 / W8A8", "FP16 / W4A4"]
    rows = []
    for part in ("layers", "model"):
        for r in reports:
            counts = getattr(r, part)
            what = "quantized layers" if part == "layers" else "whole model"
            rows.append([r.name, f"{r.scope}: {what}", r.num_layers, f"{100 * r.quantized_share:.1f}%",
                         *(_mib(counts[s]) for s in SCHEMES),
                         f"{r.ratio_vs_fp16('w8a8', part):.2f}x", f"{r.ratio_vs_fp16('w4a4', part):.2f}x"])
    exact = []
    for r in reports:
        for part, params, counts in (("quantized layers", r.quantized_params, r.layers),
                                     ("whole model", r.total_params, r.model)):
            exact.append([r.name, r.scope, part, f"{params:,}", *(f"{counts[s]:,}" for s in SCHEMES)])
    return (markdown_table(header, rows, right=[False, False] + [True] * (len(header) - 2))
            + "\n\nExact bytes:\n\n"
            + markdown_table(["model", "scope", "part", "parameters", *(s.upper() for s in SCHEMES)],
                             exact, right=[False] * 3 + [True] * (1 + len(SCHEMES))))


if __name__ == "__main__":
    print(memory_table())
