"""Measurements for the smoothing lesson (notebook 03), also used by the sampling lesson (04).

SmoothQuant moves quantization difficulty from activations to weights with the exact identity
x W^T = (x / s)(W * s)^T, s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha) (quant/smoothing.py).
This module measures what that does, for any linear layer of the tiny model or of VGGT-1B:

* :func:`outlier_ratio` -- max / mean of a per-channel range vector (1 = all channels alike);
* :func:`smoothed_layer_errors` -- activation, weight and output error of one layer at WxAy,
  with smoothing, rotation or both in either order (``layer_quant_errors`` plus ``s``);
* :func:`smoothing_statistics` -- the per-channel activation maxima that ``quantize`` derives
  its initial ``s`` from, collected once (optionally per scene);
* :func:`quantize_from_statistics` -- the closed-form quantized copy (no block-wise
  reconstruction) built from those statistics by the library's own
  ``api.smoothing_from_statistics``, so identical to ``quantize(model, config, calibration)``
  for the same scenes, and sweeps over alpha or over calibration subsets need a single
  statistics pass;
* :func:`block_output_errors`, :func:`prediction_errors` -- how far a quantized model drifts from
  the float one, block by block and at the depth / point heads.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..metrics import depth_metrics
from ..quant.api import (
    convert_layers,
    layer_plans,
    smoothing_from_statistics,
    smoothing_statistics_plan,
)
from ..quant.configs import QuantConfig, QuantVGGTConfig, RTNConfig, SmoothQuantConfig
from ..quant.hadamard import RandomHadamard
from ..quant.observers import collect_linear_statistics, hooks
from ..quant.smoothing import Order, transform_input, transform_weight
from ..quant.targets import DEFAULT_SCOPES, target_blocks
from .rotation_analysis import relative_error, transformed_layer_errors

CLOSED_FORM = (RTNConfig, SmoothQuantConfig, QuantVGGTConfig)


def outlier_ratio(ranges: Tensor) -> float:
    """max / mean of a per-channel range vector ``ranges [K]`` (>= 1; 1 = every channel alike)."""
    ranges = ranges.detach().double().abs()
    return float(ranges.max() / ranges.mean().clamp_min(1e-300))


def smoothed_layer_errors(
    x: Tensor,
    weight: Tensor,
    s: Tensor | None = None,
    rotation: RandomHadamard | None = None,
    order: Order = Order.ROTATE_THEN_SMOOTH,
    weight_bits: int = 4,
    act_bits: int = 4,
) -> dict[str, float]:
    """Relative errors of one linear at W{weight_bits}A{act_bits} after smoothing and/or rotation.

    x [..., K] (the layer's input), weight [N, K], s [K] (None: no smoothing). The layer computes
    Q_a(x') Q_w(W')^T with x', W' from smoothing.transform_input / transform_weight (``order``
    applies when both s and rotation are given; s alone is x / s, rotation alone x R).
    Activations per token, weights per output channel, both symmetric. Returns

    * ``act``: ||Q_a(x') - x'|| / ||x'||;  ``weight``: ||Q_w(W') - W'|| / ||W'||;
    * ``output``: ||Q_a(x') Q_w(W')^T - x W^T|| / ||x W^T||  (bias left out: it is exact).
    """
    x = x.reshape(-1, x.shape[-1]).float()
    weight = weight.detach().float()
    if s is None:
        xt = x if rotation is None else rotation.rotate(x)
        wt = weight if rotation is None else rotation.rotate(weight)
    else:
        xt = transform_input(x, s.float(), rotation, order)
        wt = transform_weight(weight, s.float(), rotation, order)
    return transformed_layer_errors(x, weight, xt, wt, weight_bits, act_bits)


def smoothed_layers(model: nn.Module, config: QuantConfig):
    """(plans, names of the smoothed layers, {name: rotation} of the rotate_then_smooth ones)."""
    plans = layer_plans(model, config)
    return (plans, *smoothing_statistics_plan(model, config, plans))


def smoothing_statistics(
    model: nn.Module, calibration, config: QuantConfig, per_scene: bool = False,
    progress: bool = False,
) -> dict[str, Tensor]:
    """{layer name: per-channel max over the calibration tokens} for every layer config smooths.

    The maximum is taken in the space config computes s in, exactly as ``quantize`` does: of
    |x R| (R the layer's rotation under config's seed) for order "rotate_then_smooth", of |x|
    otherwise. Values are [K], or [N, K] (one row per scene) with ``per_scene``; since a max of
    maxima is the max, ``stats[name][subset].amax(0)`` is the statistic of any subset.
    Empty for a config that smooths nothing.
    """
    _, names, rotations = smoothed_layers(model, config)
    if not names:
        return {}
    groups = [[scene] for scene in calibration] if per_scene else [list(calibration)]
    parts = [collect_linear_statistics(model, group, names, rotations, progress=progress)
             for group in groups]
    key = {name: "rotated_absmax" if name in rotations else "act_absmax" for name in names}
    if not per_scene:
        return {name: getattr(parts[0][name], key[name]) for name in names}
    return {name: torch.stack([getattr(p[name], key[name]) for p in parts]) for name in names}


def quantize_from_statistics(
    model: nn.Module, config: QuantConfig, statistics: dict[str, Tensor] | None = None,
    **options,
) -> nn.Module:
    """The closed-form quantized copy of ``model`` for config, s from given statistics.

    Equal to ``quantize(model, config, calibration=scenes)`` when ``statistics`` is
    ``smoothing_statistics(model, scenes, config)``, for RTN, SmoothQuant and QuantVGGT with
    ``calibrate=False`` (no block-wise reconstruction: s = smoothing_factors(max, W or W R,
    alpha), clip factors at their initial value). ``options`` replace config fields (e.g.
    ``alpha=0.3``); the statistics do not depend on alpha. ``model`` is left untouched.
    """
    if options:
        config = replace(config, **options)
    if not isinstance(config, CLOSED_FORM) or getattr(config, "calibrate", False):
        raise ValueError(f"{config!r} is not closed-form (GPTQ or block-wise calibration): "
                         "use quantize()")
    plans = layer_plans(model, config)
    smooth = smoothing_from_statistics(model, config, plans, statistics or {})
    q_model = copy.deepcopy(model).eval()
    convert_layers(q_model, config, plans, smooth)
    q_model.eval()
    q_model.quant_config = config
    return q_model


def block_output_errors(reference: nn.Module, model: nn.Module, images_list,
                        scopes=DEFAULT_SCOPES) -> dict[str, float]:
    """{block name: ||B_model - B_reference|| / ||B_reference||} for every block of ``scopes``.

    Both models run the same images ([S, 3, H, W] each, one aggregator forward per model and
    scene), each through its own chain, so a quantized model's errors accumulate over depth as
    at inference. Errors are pooled over scenes (sums of squares, in float64); keys in
    execution order. Memory: the reference's block outputs of one scene at a time.
    """
    names = [name for name, _, _ in target_blocks(reference, scopes)]
    squares = {name: [0.0, 0.0] for name in names}  # ||B_model - B_reference||^2, ||B_reference||^2

    def run(net, keep, images):
        callbacks = {name: lambda out, name=name: keep(name, out.detach().double().cpu())
                     for name in names}
        with hooks(net, callbacks, on="output"), torch.no_grad():
            net.aggregator(torch.as_tensor(images).to(next(net.parameters()).device)[None])

    for images in images_list:
        ref: dict[str, Tensor] = {}
        run(reference, ref.__setitem__, images)

        def compare(name, out, ref=ref):
            squares[name][0] += float((out - ref[name]).square().sum())
            squares[name][1] += float(ref[name].square().sum())

        run(model, compare, images)
    return {name: (diff / max(norm, 1e-300)) ** 0.5 for name, (diff, norm) in squares.items()}


def prediction_errors(model: nn.Module, scenes: list[dict], reference: list[dict],
                      per_scene: bool = False) -> dict:
    """How a (quantized) model's depth and point maps differ from reference predictions.

    scenes: rendered scenes (``render_split`` / ``course_scenes`` dicts); reference: the float
    model's outputs on them, same order. Returns ``depth`` and ``world_points`` (relative error
    vs the reference, pooled over scenes) and ``depth_abs_rel`` (against the ground truth,
    median-aligned per frame, mean over scenes). With ``per_scene`` also ``depth_per_scene``
    and ``world_points_per_scene``: the same relative errors scene by scene (lists, scene order),
    from the same single forward per scene.
    """
    device = next(model.parameters()).device
    with torch.no_grad():
        outs = [model(torch.as_tensor(scene["images"]).to(device)) for scene in scenes]
    result = {
        key: relative_error(torch.cat([o[key].flatten() for o in outs]),
                            torch.cat([r[key].flatten() for r in reference]))
        for key in ("depth", "world_points")
    }
    if per_scene:
        for key in ("depth", "world_points"):
            result[f"{key}_per_scene"] = [relative_error(o[key], r[key]) for o, r in zip(outs, reference)]
    abs_rel = [depth_metrics(o["depth"][0].float().cpu().numpy(), s["depth"], s["valid"])
               ["depth_abs_rel"] for o, s in zip(outs, scenes)]
    result["depth_abs_rel"] = float(sum(abs_rel) / len(abs_rel))
    return result
