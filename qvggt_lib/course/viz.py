"""Figures and small helpers for the course notebooks: alignment for plots, captured activations,
quantization error by granularity, and the figures of notebooks 00 and 01 (tables: eval.tables).

    parameter_breakdown(model)              -> {module group: parameter count} (works on "meta")
    align_prediction(pred, scene)           -> a prediction moved into the scene's world frame and scale
    capture_inputs(model, images, sites)    -> the raw input of chosen layers, [S, P, C] per site
    activation_fake_quantize(x, bits, g)    -> x quantize-dequantized per tensor / token / channel
    quantization_error(x, x_hat)            -> relative MSE and SQNR in dB
    plot_scene_prediction(scene, pred)      -> plot_scene with labelled units, legend and title (notebook 00)
    plot_block_curves / plot_token_distributions / plot_channel_absmax / plot_training_evolution /
    plot_token_channel_heatmap              -> the figures of notebook 01
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..metrics import umeyama_sim3
from ..quant.observers import hooks
from ..quant.quantizer import QuantSpec, fake_quantize
from ..quant.targets import SITES as SITE_MODULES
from .activations import TOKEN_TYPES

TOKEN_COLOURS = {"camera": "tab:red", "register": "tab:orange", "patch": "tab:blue"}
ACTIVATION_GRANULARITIES = ("per_tensor", "per_token", "per_channel")

# Readable axis labels for the keys of ``activation_statistics`` (activations carry no physical
# unit: max |x| and the standard deviation are in the activation's own units, the rest are ratios).
STAT_LABELS = {
    "max_abs": "max |x| (activation units)",
    "std": "standard deviation σ (activation units)",
    "kurtosis": "kurtosis E[(x−μ)⁴]/σ⁴ (Gaussian: 3)",
    "channel_outlier_ratio": "channel outlier ratio max_j m_j / median_j m_j",
}
STAT_NAMES = {
    "max_abs": "max |x|",
    "std": "standard deviation",
    "kurtosis": "kurtosis",
    "channel_outlier_ratio": "channel outlier ratio",
}
SITE_NAMES = {
    "residual": "residual stream (block input)",
    "qkv": "qkv input (after norm1)",
    "proj": "proj input (attention output)",
    "fc1": "fc1 input (after norm2)",
    "fc2": "fc2 input (after GELU)",
}


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


def plot_scene_prediction(scene: dict, pred: dict, title: str | None = None, max_frames: int = 4) -> Figure:
    """``qvggt_lib.data.plot_scene`` with what a reader needs: units, a full legend and a title.

    ``pred`` must already be in the scene's frame (see :func:`align_prediction`). The renderer's
    lengths have no unit ("scene units", rooms 8-12 wide), and so have the depth colour bars and
    the 3-D axes; the legend names the true and the predicted (aligned) cameras and the points.
    """
    from ..data import plot_scene

    fig = plot_scene(scene, pred, max_frames=max_frames)
    row_names = {"image": "input image", "depth": "true depth", "predicted depth": "predicted depth\n(aligned)"}
    camera_names = {"cameras": "true cameras", "predicted cameras": "predicted cameras (aligned by Sim(3))"}
    for ax in fig.axes:
        if ax.name == "3d":
            handles, labels = ax.get_legend_handles_labels()
            handles.append(Line2D([], [], linestyle="none", marker=".", color="tab:green"))
            labels = [camera_names.get(label, label) for label in labels] + [
                "true world points (coloured by the images)"]
            ax.legend(handles, labels, loc="upper left", fontsize="small")
            ax.set_xlabel("x (scene units)")
            ax.set_ylabel("y (scene units)")
            ax.set_zlabel("z (scene units)")
        elif ax.get_ylabel() == "z-depth":
            ax.set_ylabel("depth (scene units)")
        elif ax.get_ylabel() in row_names:
            ax.set_ylabel(row_names[ax.get_ylabel()])
    fig.suptitle(title or f"scene {int(scene['seed'])}: input, true and predicted depth (same colour scale), "
                          "true and predicted cameras")
    return fig


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


def _stat_label(key: str) -> str:
    return STAT_LABELS.get(key, key.replace("_", " "))


def _stat_name(key: str) -> str:
    return STAT_NAMES.get(key, key.replace("_", " "))


def plot_block_curves(
    stats: dict, site: str = "residual", keys=("max_abs", "kurtosis"), log_keys=("max_abs",)
) -> Figure:
    """Statistics over blocks, one panel per (key, frame/global), one line per token type.

    ``stats`` is ``qvggt_lib.course.activations.activation_statistics``' result. This is the
    analogue of the QuantVGGT paper's Fig. 3/7 (token magnitudes by block), for all blocks at once.
    Axes carry readable labels (``STAT_LABELS``); kurtosis panels mark the Gaussian value 3.
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
            if key == "kurtosis":
                ax.axhline(3.0, color="grey", linestyle=":", linewidth=1.0, label="Gaussian (3)")
            if key in log_keys:
                ax.set_yscale("log")
            ax.set_xticks(range(len(stats[kind])))
            ax.set_xlabel(f"{kind.split('_')[0]} block index")
            ax.set_ylabel(_stat_label(key) + (", log scale" if key in log_keys else ""))
            ax.set_title(f"{_stat_name(key)}: {SITE_NAMES.get(site, site)}, {kind.replace('_', ' ')}",
                         fontsize="medium")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return fig


