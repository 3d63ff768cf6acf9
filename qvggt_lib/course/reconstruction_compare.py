r"""Compare the reconstructions of several models (a float reference and its quantized copies).

Ground-truth metrics (``qvggt_lib.evaluate``) answer "how good is each model?". On a small model
and a few scenes they move by less than the scene-to-scene noise when a model is quantized, so
this module also measures *fidelity*: how far each model's outputs are from the reference
model's outputs on the same inputs, which is what post-training quantization tries to keep small.

    preds = predict_all({"FP": fp, "RTN W4A4": rtn, ...}, scenes)   # one forward per model/scene
    table = compare(preds, scenes, reference="FP")                # GT metrics + fidelity per model
    plot_depth_comparison(scenes[0], {name: p[0] for name, p in preds.items()})
    plot_point_cloud_comparison(scenes[0], {name: p[0] for name, p in preds.items()})

Fidelity keys: ``qvggt_lib.evaluate.fidelity_metrics`` per scene over the ground-truth
``valid`` pixels, then the mean over scenes, like every metric of ``evaluate``:

* ``depth_rel_diff``  = mean |d - d_ref| / d_ref of the raw predicted depth maps, percent;
* ``points_rel_diff`` = ||X - X_ref||_F / ||X_ref||_F of the raw predicted point maps, percent
  (both in the first camera's frame at the network's normalized scale, so no alignment);
* ``rotation_diff_deg`` = mean over frames of the angle of R R_ref^T, the predicted camera
  rotations (0 for frame 0, which both models put at the identity).

The reference model scores 0 on all three by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..eval.evaluate import (
    FIDELITY_KEYS,
    METRIC_KEYS,
    fidelity_metrics,
    predict_scene,
    scene_metrics,
)
from .viz import align_prediction

FIDELITY_NAMES = {
    "depth_rel_diff": "depth diff. vs ref. (%)",
    "points_rel_diff": "points diff. vs ref. (%)",
    "rotation_diff_deg": "rotation diff. vs ref. (deg)",
}


def predict_all(models: Mapping, scenes: Sequence[dict], progress: bool = True) -> dict[str, list]:
    """``{name: [predict_scene(model, scene["images"]) for scene in scenes]}`` for every model."""
    if not models:
        raise ValueError("models is empty: give at least the reference model")
    if not scenes:
        raise ValueError("scenes is empty")
    total = len(models) * len(scenes)
    bar = tqdm(total=total, desc="predict", unit="forward", disable=not progress)
    out = {}
    try:
        for name, model in models.items():
            out[name] = []
            for scene in scenes:
                out[name].append(predict_scene(model, scene["images"]))
                bar.update()
    finally:
        bar.close()
    return out


def _reference(names: list[str], reference: str | None, what: str) -> str:
    """The reference model's name: ``reference``, or the first of ``names`` when None."""
    if not names:
        raise ValueError(f"{what} is empty")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not one of the models {names}")
    return reference


def compare(predictions: Mapping[str, Sequence[dict]], scenes: Sequence[dict],
            reference: str | None = None) -> dict[str, dict]:
    """Ground-truth metrics and fidelity to ``reference`` of every model, averaged over scenes.

    Args:
        predictions: ``{name: [prediction per scene]}`` (``predict_all``), every list aligned
            with ``scenes``.
        scenes: rendered scenes (``render_split`` / ``course_scenes`` dicts with ground truth).
        reference: the name the fidelity is measured against (default: the first model).
    Returns:
        ``{name: {METRIC_KEYS..., FIDELITY_KEYS..., "num_scenes": n}}`` in the order of
        ``predictions``. The GT metrics equal ``evaluate(model, ...)`` on the same scenes.
    """
    reference = _reference(list(predictions), reference, "predictions")
    for name, preds in predictions.items():
        if len(preds) != len(scenes):
            raise ValueError(f"{name!r} has {len(preds)} predictions for {len(scenes)} scenes")
    table = {}
    for name, preds in predictions.items():
        per_scene = []
        for pred, ref, scene in zip(preds, predictions[reference], scenes):
            fidelity = fidelity_metrics(pred, ref, scene["valid"])  # its pose AUCs: not the GT ones
            per_scene.append({**scene_metrics(pred, scene), **{key: fidelity[key] for key in FIDELITY_KEYS}})
        table[name] = {key: float(np.mean([s[key] for s in per_scene]))
                       for key in (*METRIC_KEYS, *FIDELITY_KEYS)}
        table[name]["num_scenes"] = len(scenes)
    return table


# ----------------------------------------------------------------------------- figures


