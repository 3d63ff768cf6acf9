"""quantize(model, method, bits, calibration): a quantized copy of a VGGT, dispatched by config type.

    q_model = quantize(model, "quantvggt", bits="w4a4", calibration=scenes)
    q_model = quantize(model, QuaRotConfig(bits="w4a4", percdamp=0.01), calibration=scenes)

Every method quantizes the same layers (targets.py: by default the four linears of every
aggregator frame and global block, the paper's 192 layers of VGGT-1B) into QuantLinear with
symmetric per-output-channel weights and symmetric dynamic per-token activations; the methods
differ in their layer plans and handlers (configs.py has the table):

* SmoothQuant: s_j = max|x_j|^alpha / max|W_:j|^(1-alpha) (Xiao et al., 2023), from the float
  model's statistics.
* GPTQ (Frantar et al., 2023) runs block after block, each block's Hessians taken with the
  earlier blocks already quantized (sequential=True, as GPTQ and QuaRot do).
* QuaRot here is the paper's baseline form: a random Hadamard per layer applied online
  (hadamard.py explains why not the residual-stream rotation) plus GPTQ.
* QuantVGGT (DSFQ, Feng et al., 2025): the same rotation, then smoothing in the rotated space
  initialised from max|x R| and max|W R| over *all* calibration scenes, then block-wise
  reconstruction of s and the clip factors (reconstruction.py).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from .configs import (
    GPTQConfig,
    LayerPlan,
    QuantConfig,
    QuantVGGTConfig,
    QuaRotConfig,
    RTNConfig,
    SmoothQuantConfig,
    layer_seed,
    make_config,
)
from .gptq import gptq_quantize_weight
from .hadamard import RandomHadamard
from .linear import QuantLinear
from .observers import block_linear_statistics, check_calibration, collect_linear_statistics
from .quantizer import CLIP_INIT_LOGIT
from .reconstruction import BlockInputs, calibrate_blockwise, run_block
from .report import LayerReport, QuantReport
from .smoothing import Order, smoothing_factors
from .targets import block_chains, quantizable_linears

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
        layer = QuantLinear.from_float(
            linear, config.weight_spec(), config.act_spec(),
            make_rotation(config, plan, linear.in_features), s, plan.learnable_weight_clip,
            plan.learnable_act_clip,
            config.clip_init_logits() if isinstance(config, QuantVGGTConfig) else CLIP_INIT_LOGIT,
            order=plan.order)
        model.set_submodule(name, layer)
        layers[name] = layer
    return layers


def smoothing_statistics_plan(model: nn.Module, config: QuantConfig, plans: dict[str, LayerPlan]):
    """(names of the smoothed layers, {name: R} of those whose s lives in the rotated space).

    Those (rotate_then_smooth) take s from max|x R| and max|W R|, the others from max|x|, max|W|."""
    names = [n for n, p in plans.items() if p.smooth]
    rotations = {n: make_rotation(config, plans[n], model.get_submodule(n).in_features)
                 for n in names if plans[n].rotate and plans[n].order is Order.ROTATE_THEN_SMOOTH}
    return names, rotations


def smoothing_from_statistics(model: nn.Module, config: QuantConfig, plans: dict[str, LayerPlan],
                              act_absmax: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: s} for every smoothed layer, s = max|x|^a / max|W|^(1-a) from the per-channel
    activation maxima act_absmax[name] [K], taken of x R for rotate_then_smooth layers (then the
    weight side is W R: the paper; the reference code wrongly takes max|W|)."""
    names, rotations = smoothing_statistics_plan(model, config, plans)
    missing = [name for name in names if name not in act_absmax]
    if missing:
        raise ValueError(f"no activation statistics for the smoothed layers {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}")
    smooth = {}
    for name in names:
        weight = model.get_submodule(name).weight.detach().float()
        if name in rotations:  # W R, the weight in the rotated space
            weight = rotations[name].to(weight.device).rotate(weight)
        smooth[name] = smoothing_factors(act_absmax[name].to(weight.device), weight, config.alpha)
    return smooth


def initial_smoothing(model: nn.Module, config: QuantConfig, plans: dict[str, LayerPlan], scenes,
                      progress: bool = False) -> dict[str, torch.Tensor]:
    """s per smoothed layer from the statistics of all calibration scenes on the float model."""
    names, rotations = smoothing_statistics_plan(model, config, plans)
    if not names:
        return {}
    stats = collect_linear_statistics(model, scenes, names, rotations, progress=progress)
    act_absmax = {n: stats[n].rotated_absmax if n in rotations else stats[n].act_absmax
                  for n in names}
    return smoothing_from_statistics(model, config, plans, act_absmax)


_HANDLERS = {}


def register_handler(config_type):
    """Decorator: ``fn(config, fp_model, q_model, plans, scenes, progress, seconds)`` quantizes
    q_model (a float copy) in place for configs of exactly ``config_type``; returns the
    reconstruction.BlockCalibration records (or [])."""
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
    smooth = initial_smoothing(q_model, config, plans, scenes, progress)
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
    smooth = initial_smoothing(q_model, config, plans, scenes, progress) if config.smooth else {}
    seconds["statistics"] = time.perf_counter() - tic
    convert_layers(q_model, config, plans, smooth)
    if not config.calibrate:
        return []
    tic = time.perf_counter()
    records = calibrate_blockwise(fp_model, q_model, scenes, config, progress, resume_file)
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
            (reconstruction.CalibrationProgress); delete it once the result is saved.
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
    block_of = {name: name.rsplit(".", 2)[0] for name in plans}  # "...blocks.0.attn.qkv" -> "...blocks.0"
    layers_per_block = Counter(block_of.values())
    block_seconds = {r.name: r.seconds / layers_per_block[r.name] for r in records}
    layers = []
    for name, plan in plans.items():
        layer = q_model.get_submodule(name)
        layers.append(LayerReport(
            name, (layer.out_features, layer.in_features), config.weight_bits, config.act_bits,
            plan.rotate, plan.smooth, layer_seed(config.seed, plan.index) if plan.rotate else None,
            per_layer.get(name, block_seconds.get(block_of[name], 0.0))))
    seconds["total"] = time.perf_counter() - tic
    q_model.quant_config = config
    q_model.quant_report = QuantReport(config.method, config.bits, layers, seconds,
                                       len(scenes or []), [asdict(r) for r in records])
    return q_model
