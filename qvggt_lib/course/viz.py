"""Figures and small helpers for the course notebooks: alignment for plots, captured activations,
quantization error by granularity, and the figures of notebooks 00 and 01 (tables: eval.tables).

    parameter_breakdown(model)              -> {module group: parameter count} (works on "meta")
    align_prediction(pred, scene)           -> a prediction moved into the scene's world frame and scale
    capture_inputs(model, images, sites)    -> the raw input of chosen layers, [S, P, C] per site
    activation_fake_quantize(x, bits, g)    -> x quantize-dequantized per tensor / token / channel
    quantization_error(x, x_hat)            -> relative MSE and SQNR in dB
    plot_block_curves / plot_token_distributions / plot_channel_absmax / plot_training_evolution
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..metrics import umeyama_sim3
from ..quant.observers import hooks
from ..quant.quantizer import QuantSpec, fake_quantize
from ..quant.targets import SITES as SITE_MODULES
from .activations import TOKEN_TYPES

TOKEN_COLOURS = {"camera": "tab:red", "register": "tab:orange", "patch": "tab:blue"}
ACTIVATION_GRANULARITIES = ("per_tensor", "per_token", "per_channel")


# ---------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------


def _numel(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_breakdown(model) -> dict[str, int]:
    """Parameter counts of a VGGT by module group, plus ``"total"``.

    Groups: the DINO patch embed, the frame blocks, the global blocks, the camera and register
    tokens, and the camera, depth and point heads (0 for a disabled head). Only ``numel`` is
    read, so a model built on the ``meta`` device works.
    """
    agg = model.aggregator
    groups = {
        "patch embed (DINOv2)": _numel(agg.patch_embed),
        "frame blocks": _numel(agg.frame_blocks),
        "global blocks": _numel(agg.global_blocks),
        "camera + register tokens": agg.camera_token.numel() + agg.register_token.numel(),
        "camera head": _numel(getattr(model, "camera_head", None)),
        "depth head": _numel(getattr(model, "depth_head", None)),
        "point head": _numel(getattr(model, "point_head", None)),
    }
    groups["total"] = sum(p.numel() for p in model.parameters())
    return groups


# ---------------------------------------------------------------------------------------
# Predictions in the scene's frame
# ---------------------------------------------------------------------------------------


def align_prediction(pred: dict, scene: dict, max_points: int = 20000, seed: int = 0) -> dict:
    """Move a VGGT prediction into the ground-truth world frame and scale, for plotting.

    VGGT predicts in the first camera's frame with a normalized scale. One similarity
    ``X_gt = s R X_pred + t`` is fitted (Umeyama) between the predicted and true world points
    of the valid pixels (at most ``max_points``, seeded), as the point metrics do, and applied
    to everything: ``world_points``; ``depth`` times ``s``; and the extrinsics, since a camera
    ``x_cam = R_c X_pred + t_c`` becomes ``s x_cam = (R_c R^T) X_gt + (s t_c - R_c R^T t)``.

    Returns a new dict with the same keys as ``pred`` (aligned where it applies) plus
    ``sim3_scale`` (s), ``sim3_rotation`` (R [3, 3]) and ``sim3_translation`` (t [3]), so it can
    go straight to ``qvggt_lib.data.plot_scene``.
    """
    points = np.asarray(pred["world_points"], dtype=np.float64)
    gt_points = np.asarray(scene["world_points"], dtype=np.float64)
    valid = (
        np.asarray(scene["valid"], dtype=bool)
        & np.isfinite(points).all(-1)
        & np.isfinite(gt_points).all(-1)
    )
    index = np.flatnonzero(valid)
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, size=max_points, replace=False))
    s, R, t = umeyama_sim3(points.reshape(-1, 3)[index], gt_points.reshape(-1, 3)[index])
    out = dict(pred)
    out["world_points"] = (s * points @ R.T + t).astype(np.float32)
    if "depth" in pred:
        out["depth"] = (s * np.asarray(pred["depth"], dtype=np.float64)).astype(np.float32)
    if "extrinsics" in pred:
        ext = np.asarray(pred["extrinsics"], dtype=np.float64)
        rot = ext[:, :, :3] @ R.T
        trans = s * ext[:, :, 3] - rot @ t
        out["extrinsics"] = np.concatenate([rot, trans[..., None]], axis=-1).astype(np.float32)
    out["sim3_scale"], out["sim3_rotation"], out["sim3_translation"] = float(s), R, t
    return out


# ---------------------------------------------------------------------------------------
# Raw activations
# ---------------------------------------------------------------------------------------


@torch.inference_mode()
def capture_inputs(model, images, sites) -> dict[tuple[str, int, str], torch.Tensor]:
    """The input of chosen aggregator layers for one scene.

    Args:
        model: a VGGT.
        images: ``[S, 3, H, W]`` in [0, 1] (one scene).
        sites: iterable of ``(kind, block, site)`` with kind ``"frame_blocks"`` or
            ``"global_blocks"`` and site one of ``residual`` (the block input, i.e. what
            ``norm1`` sees), ``qkv``, ``proj``, ``fc1``, ``fc2``.

    Returns:
        ``{(kind, block, site): tensor [S, P, C]}`` (float32, on the CPU) where P is the number
        of tokens per frame, in the order [camera, registers, patches].
    """
    images = torch.as_tensor(images)
    if images.dim() != 4:
        raise ValueError(f"images must be one scene [S, 3, H, W], got {tuple(images.shape)}")
    sites = [tuple(site) for site in sites]
    num_frames = images.shape[0]
    captured: dict = {}

    def keep(key):
        def fn(args):
            x = args[0]
            captured[key] = x.detach().float().cpu().reshape(num_frames, -1, x.shape[-1]).clone()

        return fn

    callbacks = {}
    for kind, block, site in sites:
        if site not in SITE_MODULES:
            raise ValueError(f"unknown site {site!r}; expected one of {sorted(SITE_MODULES)}")
        callbacks[f"aggregator.{kind}.{block}.{SITE_MODULES[site]}"] = keep((kind, block, site))
    device = next(model.parameters()).device
    with hooks(model, callbacks):
        model.aggregator(model.check_images(images.to(device)))
    return captured


# ---------------------------------------------------------------------------------------
# Quantization error by granularity
# ---------------------------------------------------------------------------------------


def activation_fake_quantize(x: torch.Tensor, bits: int, granularity: str) -> torch.Tensor:
    """Symmetric, dynamic quantize-dequantize of an activation ``x [..., C]``.

    ``per_tensor``: one scale; ``per_token``: one scale per row (token); ``per_channel``: one
    scale per input channel (column), shared by all tokens. ``qvggt_lib.quant``'s
    ``"per_channel"`` means one scale per *row* (a weight's output channel), so the per-input-channel
    case is computed on the transpose.
    """
    if granularity not in ACTIVATION_GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {ACTIVATION_GRANULARITIES}, got {granularity!r}"
        )
    if granularity == "per_channel":
        flat = x.reshape(-1, x.shape[-1])
        return fake_quantize(flat.T, QuantSpec(bits, "per_token")).T.reshape(x.shape)
    return fake_quantize(x, QuantSpec(bits, granularity))


def quantization_error(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """``rel_mse = |x - x_hat|^2 / |x|^2`` and ``sqnr_db = -10 log10(rel_mse)`` (inf when exact)."""
    x64, err = x.double(), (x.double() - x_hat.double())
    power = float((x64**2).sum())
    rel = float((err**2).sum()) / power if power > 0 else float("nan")
    sqnr = -10.0 * math.log10(rel) if rel > 0 else float("inf")
    return {"rel_mse": rel, "sqnr_db": sqnr}


def granularity_errors(
    x: torch.Tensor, bits=(4, 8), granularities=ACTIVATION_GRANULARITIES
) -> dict:
    """``{(bits, granularity): quantization_error(...)}`` of one activation ``x [..., C]``."""
    return {
        (b, g): quantization_error(x, activation_fake_quantize(x, b, g))
        for b in bits
        for g in granularities
    }


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def plot_block_curves(
    stats: dict, site: str = "residual", keys=("max_abs", "kurtosis"), log_keys=("max_abs",)
) -> Figure:
    """Statistics over blocks, one panel per (key, frame/global), one line per token type.

    ``stats`` is ``qvggt_lib.activations.activation_statistics``' result. This is the analogue of
    the QuantVGGT paper's Fig. 3/7 (token magnitudes by block), for all blocks at once.
    """
    kinds = ("frame_blocks", "global_blocks")
    fig, axes = plt.subplots(
        len(keys), 2, figsize=(10, 3.2 * len(keys)), squeeze=False, layout="constrained"
    )
    for row, key in enumerate(keys):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            for t in TOKEN_TYPES:
                values = [block[site][t][key] for block in stats[kind]]
                ax.plot(range(len(values)), values, marker="o", color=TOKEN_COLOURS[t], label=t)
            if key in log_keys:
                ax.set_yscale("log")
            ax.set_xlabel(f"{kind.split('_')[0]} block")
            ax.set_ylabel(key)
            ax.set_title(f"{key} of the {site} input, {kind.replace('_', ' ')}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return fig


def plot_token_distributions(groups: dict[str, torch.Tensor], title: str, bins: int = 80) -> Figure:
    """Left: histograms (log counts) of all values per token type; right: violins of |x|."""
    fig, (ax_hist, ax_violin) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    values = {t: groups[t].reshape(-1).double().numpy() for t in TOKEN_TYPES if t in groups}
    edges = np.linspace(
        min(v.min() for v in values.values()), max(v.max() for v in values.values()), bins + 1
    )
    for t, v in values.items():
        ax_hist.hist(
            v,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.5,
            color=TOKEN_COLOURS[t],
            label=t,
        )
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("activation value")
    ax_hist.set_ylabel("density (log)")
    ax_hist.set_title(f"{title}: value histogram")
    ax_hist.legend(fontsize="small")
    parts = ax_violin.violinplot(
        [np.abs(v) for v in values.values()], showextrema=True, showmedians=True
    )
    for body, t in zip(parts["bodies"], values, strict=True):
        body.set_facecolor(TOKEN_COLOURS[t])
    ax_violin.set_xticks(range(1, len(values) + 1), list(values))
    ax_violin.set_yscale("symlog", linthresh=0.1)
    ax_violin.set_ylim(bottom=0.0)
    ax_violin.set_xlabel("token type")
    ax_violin.set_ylabel("|activation|")
    ax_violin.set_title(f"{title}: |x| per token type")
    return fig


def plot_channel_absmax(groups: dict[str, torch.Tensor], title: str, top_k: int = 5) -> Figure:
    """Per-channel max |x| over tokens, one line per token type; the ``top_k`` channels of the
    patch tokens (or of the first type given) are marked."""
    fig, ax = plt.subplots(figsize=(11, 3.6), layout="constrained")
    marked = "patch" if "patch" in groups else next(iter(groups))
    for t in TOKEN_TYPES:
        if t not in groups:
            continue
        profile = groups[t].abs().amax(dim=0).double().numpy()
        ax.plot(profile, color=TOKEN_COLOURS[t], linewidth=1.0, label=t)
        if t == marked:
            top = np.argsort(-profile)[:top_k]
            ax.scatter(
                top,
                profile[top],
                color=TOKEN_COLOURS[t],
                marker="v",
                zorder=3,
                label=f"top-{top_k} {t} channels",
            )
    ax.set_yscale("log")
    ax.set_xlabel("channel")
    ax.set_ylabel("max |x| over tokens")
    ax.set_title(f"{title}: per-channel abs-max")
    ax.legend(fontsize="small", ncol=4)
    return fig


def load_training_stats(path) -> dict[int, dict] | None:
    """``{step: activation statistics}`` from ``data/activation_stats.json`` (written by
    ``scripts/training_curves.py``), sorted by step; ``None`` if the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    steps = json.loads(path.read_text()).get("steps", {})
    return {int(step): steps[step] for step in sorted(steps, key=int)}


def plot_training_evolution(
    history: dict[int, dict], site: str = "residual", keys=("max_abs", "kurtosis")
) -> Figure:
    """How the statistics evolve over training: per step, the maximum over blocks of each ``key``,
    one line per token type (solid: frame blocks, dashed: global blocks)."""
    steps = sorted(history)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(5.5 * len(keys), 3.6), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys, strict=True):
        for kind, style in (("frame_blocks", "-"), ("global_blocks", "--")):
            for t in TOKEN_TYPES:
                values = [max(block[site][t][key] for block in history[s][kind]) for s in steps]
                ax.plot(
                    steps,
                    values,
                    style,
                    marker=".",
                    color=TOKEN_COLOURS[t],
                    label=f"{kind.split('_')[0]}/{t}",
                )
        ax.set_xlabel("training step")
        ax.set_ylabel(f"max over blocks of {key}")
        ax.set_title(f"{key} of the {site} input over training")
        if key == "max_abs":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    return fig


