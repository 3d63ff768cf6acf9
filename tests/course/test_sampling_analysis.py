"""Facts about the sampling-lesson measurements (qvggt_lib.course.sampling_analysis) on a tiny random VGGT."""

import numpy as np
import pytest
import torch

from qvggt_lib.course.sampling_analysis import candidate_statistics, subset_statistics
from qvggt_lib.course.smoothing_analysis import quantize_from_statistics, smoothing_statistics
from qvggt_lib.model import build_vggt
from qvggt_lib.quant import QuantVGGTConfig, quantize
from qvggt_lib.quant.sampling import collect_candidate_features, select_from_features

FRAMES, SIZE, N, DEEP = 3, 28, 6, 2


@pytest.fixture(scope="module")
def model():
    return build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0).eval()


@pytest.fixture(scope="module")
def pool():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(FRAMES, 3, SIZE, SIZE, generator=g) for _ in range(N)]


@pytest.mark.parametrize("name", ["dsfq", "smoothing"])
def test_one_forward_gives_nfds_features_and_per_candidate_maxima(model, pool, name):
    config = QuantVGGTConfig.ablation(name, calibrate=False)
    stats, features, absmax = candidate_statistics(model, pool, config, DEEP)
    ref_stats, ref_features = collect_candidate_features(model, pool, DEEP)
    np.testing.assert_allclose(stats, ref_stats, rtol=1e-6)
    np.testing.assert_allclose(features, ref_features, rtol=1e-6)
    per_scene = smoothing_statistics(model, pool, config, per_scene=True)
    assert set(absmax) == set(per_scene)
    for layer, values in absmax.items():
        assert values.shape == per_scene[layer].shape
        torch.testing.assert_close(values, per_scene[layer])
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_a_pick_quantizes_as_quantize_on_its_scenes(model, pool):
    config = QuantVGGTConfig(calibrate=False, seed=2)
    stats, features, absmax = candidate_statistics(model, pool, config, DEEP)
    pick = select_from_features(stats, features, 3, "nfds", 0.2, 2, seed=0)
    built = quantize_from_statistics(model, config, subset_statistics(absmax, pick))
    expected = quantize(model, config, calibration=[pool[i] for i in pick], progress=False)
    with torch.no_grad():
        a, b = built(pool[0]), expected(pool[0])
    torch.testing.assert_close(a["depth"], b["depth"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="empty"):
        subset_statistics(absmax, [])
