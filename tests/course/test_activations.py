"""Activation statistics by token type."""

import torch

from qvggt_lib.course.activations import (
    SITES,
    TOKEN_TYPES,
    _Accumulator,
    activation_statistics,
    summarize,
)
from qvggt_lib.model import build_vggt


def test_accumulator_moments_match_numpy_and_gaussian_kurtosis_is_three():
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    acc = _Accumulator()
    acc.update(x[:7000])
    acc.update(x[7000:])
    s = acc.summary()
    assert abs(s["std"] - x.std(unbiased=False).item()) < 1e-9
    assert abs(s["kurtosis"] - 3.0) < 0.1
    assert s["max_abs"] == x.abs().max().item()


def test_planted_outlier_channel_is_found():
    x = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    x[:, 5] *= 40
    s = _Accumulator()
    s.update(x)
    out = s.summary()
    assert out["top_channels"][0] == 5 and out["channel_outlier_ratio"] > 10


def test_statistics_cover_every_block_site_and_token_type():
    model = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0)
    model.aggregator.camera_token.data.fill_(5.0)  # plant large special tokens
    scenes = [torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    stats = activation_statistics(model, scenes, progress=False)
    assert len(stats["frame_blocks"]) == len(stats["global_blocks"]) == 2
    for kind in stats:
        for block in stats[kind]:
            assert set(block) == set(SITES)
            assert all(set(block[s]) == set(TOKEN_TYPES) for s in SITES)
    first = stats["frame_blocks"][0]["residual"]
    assert abs(first["camera"]["max_abs"] - 5.0) < 1e-5  # the residual entering block 0 is the token itself
    assert first["camera"]["max_abs"] > first["patch"]["max_abs"]
    curves = summarize(stats)
    assert set(curves) == {f"{k}/{t}" for k in ("frame", "global") for t in TOKEN_TYPES}