def plot_point_clouds(scene: dict, pred: dict, max_points: int = 3000, seed: int = 0) -> Figure:
    """Ground-truth and predicted world points side by side (3-D), coloured by the images.

    ``pred["world_points"]`` must already be in the scene's frame (see :func:`align_prediction`);
    both panels show the same valid pixels and share their axis limits.
    """
    valid = np.asarray(scene["valid"], dtype=bool)
    colours = np.asarray(scene["images"]).transpose(0, 2, 3, 1)[valid].clip(0.0, 1.0)
    clouds = {
        "ground truth": np.asarray(scene["world_points"])[valid],
        "prediction (aligned)": np.asarray(pred["world_points"])[valid],
    }
    keep = np.random.default_rng(seed).permutation(len(colours))[:max_points]
    gt = clouds["ground truth"][keep]
    lo, hi = gt.min(axis=0), gt.max(axis=0)
    fig = plt.figure(figsize=(11, 4.6), layout="constrained")
    for index, (name, points) in enumerate(clouds.items()):
        ax = fig.add_subplot(1, 2, index + 1, projection="3d")
        ax.view_init(elev=35.0, azim=-60.0)
        ax.scatter(*points[keep].T, c=colours[keep], s=1.0, depthshade=False)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
        ax.set_box_aspect(hi - lo + 1e-6)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
        ax.set_title(f"{name}: world points")
    return fig
