"""Measurements for the calibration-set lesson (notebook 04): NFDS picks, and what they cost.

Comparing calibration picks (random / filtered / clustered / NFDS, quant/sampling.py) over
several seeds means quantizing once per pick. With closed-form smoothing (no block-wise
reconstruction) a pick only enters through the per-channel activation maxima of its scenes,
and a max over a subset is the max of per-scene maxima. So one forward per candidate is
enough for everything:

* :func:`candidate_statistics` -- one aggregator forward per candidate gives the NFDS
  deep-layer statistics and frame-aware features *and* each smoothed layer's per-channel
  max|x| (or max|x R|) per candidate;
* :func:`subset_statistics` -- the statistics of any pick, without another forward, to feed
  ``smoothing_analysis.quantize_from_statistics`` (equal to ``quantize(model, config,
  calibration=[pool[i] for i in pick])`` with ``calibrate=False``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..quant.configs import QuantConfig
from ..quant.observers import AbsMaxObserver, hooks
from ..quant.sampling import collect_candidate_features
from .smoothing_analysis import smoothed_layers


def candidate_statistics(
    model: nn.Module, candidates, config: QuantConfig, num_deep_blocks: int = 4,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Tensor]]:
    """One forward per candidate -> (stats [N, 4 * num_deep_blocks], features [N, S-1], absmax).

    stats and features are those of ``sampling.collect_candidate_features`` (same values);
    absmax is {layer name: [N, K]}, row n the per-channel max over candidate n's tokens of
    |x| (or |x R| for config's rotate_then_smooth layers), for every layer config smooths,
    i.e. ``smoothing_analysis.smoothing_statistics(model, candidates, config, per_scene=True)``.
    """
    _, names, rotations = smoothed_layers(model, config)
    observers: dict[str, AbsMaxObserver] = {}
    callbacks = {name: lambda args, name=name: observers[name].update(args[0]) for name in names}
    stats, features, absmax = [], [], {name: [] for name in names}
    with hooks(model, callbacks):
        for candidate in tqdm(candidates, desc="candidates", disable=not progress):
            observers.update({name: AbsMaxObserver(rotations.get(name)) for name in names})
            s, f = collect_candidate_features(model, [candidate], num_deep_blocks)
            stats.append(s[0])
            features.append(f[0])
            for name in names:
                absmax[name].append(observers[name].absmax.cpu())
    return np.stack(stats), np.stack(features), {n: torch.stack(v) for n, v in absmax.items()}


def subset_statistics(absmax: dict[str, Tensor], indices) -> dict[str, Tensor]:
    """{layer: [K]} max over the candidates ``indices`` of per-candidate maxima {layer: [N, K]}."""
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    if indices.numel() == 0:
        raise ValueError("indices is empty")
    return {name: values[indices].amax(dim=0) for name, values in absmax.items()}