def plot_token_distributions(groups: dict[str, torch.Tensor], title: str, bins: int = 80) -> Figure:
    """Left: histograms (log density) of all values per token type; right: violins of |x|."""
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
    ax_hist.set_xlabel("activation value x (activation units)")
    ax_hist.set_ylabel("probability density (log scale)")
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
    ax_violin.set_ylabel("|x| (symlog scale)")
    ax_violin.set_title(f"{title}: |x| per token type (bars: median, extremes)")
    return fig


def plot_channel_absmax(
    groups: dict[str, torch.Tensor], title: str, top_k: int = 3, ax=None
) -> Figure:
    """Sorted per-channel abs-max profile, one curve per token type.

    For each channel j, ``m_j = max over tokens |x_j|``; the channels are sorted from the largest
    ``m_j`` down and plotted against their rank on log-log axes, so a few outlier channels show as
    a jump at the left end and a flat profile as a flat line, whatever the width (128 or 4096).
    The legend gives each type's outlier ratio ``max_j m_j / median_j m_j`` and its ``top_k``
    channel indices. Draws into ``ax`` if given, else into a new figure.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    else:
        fig = ax.figure
    for t in TOKEN_TYPES:
        if t not in groups:
            continue
        profile = groups[t].abs().amax(dim=0).double().numpy()
        order = np.argsort(-profile, kind="stable")
        ranked = profile[order]
        ratio = ranked[0] / max(float(np.median(profile)), 1e-12)
        top = ", ".join(str(int(c)) for c in order[:top_k])
        ax.plot(np.arange(1, len(ranked) + 1), ranked, color=TOKEN_COLOURS[t], linewidth=1.5,
                label=f"{t}: max/median {ratio:.1f}, top channels {top}")
        ax.plot(1, ranked[0], marker="o", color=TOKEN_COLOURS[t])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("channel rank (sorted by max |x|, log scale)")
    ax.set_ylabel("max |x| over tokens (log scale)")
    ax.set_title(f"{title}: sorted per-channel abs-max", fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="lower left")
    return fig


def plot_token_channel_heatmap(
    panels: dict[str, torch.Tensor],
    patch_start_idx: int,
    title: str,
    frame: int = 0,
    max_patch_tokens: int = 64,
    log: bool = False,
) -> Figure:
    """|x| of one frame's tokens (rows) by channels (columns), the picture of the paper's Fig. 3.

    ``panels`` maps a panel title to an activation ``[S, P, C]`` (as ``capture_inputs`` returns)
    or one frame ``[P, C]``; each panel is one column of the figure. In each, the upper axes show
    the special tokens (camera, then the registers) and the lower axes the first
    ``max_patch_tokens`` patch tokens (all of them for the tiny model), on one colour scale with
    one colour bar, so that five rows among hundreds stay visible. Linear colours by default
    (where the large values are); ``log=True`` shows three decades below the largest value.
    """
    fig = plt.figure(figsize=(6.2 * len(panels), 4.8), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(1, 2.4))
    for col, (name, x) in enumerate(panels.items()):
        x = torch.as_tensor(x)
        if x.dim() == 3:
            x = x[frame]
        if x.dim() != 2 or x.shape[0] <= patch_start_idx:
            raise ValueError(f"x must be [S, P, C] or [P, C] with P > patch_start_idx, got {tuple(x.shape)}")
        shown = x[: patch_start_idx + max_patch_tokens].abs().double().numpy()
        top = float(shown.max())
        norm = LogNorm(vmin=top / 1e3, vmax=top) if log else plt.Normalize(vmin=0.0, vmax=top)
        ax_special = fig.add_subplot(grid[0, col])
        ax_patch = fig.add_subplot(grid[1, col], sharex=ax_special)
        for ax, rows in ((ax_special, shown[:patch_start_idx]), (ax_patch, shown[patch_start_idx:])):
            image = ax.imshow(rows, aspect="auto", interpolation="nearest", cmap="magma", norm=norm)
        names = ["camera"] + [f"register {i}" for i in range(1, patch_start_idx)]
        ax_special.set_yticks(range(patch_start_idx), names, fontsize="small")
        for tick, text in zip(ax_special.get_yticklabels(), names, strict=True):
            tick.set_color(TOKEN_COLOURS["camera" if text == "camera" else "register"])
        ax_special.tick_params(labelbottom=False)
        ax_special.set_title(f"{title}: {name}" if title else name, fontsize="medium")
        shown_patches, all_patches = shown.shape[0] - patch_start_idx, x.shape[0] - patch_start_idx
        ax_patch.set_ylabel(f"patch token ({'all' if shown_patches == all_patches else 'first'} {shown_patches})")
        ax_patch.set_xlabel("channel")
        fig.colorbar(image, ax=[ax_special, ax_patch],
                     label="|x| (activation units" + (", log scale)" if log else ")"))
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
    """How the statistics evolve over training: per snapshot, the maximum over blocks of each
    ``key``, one marker per token type (filled circles: frame blocks, open squares: global blocks).

    The snapshots are few (the shipped run has three), so they are drawn as separate markers
    at their steps, not joined into a curve that would suggest values in between.
    """
    steps = sorted(history)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False, layout="constrained"
    )
    span = (max(steps) - min(steps)) or 1
    for ax, key in zip(axes[0], keys, strict=True):
        for offset, (kind, marker, fill) in zip(
            (-1, 1), (("frame_blocks", "o", "full"), ("global_blocks", "s", "none")), strict=True
        ):
            for shift, t in zip((-1, 0, 1), TOKEN_TYPES, strict=True):
                values = [max(block[site][t][key] for block in history[s][kind]) for s in steps]
                x = [s + span * (0.006 * offset + 0.012 * shift) for s in steps]
                ax.plot(x, values, linestyle="none", marker=marker, fillstyle=fill, markersize=7,
                        color=TOKEN_COLOURS[t], label=f"{kind.split('_')[0]} blocks, {t}")
        if key == "kurtosis":
            ax.axhline(3.0, color="grey", linestyle=":", linewidth=1.0, label="Gaussian (3)")
        ax.set_xticks(steps)
        ax.set_xlabel(f"training step ({len(steps)} snapshots)")
        ax.set_ylabel(f"max over blocks of {_stat_label(key)}", fontsize="small")
        ax.set_title(f"{_stat_name(key)}, {SITE_NAMES.get(site, site)}", fontsize="medium")
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
