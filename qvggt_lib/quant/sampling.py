"""Noise-Filtered Diverse Sampling (NFDS): choosing the calibration set (QuantVGGT §3.3, App. B).

From N candidate scenes pick a few that are (1) not statistical outliers and (2) diverse.

1. Noise filter. For candidate n and each of the L hooked layers l (the residual stream entering
   norm1 of the last frame and global blocks, in execution order) take the mean m_nl and variance v_nl over all its
   tokens and channels. With μ_l, σ_l (ν_l, τ_l) the mean and std of m_nl (v_nl) over the N,

       score_n = Σ_l [ ((m_nl - μ_l) / σ_l)² + ((v_nl - ν_l) / τ_l)² ],

   and the fraction p (paper: 0.2) with the highest scores is dropped.
2. Frame-aware feature. With F_n ∈ R^{S × P·2C} the last aggregator layer flattened per frame,

       f_n = ( cos(F_n[0], F_n[1]), ..., cos(F_n[0], F_n[S-1]) ) ∈ R^{S-1}.

3. Diverse sampling. K-means (paper: K = 8) on the kept candidates' f, then equally many samples
   per cluster (paper: 40 of 400), uniformly at random within a cluster.

We follow the paper where the reference code (make_calibation.py) differs: z-score score and a
percentile cut (code: per-category IQR fences on mean and std); the filter's result is used
(code: clusters all_indices, so it filters nothing); statistics over all frames (code: frame
blocks see frame 0 only); one cosine per whole flattened frame (code: mean of per-token cosines);
K = 8 and 40 samples (code: 5 and 20); every random choice is seeded (code: unseeded).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from tqdm.auto import tqdm

from .observers import hooks

METHODS = ("random", "filtered", "clustered", "nfds")


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick a calibration set: ``num_samples`` of a pool of ``pool_size`` calib-split scenes.

    method: "random", "filtered" (noise filter only), "clustered" (k-means only) or "nfds" (both).
    num_frames, image_size: of each rendered candidate (image_size None: the model's img_size).
    num_clusters (K), drop_fraction (p): the paper's 8 and 0.2. num_deep_blocks: the last blocks
    whose statistics feed the noise filter (None: min(4, depth), as the paper). seed: every
    random choice (k-means, the per-cluster draws, the random pick).
    """

    method: str = "nfds"
    num_samples: int = 40
    pool_size: int = 400
    num_frames: int = 8
    image_size: int | None = None
    seed: int = 0
    num_clusters: int = 8
    drop_fraction: float = 0.2
    num_deep_blocks: int | None = None

    def __post_init__(self):
        _check_args(self.method, self.num_samples, self.drop_fraction, self.pool_size)
        for name in ("pool_size", "num_frames", "num_clusters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_candidates(model, candidates, need_frames: bool) -> list[torch.Tensor]:
    """Each candidate one scene [S, 3, H, W] in [0, 1]; with need_frames one common S >= 2."""
    if len(candidates) == 0:
        raise ValueError("candidates is empty")
    scenes = [torch.as_tensor(c) for c in candidates]
    for i, scene in enumerate(scenes):
        if scene.dim() != 4:
            shape = tuple(scene.shape)
            raise ValueError(f"candidate {i} must be one scene [S, 3, H, W], got {shape}")
        model.check_images(scene)
    frames = sorted({scene.shape[0] for scene in scenes})
    if need_frames and (len(frames) > 1 or frames[0] < 2):
        raise ValueError(f"frame-aware features need one S >= 2 for all candidates, got {frames}")
    return scenes


def _forward_candidates(model, scenes, num_deep_blocks: int, progress: bool):
    """One aggregator forward per scene -> (stats [N, 2L], list of N frame cosines [S-1])."""
    agg = model.aggregator
    if not 1 <= num_deep_blocks <= len(agg.frame_blocks):
        depth = len(agg.frame_blocks)
        raise ValueError(f"num_deep_blocks must be in [1, {depth}], got {num_deep_blocks}")
    captured: list[torch.Tensor] = []

    def observe(args):  # args[0]: the residual stream entering norm1
        var, mean = torch.var_mean(args[0].float(), correction=0)
        captured.extend((mean, var))

    depth = len(agg.frame_blocks)
    names = [f"aggregator.{kind}.{i}.norm1" for kind in ("frame_blocks", "global_blocks")
             for i in range(depth - num_deep_blocks, depth)]
    param, was_training = next(model.parameters()), model.training
    model.eval()
    stats, cosines = [], []
    try:
        with hooks(model, dict.fromkeys(names, observe)), torch.inference_mode():
            for scene in tqdm(scenes, desc="NFDS features", disable=not progress):
                captured.clear()
                layers, _ = agg(scene.to(param.device, param.dtype)[None])
                stats.append(torch.stack(captured).double().cpu().numpy())
                frames = layers[-1][0].flatten(1).float()  # [S, P*2C]
                cos = F.cosine_similarity(frames[1:], frames[:1], dim=-1)
                cosines.append(cos.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.stack(stats), cosines


def deep_layer_statistics(model, images_list, num_deep_blocks: int = 4, progress=False):
    """[N, 2L], L = 2 * num_deep_blocks: columns (mean, var) per layer in execution order (frame
    and global blocks interleaved: frame d-n, global d-n, frame d-n+1, ...), each over all
    tokens and channels of one candidate [S, 3, H, W]."""
    scenes = _check_candidates(model, images_list, need_frames=False)
    return _forward_candidates(model, scenes, num_deep_blocks, progress)[0]


def frame_aware_features(model, images_list, progress=False) -> np.ndarray:
    """[N, S-1]: cosine of frame 0 with each later frame of the flattened last layer [S, P*2C]."""
    return collect_candidate_features(model, images_list, 1, progress)[1]


def collect_candidate_features(model, candidates, num_deep_blocks: int = 4, progress=False):
    """One forward per candidate -> (stats [N, 4*num_deep_blocks], frame features [N, S-1])."""
    scenes = _check_candidates(model, candidates, need_frames=True)
    stats, cosines = _forward_candidates(model, scenes, num_deep_blocks, progress)
    return stats, np.stack(cosines)


def noise_scores(stats: np.ndarray) -> np.ndarray:
    """stats [N, 2L] -> [N]: sum of squared column z-scores; a constant column contributes 0."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] == 0:
        raise ValueError(f"stats must be a non-empty [N, 2L] matrix, got shape {stats.shape}")
    std = stats.std(axis=0)
    z = np.divide(stats - stats.mean(axis=0), std, out=np.zeros_like(stats), where=std > 0)
    return (z**2).sum(axis=1)


def filter_noisy(scores: np.ndarray, drop_fraction: float = 0.2) -> np.ndarray:
    """Sorted indices [N - floor(p N)] left after dropping the floor(p N) highest scores.
    Ties drop the lower index first (stable sort), so the result is deterministic."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ValueError("scores must be a 1-D array of finite numbers")
    num_drop = int(np.floor(drop_fraction * len(scores)))
    return np.sort(np.argsort(-scores, kind="stable")[num_drop:])


def cluster_features(features: np.ndarray, num_clusters: int = 8, seed: int = 0) -> np.ndarray:
    """features [N, D] -> labels [N] in [0, K). N < K raises rather than silently changing K."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if not 1 <= num_clusters <= len(features):
        raise ValueError(f"num_clusters must be in [1, {len(features)}] (the candidates to cluster), "
                         f"got {num_clusters}")
    return KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(features)


def sample_per_cluster(labels: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
    """labels [N] -> num_samples distinct indices into labels, equally many per cluster.

    A cluster smaller than its share gives all its members and the others share the rest; single
    leftovers go to random clusters. The indices come back shuffled, not grouped by cluster, so
    any prefix is mixed too (the reference's cluster order makes its smoothing init, fitted on
    the first fifth, see essentially one cluster).
    """
    labels = np.asarray(labels)
    if not 0 < num_samples <= len(labels):
        raise ValueError(f"num_samples must be in [1, {len(labels)}], got {num_samples}")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    sizes = np.array([len(m) for m in members])
    alloc = np.zeros_like(sizes)
    while (remaining := num_samples - alloc.sum()) > 0:
        open_ = np.flatnonzero(alloc < sizes)
        share = remaining // len(open_)
        if share == 0:
            alloc[rng.choice(open_, remaining, replace=False)] += 1
        else:
            alloc[open_] = np.minimum(alloc[open_] + share, sizes[open_])
    chosen = np.concatenate([rng.choice(m, k, replace=False) for m, k in zip(members, alloc)])
    return rng.permutation(chosen)


def _check_args(method: str, num_samples: int, drop_fraction: float, n: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    if n is None:
        raise ValueError("give stats, features or num_candidates")
    if not 0 < num_samples <= n:
        raise ValueError(f"num_samples must be in [1, {n}] (the candidate pool), got {num_samples}")


def select_from_features(stats, features, num_samples: int = 40, method: str = "nfds",
                         drop_fraction: float = 0.2, num_clusters: int = 8, seed: int = 0,
                         return_details: bool = False, num_candidates: int | None = None):
    """Indices into the N candidates from precomputed stats [N, 2L] and features [N, S-1].

    "random": uniform; "filtered": noise filter, then uniform among the kept; "clustered":
    k-means, then per cluster (no filter); "nfds": filter, k-means on the kept, per cluster.
    stats may be None for "random"/"clustered", features for "random"/"filtered" (both None:
    give num_candidates). details: scores [N] (None without stats), kept (the indices sampled
    from), features, labels [N] (-1 where not clustered).
    """
    sizes = [len(x) for x in (stats, features) if x is not None]
    n = sizes[0] if sizes else num_candidates
    _check_args(method, num_samples, drop_fraction, n)
    if len(set(sizes)) > 1:
        raise ValueError(f"stats and features have different numbers of candidates: {sizes}")
    if method in ("filtered", "nfds") and stats is None:
        raise ValueError(f"method {method!r} needs stats")
    if method in ("clustered", "nfds") and features is None:
        raise ValueError(f"method {method!r} needs features")
    scores = None if stats is None else noise_scores(stats)
    filtered = method in ("filtered", "nfds")
    kept = filter_noisy(scores, drop_fraction) if filtered else np.arange(n)
    if len(kept) < num_samples:
        raise ValueError(f"num_samples={num_samples} > {len(kept)} left by the noise filter")
    labels = np.full(n, -1)
    if method in ("clustered", "nfds"):
        labels[kept] = cluster_features(np.asarray(features)[kept], num_clusters, seed)
        chosen = kept[sample_per_cluster(labels[kept], num_samples, seed)]
    else:
        chosen = np.random.default_rng(seed).choice(kept, num_samples, replace=False)
    indices = [int(i) for i in chosen]
    details = {"scores": scores, "kept": kept, "features": features, "labels": labels}
    return (indices, details) if return_details else indices


def select_calibration(model, candidates, num_samples: int = 40, method: str = "nfds",
                       drop_fraction: float = 0.2, num_clusters: int = 8, seed: int = 0,
                       num_deep_blocks: int = 4, return_details: bool = False, progress=False):
    """Indices into candidates (list of [S, 3, H, W] in [0, 1]); see select_from_features.
    Arguments are checked before any forward; "random" runs none, the others one per candidate."""
    _check_args(method, num_samples, drop_fraction, len(candidates))
    stats = features = None
    if method != "random":
        stats, features = collect_candidate_features(model, candidates, num_deep_blocks, progress)
    return select_from_features(stats, features, num_samples, method, drop_fraction, num_clusters,
                                seed, return_details, num_candidates=len(candidates))


def candidate_pool(num_candidates: int = 400, num_frames: int = 8, image_size: int = 112,
                   start: int = 0) -> list[torch.Tensor]:
    """Calibration-split scenes start, ..., start + num_candidates - 1 as [S, 3, H, W] tensors
    (the paper draws its pool from a training split; the calib split never meets evaluation)."""
    from qvggt_lib.data import render_split  # here: only the pool needs the renderer

    return [torch.from_numpy(render_split("calib", start + i, num_frames=num_frames,
                                          image_size=image_size)["images"])
            for i in range(num_candidates)]


def calibration_scenes(model, config: SamplingConfig = SamplingConfig(), pool: list[torch.Tensor] | None = None,
                       features: tuple | None = None, progress: bool = False) -> list[torch.Tensor]:
    """The ``config.num_samples`` calibration scenes [S, 3, H, W] that ``config`` picks.

    pool: precomputed candidate_pool(...) scenes (else rendered: calib scenes
    0..pool_size-1). features: precomputed (stats, frame features) of that pool from
    collect_candidate_features, so that several picks (seeds, methods) share one forward per
    candidate.
    """
    if pool is None:
        pool = candidate_pool(config.pool_size, config.num_frames,
                              config.image_size or model.config.img_size)
    if config.method != "random" and features is None:
        depth = len(model.aggregator.frame_blocks)
        deep = min(4, depth) if config.num_deep_blocks is None else config.num_deep_blocks
        features = collect_candidate_features(model, pool, deep, progress=progress)
    stats, frame_features = features if features is not None else (None, None)
    indices = select_from_features(stats, frame_features, config.num_samples, config.method,
                                   config.drop_fraction, config.num_clusters, config.seed,
                                   num_candidates=len(pool))
    return [pool[i] for i in indices]
