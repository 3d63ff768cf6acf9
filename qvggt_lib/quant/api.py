"""Quantize a VGGT in one call (torchao-style configs, dispatched by type).

    q_model = quantize(model, "quantvggt", bits="w4a4", calibration=scenes)
    q_model = quantize(model, QuaRotConfig(bits="w4a4", percdamp=0.01), calibration=scenes)

Every method quantizes the same layers (targets.py: by default the four linears of every
aggregator frame and global block, the paper's 192 layers of VGGT-1B) into QuantLinear with
symmetric per-output-channel weights and symmetric dynamic per-token activations:

    method        config             weights           per layer          calibration needs
    rtn           RTNConfig          round to nearest  -                  nothing
    smoothquant   SmoothQuantConfig  RTN               x / s              act max (FP model)
    gptq          GPTQConfig         GPTQ              -                  Hessians
    quarot        QuaRotConfig       GPTQ (or RTN)     x R                Hessians of x R
    quantvggt     QuantVGGTConfig    RTN + LWC         (x R) / s, LAC     act max, block recon.

SmoothQuant: s_j = max|x_j|^alpha / max|W_:j|^(1-alpha) (Xiao et al., 2023). GPTQ (Frantar et al.,
2023) runs block after block, each block's Hessians taken with the earlier blocks already
quantized (sequential=True, as GPTQ and QuaRot do). QuaRot here is the paper's baseline form: a
random Hadamard per layer applied online (hadamard.py explains why not the residual-stream
rotation) plus GPTQ. QuantVGGT (DSFQ, Feng et al., 2025): the same rotation, then smoothing in
the rotated space initialised from max|x R| and max|W R| over *all* calibration scenes, then
block-wise reconstruction of s and the clip factors (calibration.py).

R of layer number i (execution order) is RandomHadamard(K, seed=layer_seed(config.seed, i)), so
a config fully determines every rotation (serialization.py rebuilds them from it).
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from .calibration import (
    INPUT_FROM,
    BlockInputs,
    block_linear_statistics,
    calibrate_blockwise,
    check_calibration,
    collect_linear_statistics,
    run_block,
)
from .gptq import gptq_quantize_weight
from .hadamard import RandomHadamard
from .linear import ORDERS, QuantLinear
from .quantizer import QuantSpec
from .smoothing import smoothing_factors
from .targets import (
    DEFAULT_SCOPES,
    block_chains,
    check_scopes,
    is_layernorm_fed,
    quantizable_linears,
    set_submodule,
)

BITS = ("w8a8", "w6a6", "w4a8", "w4a4")  # the paper's settings; any "wXaY" with X, Y in 2..8 works
FLOAT_BITS = 16  # "w16a16" (or w16aY / wXa16) keeps that side in float: an exactness check
DEFAULT_EPOCHS = 3  # the paper: 15; the cost is measured in QuantVGGTConfig's docstring


def parse_bits(bits: str) -> tuple[int, int]:
    """"w4a8" -> (4, 8): weight and activation bits, each 2..8 or 16 (= not quantized)."""
    match = re.fullmatch(r"w(\d+)a(\d+)", bits) if isinstance(bits, str) else None
    valid = match and all(2 <= int(b) <= 8 or int(b) == FLOAT_BITS for b in match.groups())
    if not valid:
        raise ValueError(f"unknown bits {bits!r}; use one of {BITS} (or 'wXaY' with X, Y in 2..8, "
                         f"16 = float)")
    return int(match.group(1)), int(match.group(2))


class LayerPlan(NamedTuple):
    """How one linear is built: enough to rebuild its skeleton when loading a checkpoint."""

    index: int  # position in execution order among the config's target linears
    rotate: bool
    smooth: bool
    learnable_weight_clip: bool
    learnable_act_clip: bool
    order: str


@dataclass(frozen=True)
class QuantConfig:
    """Fields shared by every method.

    Args:
        bits: "w8a8", "w6a6", "w4a8" or "w4a4" (weight / activation bits).
        scopes: which blocks (targets.SCOPES); default the aggregator's frame and global blocks.
        seed: seeds every random Hadamard (and the calibration shuffles).
        weight_group_size: None = one scale per output channel (the paper); g = one scale per
            run of g input channels (must divide every target layer's K).
    """

    bits: str = "w4a4"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    seed: int = 0
    weight_group_size: int | None = None

    method: ClassVar[str] = ""

    def __post_init__(self):
        parse_bits(self.bits)
        object.__setattr__(self, "scopes", check_scopes(self.scopes))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        group = self.weight_group_size
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 1):
            raise ValueError(f"weight_group_size must be None or a positive integer, got {group!r}")

    @property
    def weight_bits(self) -> int:
        return parse_bits(self.bits)[0]

    @property
    def act_bits(self) -> int:
        return parse_bits(self.bits)[1]

    def weight_spec(self) -> QuantSpec | None:
        if self.weight_bits == FLOAT_BITS:
            return None
        if self.weight_group_size is None:
            return QuantSpec(self.weight_bits, "per_channel")
        return QuantSpec(self.weight_bits, "per_group", group_size=self.weight_group_size)

    def act_spec(self) -> QuantSpec | None:
        return None if self.act_bits == FLOAT_BITS else QuantSpec(self.act_bits, "per_token")

    @property
    def needs_calibration(self) -> bool:
        return False

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, False, False, False, False, ORDERS[0])


@dataclass(frozen=True)
class RTNConfig(QuantConfig):
    """Round-to-nearest weights and activations, nothing else (the paper's RTN row)."""

    method: ClassVar[str] = "rtn"


@dataclass(frozen=True)
class SmoothQuantConfig(QuantConfig):
    """SmoothQuant: x / s and W * s with s from the FP activation max, then RTN.

    Args:
        alpha: migration strength (0.5).
        smooth_layers: "layernorm_fed" (SmoothQuant: only qkv and fc1, whose s folds into the
            preceding LayerNorm) or "all" (also proj and fc2, an online division).
    """

    alpha: float = 0.5
    smooth_layers: str = "layernorm_fed"

    method: ClassVar[str] = "smoothquant"

    def __post_init__(self):
        super().__post_init__()
        _check_alpha(self.alpha)
        if self.smooth_layers not in ("layernorm_fed", "all"):
            raise ValueError(f"smooth_layers must be 'layernorm_fed' or 'all', got "
                             f"{self.smooth_layers!r}")

    @property
    def needs_calibration(self) -> bool:
        return True

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        smooth = self.smooth_layers == "all" or is_layernorm_fed(name)
        return LayerPlan(index, False, smooth, False, False, ORDERS[0])


@dataclass(frozen=True)
class GPTQConfig(QuantConfig):
    """GPTQ weights (gptq.py), RTN per-token activations.

    Args:
        percdamp: Hessian damping, a fraction of mean(diag H).
        block_size: columns per lazy-update block.
        act_order: quantize columns by decreasing H_jj.
        sequential: Hessians of block i with blocks < i already quantized (GPTQ); False takes
            every Hessian from the FP model in one pass.
    """

    percdamp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    sequential: bool = True

    method: ClassVar[str] = "gptq"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.percdamp < 1:
            raise ValueError(f"percdamp must be in [0, 1), got {self.percdamp!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                or self.block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {self.block_size!r}")

    @property
    def uses_gptq(self) -> bool:
        return self.weight_bits != FLOAT_BITS

    @property
    def needs_calibration(self) -> bool:
        return self.uses_gptq


@dataclass(frozen=True)
class QuaRotConfig(GPTQConfig):
    """A random Hadamard rotation per layer (online x R, fused W R), then GPTQ (QuaRot's default)
    or, with gptq=False, RTN. Fields as GPTQConfig."""

    gptq: bool = True

    method: ClassVar[str] = "quarot"

    @property
    def uses_gptq(self) -> bool:
        return self.gptq and self.weight_bits != FLOAT_BITS

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, True, False, False, False, ORDERS[0])


ABLATIONS = {  # Table 4 of the paper; all keep the block-wise calibration of the clip factors
    "base": {"rotate": False, "smooth": False},
    "rotation": {"rotate": True, "smooth": False},
    "smoothing": {"rotate": False, "smooth": True},
    "smooth_then_rotate": {"rotate": True, "smooth": True, "order": "smooth_then_rotate"},
    "dsfq": {"rotate": True, "smooth": True, "order": "rotate_then_smooth"},
}


@dataclass(frozen=True)
class QuantVGGTConfig(QuantConfig):
    """QuantVGGT's DSFQ: y = Q_a((x R) / s) Q_w((W R) * s)^T, then block-wise calibration.

    Args:
        alpha: smoothing strength of the initial s (0.5).
        rotate, smooth, order: the Table 4 ablation switches (see ABLATIONS and
            QuantVGGTConfig.ablation); order "rotate_then_smooth" (DSFQ) or
            "smooth_then_rotate" (only matters when both are on).
        calibrate: block-wise reconstruction of s and the clip factors (calibration.py).
        learnable_weight_clip, learnable_act_clip: LWC per output channel, LAC per layer
            (ignored for a side kept in float), both initialised at sigmoid(clip_init_logit).
        epochs: passes over the calibration set per block. The paper uses 15; the default 3
            keeps the tiny model's W4A4 calibration (40 scenes x 8 frames, 12 blocks) to a
            few minutes on CPU. Measured on a 2-core VM, 1 thread: 168 s in all (statistics
            12.5 s; block inputs, targets and MSEs ~32 s; ~41 s per epoch of 480 AdamW
            steps), so ~4 min at 5 epochs and ~11 min at the paper's 15.
        lr_smooth, lr_clip: AdamW learning rates (paper: 5e-3, 5e-2; the code: 1e-3, 1e-2).
        input_from: "fp" (block inputs from the FP model, as the reference code) or
            "quantized" (from the already-calibrated quantized blocks, QDrop-style).
    """

    alpha: float = 0.5
    rotate: bool = True
    smooth: bool = True
    order: str = "rotate_then_smooth"
    calibrate: bool = True
    learnable_weight_clip: bool = True
    learnable_act_clip: bool = True
    epochs: int = DEFAULT_EPOCHS
    lr_smooth: float = 5e-3
    lr_clip: float = 5e-2
    input_from: str = "fp"
    clip_init_logit: float = 4.0

    method: ClassVar[str] = "quantvggt"

    def __post_init__(self):
        super().__post_init__()
        _check_alpha(self.alpha)
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        for name in ("lr_smooth", "lr_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.input_from not in INPUT_FROM:
            raise ValueError(f"input_from must be one of {INPUT_FROM}, got {self.input_from!r}")

    @classmethod
    def ablation(cls, name: str, **fields_) -> QuantVGGTConfig:
        """The Table 4 variants: "base", "rotation", "smoothing", "smooth_then_rotate", "dsfq"."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose one of {tuple(ABLATIONS)}")
        return cls(**{**ABLATIONS[name], **fields_})

    @property
    def needs_calibration(self) -> bool:
        return self.smooth or self.calibrate

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, self.rotate, self.smooth,
                         self.learnable_weight_clip and self.weight_bits != FLOAT_BITS,
                         self.learnable_act_clip and self.act_bits != FLOAT_BITS, self.order)


def _check_alpha(alpha) -> None:
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


CONFIGS = {cls.method: cls for cls in (RTNConfig, SmoothQuantConfig, GPTQConfig, QuaRotConfig,
                                       QuantVGGTConfig)}
METHODS = tuple(CONFIGS)


def make_config(method, bits: str | None = None, **options) -> QuantConfig:
    """A config from an instance (as is, or with bits/options replaced) or a method name."""
    if isinstance(method, QuantConfig):
        changes = {**options, **({} if bits is None else {"bits": bits})}
        return _replace(method, changes) if changes else method
    if method not in CONFIGS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS} or pass a config")
    return _replace(CONFIGS[method], {**options, **({} if bits is None else {"bits": bits})})


def _replace(config, changes: dict) -> QuantConfig:
    cls = config if isinstance(config, type) else type(config)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    base = {} if isinstance(config, type) else {f.name: getattr(config, f.name)
                                                for f in fields(cls)}
    return cls(**{**base, **changes})


def layer_seed(seed: int, index: int) -> int:
    """Hadamard seed of target layer ``index`` (execution order) under config seed ``seed``."""
    return seed * 1_000_003 + index


# ----------------------------------------------------------------------------- reports


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    weight_bits: int
    act_bits: int
    rotation: bool
    smooth: bool
    hadamard_seed: int | None
    seconds: float = 0.0  # calibration time of this layer (a quarter of its block's, for recon.)


@dataclass
class QuantReport:
    """What quantize() did: per layer, and the wall times of its phases (seconds)."""

    method: str
    bits: str
    layers: list[LayerReport]
    seconds: dict[str, float] = field(default_factory=dict)
    num_calibration_scenes: int = 0
    blocks: list[dict] = field(default_factory=list)  # calibration.BlockCalibration as dicts

    def summary(self) -> str:
        rotated = sum(layer.rotation for layer in self.layers)
        smoothed = sum(layer.smooth for layer in self.layers)
        params = sum(a * b for a, b in (layer.shape for layer in self.layers))
        times = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        lines = [(f"{self.method} {self.bits}: {len(self.layers)} linears ({params / 1e6:.2f}M "
                  f"weights), {rotated} rotated, {smoothed} smoothed, "
                  f"{self.num_calibration_scenes} calibration scenes; {times}")]
        if self.blocks:
            before = sum(b["mse_before"] for b in self.blocks) / len(self.blocks)
            after = sum(b["mse_after"] for b in self.blocks) / len(self.blocks)
            lines.append(f"block reconstruction: {len(self.blocks)} blocks, mean output MSE "
                         f"{before:.3g} -> {after:.3g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantReport:
        layers = [LayerReport(**{**layer, "shape": tuple(layer["shape"])}) for layer in d["layers"]]
        return cls(**{**d, "layers": layers})


METHOD_NAMES = {"fp": "FP", "rtn": "RTN", "smoothquant": "SmoothQuant", "gptq": "GPTQ",
                "quarot": "QuaRot", "quantvggt": "QuantVGGT"}
TABLE_COLUMNS = {"auc30": "AUC@30", "auc15": "AUC@15", "auc5": "AUC@5", "auc3": "AUC@3",
                 "depth_abs_rel": "AbsRel", "point_acc": "Acc", "point_comp": "Comp"}
LOWER_IS_BETTER = {"depth_abs_rel", "point_acc", "point_comp"}


def retention(key: str, value: float, reference: float) -> float:
    """Percent of the float model kept: Q / FP * 100, or FP / Q * 100 for lower-is-better keys
    (AbsRel, Acc, Comp), so 100 means "as good as float" and smaller is worse either way."""
    numerator, denominator = (reference, value) if key in LOWER_IS_BETTER else (value, reference)
    return 100.0 * numerator / denominator if denominator else float("nan")


def comparison_table(rows: list[dict], columns: dict[str, str] = TABLE_COLUMNS,
                     retained=("auc30", "depth_abs_rel")) -> str:
    """A markdown table in the shape of the paper's Table 1.

    rows: dicts with "method", "bits" and "metrics" (an evaluate() result or any dict holding
    the column keys); rows[0] is the float reference that the retention columns divide by.
    An optional "label" replaces the method name. AUC columns get one decimal, "*seconds"
    none, the rest three.
    """
    reference = rows[0]["metrics"]
    head = ["Method", "Bits", *columns.values(),
            *(f"{columns.get(k, k)} ret. (%)" for k in retained)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in rows:
        metrics = row["metrics"]
        cells = [row.get("label") or METHOD_NAMES.get(row["method"], row["method"]),
                 "fp32" if row["method"] == "fp" else row["bits"].upper()]
        cells += [_cell(metrics.get(k), 1 if k.startswith("auc") else 0 if k.endswith("seconds")
                        else 3) for k in columns]
        cells += [_cell(None if metrics.get(k) is None or reference.get(k) is None
                        else retention(k, metrics[k], reference[k]), 1) for k in retained]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- conversion


def layer_plans(model: nn.Module, config: QuantConfig) -> dict[str, LayerPlan]:
    """{name: LayerPlan} of config's target linears in execution order."""
    names = quantizable_linears(model, config.scopes)
    return {name: config.layer_plan(name, i) for i, name in enumerate(names)}


def make_rotation(config: QuantConfig, plan: LayerPlan, in_features: int) -> RandomHadamard | None:
    return RandomHadamard(in_features, layer_seed(config.seed, plan.index)) if plan.rotate else None


def convert_layers(model: nn.Module, config: QuantConfig, plans: dict[str, LayerPlan],
                   smooth: dict | None = None) -> dict[str, QuantLinear]:
    """Swap the linears ``plans`` names for QuantLinears (in place); smooth: initial s per name
    (ones where missing, e.g. a skeleton for loading)."""
    layers = {}
    for name, plan in plans.items():
        linear = model.get_submodule(name)
        s = None
        if plan.smooth:
            s = (smooth or {}).get(name)
            s = torch.ones(linear.in_features, device=linear.weight.device) if s is None else s
        clip_init = getattr(config, "clip_init_logit", 4.0)
        layer = QuantLinear.from_float(
            linear, config.weight_spec(), config.act_spec(),
            make_rotation(config, plan, linear.in_features), s, plan.learnable_weight_clip,
            plan.learnable_act_clip, clip_init, order=plan.order)
        set_submodule(model, name, layer)
        layers[name] = layer
    return layers


def _initial_smoothing(model, config, plans, scenes, progress) -> dict:
    """s per smoothed layer from statistics of all calibration scenes on the float model.

    In the rotated space (rotate_then_smooth): max|x R|^a / max|W R|^(1-a) (the paper; the
    reference code wrongly takes max|W|). Otherwise max|x|^a / max|W|^(1-a)."""
    names = [n for n, p in plans.items() if p.smooth]
    if not names:
        return {}
    rotations = {n: make_rotation(config, plans[n], model.get_submodule(n).in_features)
                 for n in names if plans[n].rotate and plans[n].order == "rotate_then_smooth"}
    stats = collect_linear_statistics(model, scenes, names, rotations, progress=progress)
    alpha = config.alpha
    smooth = {}
    for name in names:
        weight = model.get_submodule(name).weight.detach().float()
        if name in rotations:  # W R, the weight in the rotated space
            rotated = rotations[name].to(weight.device).rotate(weight)
            smooth[name] = smoothing_factors(stats[name].rotated_absmax, rotated, alpha)
        else:
            smooth[name] = smoothing_factors(stats[name].act_absmax, weight, alpha)
    return smooth


_HANDLERS = {}


def register_handler(config_type):
    """Decorator: ``fn(config, fp_model, q_model, plans, scenes, progress, seconds)`` quantizes
    q_model (a float copy) in place for configs of exactly ``config_type``; returns the
    calibration.BlockCalibration records (or [])."""
    def decorator(fn):
        _HANDLERS[config_type] = fn
        return fn
    return decorator


@register_handler(RTNConfig)
def _rtn(config, fp_model, q_model, plans, scenes, progress, seconds):
    convert_layers(q_model, config, plans)
    return []


@register_handler(SmoothQuantConfig)
def _smoothquant(config, fp_model, q_model, plans, scenes, progress, seconds):
    tic = time.perf_counter()
    smooth = _initial_smoothing(q_model, config, plans, scenes, progress)
    seconds["statistics"] = time.perf_counter() - tic
    convert_layers(q_model, config, plans, smooth)
    return []


@register_handler(GPTQConfig)
@register_handler(QuaRotConfig)
def _gptq(config, fp_model, q_model, plans, scenes, progress, seconds):
    if not config.uses_gptq:
        convert_layers(q_model, config, plans)
        return []
    spec, per_layer = config.weight_spec(), {}
    rotations = {n: make_rotation(config, p, q_model.get_submodule(n).in_features)
                 for n, p in plans.items() if p.rotate}

    def gptq_layers(names, stats, tic):  # stats keyed like names
        layers = convert_layers(q_model, config, {n: plans[n] for n in names})
        for name, layer in layers.items():
            layer.set_quantized_weight(gptq_quantize_weight(
                layer.transformed_weight(), stats[name].hessian, spec, config.percdamp,
                config.block_size, config.act_order))
        per_layer.update(dict.fromkeys(names, (time.perf_counter() - tic) / len(names)))
        return layers

    if not config.sequential:  # every Hessian from the float model, one pass
        tic = time.perf_counter()
        stats = collect_linear_statistics(q_model, scenes, list(plans), rotations, True, progress)
        gptq_layers(list(plans), stats, tic)
        seconds["gptq_per_layer"] = per_layer
        return []
    # Sequential, as GPTQ and QuaRot: block i's Hessians see the output of the already
    # quantized blocks < i, with weights quantized and activations still in float.
    act_quantizers = {}
    total = sum(1 for c in block_chains(q_model, config.scopes) for _ in c)
    bar = tqdm(total=total, desc="GPTQ", unit="block", disable=not progress)
    try:
        for chain in block_chains(q_model, config.scopes):
            inputs = BlockInputs(q_model, chain, scenes)
            for block_name, _, block in chain:
                tic = time.perf_counter()
                prefix = block_name + "."
                local = {n[len(prefix):]: n for n in plans if n.startswith(prefix)}
                if local:
                    stats = block_linear_statistics(
                        block, inputs.args, list(local),
                        {k: rotations[n] for k, n in local.items() if n in rotations}, True)
                    layers = gptq_layers(list(local.values()),
                                         {n: stats[k] for k, n in local.items()}, tic)
                    for name, layer in layers.items():
                        act_quantizers[name], layer.act_quantizer = layer.act_quantizer, None
                inputs.advance(run_block(block, inputs.args))
                bar.update()
    finally:
        bar.close()
        for name, quantizer in act_quantizers.items():
            q_model.get_submodule(name).act_quantizer = quantizer
    seconds["gptq_per_layer"] = per_layer
    return []


@register_handler(QuantVGGTConfig)
def _quantvggt(config, fp_model, q_model, plans, scenes, progress, seconds, resume_file=None):
    tic = time.perf_counter()
    smooth = _initial_smoothing(q_model, config, plans, scenes, progress) if config.smooth else {}
    seconds["statistics"] = time.perf_counter() - tic
    convert_layers(q_model, config, plans, smooth)
    if not config.calibrate:
        return []
    tic = time.perf_counter()
    records = calibrate_blockwise(fp_model, q_model, scenes, config.epochs, config.lr_smooth,
                                  config.lr_clip, config.input_from, config.seed, progress, resume_file)
    seconds["block_calibration"] = time.perf_counter() - tic
    return records


def quantize(model: nn.Module, method, bits: str | None = None, calibration=None,
             progress: bool = True, resume_file=None, **options) -> nn.Module:
    """A quantized copy of ``model`` (which is left untouched).

    Args:
        model: a float VGGT.
        method: a config instance, or a name in METHODS with ``bits`` and ``options`` forwarded
            to its config (e.g. quantize(m, "quantvggt", bits="w4a4", epochs=15)).
        calibration: list of scenes [S, 3, H, W] in [0, 1]; required by every method but RTN.
        resume_file: QuantVGGT only: a side file that records each calibrated block, so that
            an interrupted run given the same file resumes after the last finished block
            (calibration.CalibrationProgress); delete it once the result is saved.
    Returns:
        A VGGT in eval mode whose target linears are QuantLinear, with attributes
        ``quant_config`` (the config) and ``quant_report`` (a QuantReport). Keep it in eval
        mode: QuantLinear recomputes (RTN) its cached weights on a train -> eval switch, which
        would discard GPTQ's.
    """
    config = make_config(method, bits, **options)
    if resume_file is not None and not isinstance(config, QuantVGGTConfig):
        raise ValueError(f"resume_file applies to QuantVGGT's block calibration, not to {config.method!r}")
    linears = quantizable_linears(model, config.scopes)
    for name, linear in linears.items():
        if not isinstance(linear, nn.Linear):  # a value error: the model, not its type, is wrong
            raise ValueError(  # noqa: TRY004
                f"{name} is a {type(linear).__name__}, not an nn.Linear: quantize "
                             "the float model, not an already quantized one")
        group = config.weight_group_size
        if group is not None and linear.in_features % group:
            raise ValueError(f"weight_group_size {group} does not divide K={linear.in_features} "
                             f"of {name}")
    scenes = None
    if config.needs_calibration or calibration is not None:
        if calibration is None:
            raise ValueError(f"method {config.method!r} needs calibration data: pass "
                             "calibration=[scene [S, 3, H, W], ...] (e.g. calibration_scenes())")
        scenes = check_calibration(calibration, model)
    tic = time.perf_counter()
    q_model = copy.deepcopy(model).eval()
    plans = layer_plans(q_model, config)
    seconds: dict = {}
    extra = {} if resume_file is None else {"resume_file": resume_file}
    records = _HANDLERS[type(config)](config, model, q_model, plans, scenes, progress, seconds, **extra)
    q_model.eval()
    per_layer = seconds.pop("gptq_per_layer", {})
    block_seconds = {r.name: r.seconds for r in records}
    layers = []
    for name, plan in plans.items():
        layer = q_model.get_submodule(name)
        block = name.rsplit(".", 2)[0]
        layers.append(LayerReport(
            name, (layer.out_features, layer.in_features), config.weight_bits, config.act_bits,
            plan.rotate, plan.smooth, layer_seed(config.seed, plan.index) if plan.rotate else None,
            per_layer.get(name, block_seconds.get(block, 0.0) / 4)))
    seconds["total"] = time.perf_counter() - tic
    q_model.quant_config = config
    q_model.quant_report = QuantReport(config.method, config.bits, layers, seconds,
                                       len(scenes or []), [asdict(r) for r in records])
    return q_model