def _median_scaled(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """depth * median(gt) / median(depth) over the valid pixels (the AbsRel alignment)."""
    scale = np.median(gt[valid]) / max(float(np.median(depth[valid])), 1e-12)
    return depth * scale


def plot_depth_comparison(scene: dict, preds: Mapping[str, dict], reference: str | None = None,
                          frame: int = 0) -> Figure:
    """Depth maps of one frame, side by side, and where they differ.

    Top row: the input image, the true depth, then every model's depth, each median-scaled to
    the truth (as AbsRel does) and drawn on one colour scale. Bottom row, on one logarithmic
    colour scale: under the reference, its own error |d_ref - d_gt| / d_gt; under every other
    model, its relative difference to the reference |d - d_ref| / d_ref. So one figure shows
    what the float model gets wrong and, next to it, how much quantization changes.
    """
    names = list(preds)
    reference = _reference(names, reference, "preds")
    gt = np.asarray(scene["depth"][frame], dtype=np.float64)
    valid = np.asarray(scene["valid"][frame], dtype=bool) & (gt > 0)
    depths = {n: _median_scaled(np.asarray(p["depth"][frame], np.float64), gt, valid)
              for n, p in preds.items()}
    errors = {}
    for name, depth in depths.items():
        base = gt if name == reference else depths[reference]
        err = np.abs(depth - base) / np.maximum(np.abs(base), 1e-12)
        errors[name] = np.where(valid, err, np.nan)
    finite = np.concatenate([e[np.isfinite(e) & (e > 0)] for e in errors.values()] or [[1e-6]])
    lo = max(float(np.percentile(finite, 1)), 1e-7) if finite.size else 1e-7
    hi = max(float(np.percentile(finite, 99.5)), lo * 10) if finite.size else 1.0
    norm = LogNorm(vmin=lo, vmax=hi)
    vmin, vmax = float(gt[valid].min()), float(gt[valid].max())

    cols = 2 + len(names)
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols + 1.2, 5.6), layout="constrained")
    image = np.asarray(scene["images"][frame]).transpose(1, 2, 0).clip(0.0, 1.0)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title(f"input, frame {frame}")
    shown = axes[0, 1].imshow(np.where(valid, gt, np.nan), cmap="viridis", vmin=vmin, vmax=vmax)
    axes[0, 1].set_title("ground-truth depth")
    for col, name in enumerate(names, start=2):
        axes[0, col].imshow(np.where(valid, depths[name], np.nan), cmap="viridis", vmin=vmin,
                            vmax=vmax)
        axes[0, col].set_title(f"{name} depth")
        diff = axes[1, col].imshow(errors[name], cmap="magma", norm=norm)
        label = "vs ground truth" if name == reference else f"vs {reference}"
        axes[1, col].set_title(f"{name}: rel. error {label}", fontsize="small")
    for ax in axes[1, :2]:
        ax.axis("off")
    note = (f"bottom row, one log scale:\n\nunder {reference}: its error\nvs the ground truth\n\n"
            f"under the others: their\ndifference to {reference}")
    axes[1, 0].text(0.0, 0.5, note, transform=axes[1, 0].transAxes, va="center", fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[0, :], shrink=0.8, label="depth (scene units)")
    fig.colorbar(diff, ax=axes[1, :], shrink=0.8, label="relative depth error / difference")
    return fig


def plot_point_cloud_comparison(scene: dict, preds: Mapping[str, dict],
                                reference: str | None = None, max_points: int = 3000,
                                seed: int = 0) -> Figure:
    """One 3-D panel per model: its point map aligned to the scene by its own Sim(3) fit (as
    the point metrics do). The reference is coloured by the images; every other model by the
    distance of each point to the reference's point for the same pixel, in scene units (the
    raw difference times the reference's alignment scale), on one shared colour scale."""
    names = list(preds)
    reference = _reference(names, reference, "preds")
    valid = np.asarray(scene["valid"], dtype=bool)
    keep = np.random.default_rng(seed).permutation(int(valid.sum()))[:max_points]
    colours = np.asarray(scene["images"]).transpose(0, 2, 3, 1)[valid][keep].clip(0.0, 1.0)
    aligned = {n: align_prediction(p, scene, seed=seed) for n, p in preds.items()}
    ref_raw = np.asarray(preds[reference]["world_points"], np.float64)[valid][keep]
    scale = aligned[reference]["sim3_scale"]
    distances = {n: scale * np.linalg.norm(
        np.asarray(preds[n]["world_points"], np.float64)[valid][keep] - ref_raw, axis=-1)
        for n in names if n != reference}
    top = max([float(np.percentile(d, 99)) for d in distances.values()] + [1e-12])
    gt = np.asarray(scene["world_points"], np.float64)[valid][keep]
    lo, hi = gt.min(axis=0), gt.max(axis=0)

    fig = plt.figure(figsize=(4.2 * len(names) + 1.0, 4.4), layout="constrained")
    mappable = None
    for index, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), index + 1, projection="3d")
        ax.view_init(elev=35.0, azim=-60.0)
        points = np.asarray(aligned[name]["world_points"], np.float64)[valid][keep]
        if name == reference:
            ax.scatter(*points.T, c=colours, s=1.0, depthshade=False)
            ax.set_title(f"{name} (aligned), image colours")
        else:
            mappable = ax.scatter(*points.T, c=distances[name], cmap="magma", vmin=0.0, vmax=top,
                                  s=1.0, depthshade=False)
            ax.set_title(f"{name}: colour = distance to {reference}")
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
        ax.set_box_aspect(hi - lo + 1e-6)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
    if mappable is not None:
        fig.colorbar(mappable, ax=fig.axes, shrink=0.7, pad=0.08,
                     label=f"|X - X_{reference}| per pixel (scene units)")
    return fig
