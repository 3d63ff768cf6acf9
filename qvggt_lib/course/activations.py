"""Activation statistics by token type: are VGGT's activations heavy-tailed, and where?

The QuantVGGT paper (Sec. 3.1, Fig. 3/7) attributes VGGT's quantization difficulty to
the data-independent camera and register tokens, whose activations are much larger
than the patch tokens'. This module measures that, for every aggregator block:

* sites: the residual stream entering the block, and the inputs of ``attn.qkv``,
  ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2``;
* token types: per frame the tokens are [camera (1), registers (R), patches], so the
  statistics are kept separately for ``camera``, ``register`` and ``patch`` tokens;
* per (block, site, token type): max |x|, standard deviation, kurtosis
  E[(x - mu)^4] / sigma^4 over all values (3 for a Gaussian; heavy tails give more),
  and the channel outlier ratio max_j m_j / median_j m_j with m_j = max over tokens |x_j|,
  plus the top outlier channels.

Moments are accumulated in float64 over all scenes, so the result does not depend on
how the scenes are batched.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..quant.observers import hooks
from ..quant.targets import SITES as SITE_MODULES

SITES = tuple(SITE_MODULES)  # ("residual", "qkv", "proj", "fc1", "fc2")
TOKEN_TYPES = ("camera", "register", "patch")


class _Accumulator:
    """Running moments and per-channel abs-max of one (block, site, token type)."""

    def __init__(self):
        self.n = 0
        self.sums = np.zeros(4)  # sum of x, x^2, x^3, x^4 (about zero, float64)
        self.channel_absmax = None

    def update(self, x: torch.Tensor) -> None:
        """x: [N tokens, C]."""
        x64 = x.detach().double()
        self.n += x64.numel()
        self.sums += np.array([float((x64**k).sum()) for k in (1, 2, 3, 4)])
        absmax = x64.abs().amax(dim=0).cpu().numpy()
        self.channel_absmax = absmax if self.channel_absmax is None else np.maximum(self.channel_absmax, absmax)

    def summary(self, top_k: int = 5) -> dict:
        s1, s2, s3, s4 = self.sums / self.n
        var = s2 - s1**2
        central4 = s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4
        m = self.channel_absmax
        top = np.argsort(-m)[:top_k]
        return {
            "max_abs": float(m.max()),
            "std": float(np.sqrt(max(var, 0.0))),
            "kurtosis": float(central4 / var**2) if var > 0 else float("nan"),
            "channel_outlier_ratio": float(m.max() / max(np.median(m), 1e-12)),
            "top_channels": [int(i) for i in top],
            "top_channel_absmax": [float(m[i]) for i in top],
        }


def token_groups(x: torch.Tensor, patch_start_idx: int) -> dict[str, torch.Tensor]:
    """Split ``x [S, P, C]`` (per frame [camera, registers, patches]) into ``[N, C]`` per token type."""
    if x.dim() != 3 or x.shape[1] <= patch_start_idx:
        raise ValueError(f"x must be [S, P, C] with P > patch_start_idx, got {tuple(x.shape)}")
    C = x.shape[-1]
    return {
        "camera": x[:, :1].reshape(-1, C),
        "register": x[:, 1:patch_start_idx].reshape(-1, C),
        "patch": x[:, patch_start_idx:].reshape(-1, C),
    }


@torch.inference_mode()
def activation_statistics(model, scenes, progress: bool = True, top_k: int = 5) -> dict:
    """Statistics of every aggregator block's activations over ``scenes`` (image tensors [S, 3, H, W]).

    Returns ``{"frame_blocks": [...], "global_blocks": [...]}``, one entry per block:
    ``{site: {token_type: summary}}`` with the keys of :meth:`_Accumulator.summary`.
    """
    agg = model.aggregator
    acc = defaultdict(_Accumulator)
    tokens_per_frame = {}

    def observe(kind: str, index: int, site: str):
        def fn(args):  # a frame block sees [S, P, C], a global block [1, S*P, C]
            x = args[0].reshape(-1, tokens_per_frame["P"], args[0].shape[-1])
            for token_type, rows in token_groups(x, agg.patch_start_idx).items():
                acc[(kind, index, site, token_type)].update(rows)

        return fn

    callbacks = {f"aggregator.{kind}.{i}.{module}": observe(kind, i, site)
                 for kind in ("frame_blocks", "global_blocks")
                 for i in range(len(getattr(agg, kind)))
                 for site, module in SITE_MODULES.items()}
    was_training = model.training
    model.eval()
    try:
        with hooks(model, callbacks):
            for images in tqdm(scenes, desc="activation statistics", disable=not progress):
                images = torch.as_tensor(images)
                p = model.config.patch_size
                tokens_per_frame["P"] = (agg.patch_start_idx
                                         + (images.shape[-2] // p) * (images.shape[-1] // p))
                agg(model.check_images(images))
    finally:
        model.train(was_training)
    return {
        kind: [
            {site: {t: acc[(kind, i, site, t)].summary(top_k) for t in TOKEN_TYPES} for site in SITES}
            for i in range(len(getattr(agg, kind)))
        ]
        for kind in ("frame_blocks", "global_blocks")
    }


def summarize(stats: dict, site: str = "residual", key: str = "max_abs") -> dict[str, list[float]]:
    """One curve per (kind, token type): ``stats[kind][block][site][type][key]`` over blocks."""
    return {
        f"{kind.split('_')[0]}/{t}": [block[site][t][key] for block in stats[kind]]
        for kind in ("frame_blocks", "global_blocks")
        for t in TOKEN_TYPES
    }
