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

SITES = ("residual", "qkv", "proj", "fc1", "fc2")
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


def _split_by_token_type(x: torch.Tensor, frames: int, tokens_per_frame: int, num_registers: int):
    """x [..., C] with S*P tokens -> {type: [N, C]} using the per-frame order [cam, regs, patches]."""
    x = x.reshape(-1, frames, tokens_per_frame, x.shape[-1])
    return {
        "camera": x[:, :, :1].reshape(-1, x.shape[-1]),
        "register": x[:, :, 1 : 1 + num_registers].reshape(-1, x.shape[-1]),
        "patch": x[:, :, 1 + num_registers :].reshape(-1, x.shape[-1]),
    }


@torch.inference_mode()
def activation_statistics(model, scenes, progress: bool = True, top_k: int = 5) -> dict:
    """Statistics of every aggregator block's activations over ``scenes`` (image tensors [S, 3, H, W]).

    Returns ``{"frame_blocks": [...], "global_blocks": [...]}``, one entry per block:
    ``{site: {token_type: summary}}`` with the keys of :meth:`_Accumulator.summary`.
    """
    agg = model.aggregator
    num_registers = agg.patch_start_idx - 1
    acc = defaultdict(_Accumulator)
    layout = {}
    handles = []

    def hook(kind: str, index: int, site: str):
        def fn(module, args):
            for token_type, x in _split_by_token_type(args[0], *layout["shape"], num_registers).items():
                acc[(kind, index, site, token_type)].update(x)

        return fn

    for kind in ("frame_blocks", "global_blocks"):
        for i, block in enumerate(getattr(agg, kind)):
            sites = {"residual": block.norm1, "qkv": block.attn.qkv, "proj": block.attn.proj,
                     "fc1": block.mlp.fc1, "fc2": block.mlp.fc2}
            handles += [m.register_forward_pre_hook(hook(kind, i, s)) for s, m in sites.items()]
    was_training = model.training
    model.eval()
    try:
        for images in tqdm(scenes, desc="activation statistics", disable=not progress):
            images = torch.as_tensor(images)
            p = model.config.patch_size
            layout["shape"] = (images.shape[-4], agg.patch_start_idx + (images.shape[-2] // p) * (images.shape[-1] // p))
            agg(model.check_images(images))
    finally:
        for h in handles:
            h.remove()
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
