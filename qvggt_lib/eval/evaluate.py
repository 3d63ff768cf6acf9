"""evaluate(model): a VGGT (full precision or quantized) scored on rendered test scenes, and against a reference.

    predict_scene(model, images)  -> numpy cameras, depth and point maps of one scene
    scene_metrics(pred, gt)       -> the METRIC_KEYS of one scene (qvggt_lib.metrics)
    evaluate(model, ...)          -> metrics averaged over scenes, plus trivial baselines
    save_json(results, path)      -> strict JSON (tables.format_table makes the markdown)

Scenes
------
``evaluate(model, num_scenes=N, seed=K, split="test")`` renders scene indices
``K, K+1, ..., K+N-1`` of ``split`` with ``qvggt_lib.data.render_split`` (the index fixes the
scene bit for bit, so the same call gives the same scenes on every machine). Seeds that are
multiples of ``N`` (0, N, 2N, ...) therefore select disjoint blocks of N test scenes;
seeds closer than ``N`` share scenes.

Averaging
---------
Every metric is computed per scene (``qvggt_lib.metrics.reconstruction_metrics``) and the
reported value is the plain mean over scenes (each scene weighs the same, whatever its number
of valid pixels). Units: ``auc*``, ``rra30``, ``rta30`` in percent; ``depth_delta1`` and
``point_nc`` in [0, 1]; ``depth_abs_rel`` unit-free; ``point_acc`` / ``point_comp`` in
ground-truth scene units after Sim(3) alignment.

Fidelity to a reference model
-----------------------------
When ground-truth metrics hardly move (a small model whose blocks barely change the residual
stream shrugs off quantization noise), what a quantized model *changes* is still measurable:
``evaluate(q_model, reference=fp_predictions)`` adds ``fidelity`` (``FIDELITY_KEYS``), the mean
over scenes of how far its outputs are from the reference model's outputs on the same scenes
(``evaluate(fp_model, keep_predictions=True)["predictions"]``):

* ``depth_rel_diff``: mean |d - d_ref| / d_ref over valid pixels, percent;
* ``points_rel_diff``: ||P - P_ref|| / ||P_ref|| over valid pixels (Frobenius), percent;
* ``rotation_diff_deg``: mean angle between predicted and reference camera rotations;
* ``auc30``, ``auc15``, ``auc5``, ``auc3`` (``POSE_FIDELITY_KEYS``): the pose AUCs of the
  accuracy metrics (pairwise relative rotation and translation errors, percent), with the
  reference model's cameras in place of the ground truth. A coarse teaching model's own poses
  are far from the ground truth (AUC@5 near 1), so the ground-truth AUCs cannot separate
  quantizers at tight thresholds; against the float model's cameras they can (docs/fidelity.md).

Trivial baseline
----------------
``results["baselines"]["trivial"]`` is one "know-nothing" prediction scored by the same code
on the same scenes, so that model numbers can be read against a floor:

* cameras: every frame gets the identity extrinsic ``[I | 0]`` (identity rotation, zero
  translation). Relative rotations are then all identity, so ``rra30`` is the share of
  ground-truth pairs that happen to be within 30 degrees; a zero relative translation has no
  direction and counts as 90 degrees off (metrics convention), so ``auc*`` and ``rta30`` are 0.
* depth: a constant map (the median valid ground-truth depth of the scene). Depth metrics align
  each frame by its median, so any constant scores the same.
* points: that constant depth unprojected with the identity extrinsics and the ground-truth
  intrinsics (a fronto-parallel plane per frame, all frames on top of each other).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..data import SPLITS, render_split
from ..geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
from ..metrics import camera_metrics, reconstruction_metrics, rotation_angles_deg

METRIC_KEYS = (
    "auc30", "auc15", "auc5", "auc3", "rra30", "rta30",
    "depth_abs_rel", "depth_delta1", "point_acc", "point_comp", "point_nc",
)
FIDELITY_KEYS = ("depth_rel_diff", "points_rel_diff", "rotation_diff_deg")
POSE_FIDELITY_KEYS = ("auc30", "auc15", "auc5", "auc3")  # under "fidelity": cameras vs the reference's


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def predict_scene(model: torch.nn.Module, images) -> dict[str, np.ndarray]:
    """Run ``model`` on the frames of one scene and return NumPy predictions.

    Args:
        model: a VGGT (or any module with the same outputs). It is switched to eval mode for
            the call (and back to training mode afterwards if it was training).
        images: ``[S, 3, H, W]`` in [0, 1], NumPy array or tensor (moved to the model's device).

    Returns:
        ``extrinsics [S, 3, 4]`` (camera-from-world) and ``intrinsics [S, 3, 3]`` decoded from
        ``pose_enc`` for the image size ``(H, W)``; ``depth [S, H, W]``, ``depth_conf [S, H, W]``;
        ``world_points [S, H, W, 3]`` (the point head's map, not unprojected depth) and
        ``world_points_conf [S, H, W]``. All float32.
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4:
        raise ValueError(f"images must have shape [S, 3, H, W] (one scene), got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(images.to(_model_device(model)))
            extrinsics, intrinsics = pose_encoding_to_extri_intri(out["pose_enc"], images.shape[-2:])
    finally:
        model.train(was_training)
    return {
        "extrinsics": _numpy(extrinsics[0]),
        "intrinsics": _numpy(intrinsics[0]),
        "depth": _numpy(out["depth"][0, ..., 0]),
        "depth_conf": _numpy(out["depth_conf"][0]),
        "world_points": _numpy(out["world_points"][0]),
        "world_points_conf": _numpy(out["world_points_conf"][0]),
    }


def scene_metrics(pred: dict, gt: dict) -> dict[str, float]:
    """The ``METRIC_KEYS`` of one scene: ``pred`` needs ``extrinsics, depth, world_points``,
    ``gt`` the same plus ``valid`` (as ``render_split`` returns)."""
    metrics = reconstruction_metrics(pred, gt)
    return {key: float(metrics[key]) for key in METRIC_KEYS}


def fidelity_metrics(pred: dict, reference: dict, valid) -> dict[str, float]:
    """``FIDELITY_KEYS`` and ``POSE_FIDELITY_KEYS`` of one scene: ``pred`` against ``reference``
    (both from predict_scene)."""
    valid = np.asarray(valid, dtype=bool)
    shapes = {np.shape(pred["depth"]), np.shape(reference["depth"]), valid.shape}
    if len(shapes) != 1:
        raise ValueError(f"depth maps and valid must share one shape [S, H, W], got {sorted(shapes)}")
    if not valid.any():
        raise ValueError("no valid pixels to compare")
    depth = np.asarray(pred["depth"], np.float64)[valid]
    depth_ref = np.asarray(reference["depth"], np.float64)[valid]
    points = np.asarray(pred["world_points"], np.float64)[valid]
    points_ref = np.asarray(reference["world_points"], np.float64)[valid]
    return {
        "depth_rel_diff": 100 * float(np.mean(np.abs(depth - depth_ref) / np.abs(depth_ref))),
        "points_rel_diff": 100 * float(np.linalg.norm(points - points_ref) / np.linalg.norm(points_ref)),
        "rotation_diff_deg": float(rotation_angles_deg(pred["extrinsics"], reference["extrinsics"]).mean()),
        **{key: value for key, value in camera_metrics(pred["extrinsics"], reference["extrinsics"]).items()
           if key in POSE_FIDELITY_KEYS},
    }


def with_fidelity(metrics: dict) -> dict:
    """An evaluate() result with its fidelity beside the metrics, one flat dict for tables: the
    distances (``FIDELITY_KEYS``) under their names, the pose AUCs against the reference as
    ``fidelity_auc30`` ... (their plain keys are the ground-truth AUCs)."""
    fidelity = metrics.get("fidelity", {})
    return {**metrics, **{key: fidelity[key] for key in FIDELITY_KEYS if key in fidelity},
            **{f"fidelity_{key}": fidelity[key] for key in POSE_FIDELITY_KEYS if key in fidelity}}


def trivial_prediction(gt: dict) -> dict[str, np.ndarray]:
    """The trivial baseline's prediction for one scene (see the module docstring)."""
    depth_gt = np.asarray(gt["depth"], dtype=np.float64)
    valid = np.asarray(gt["valid"], dtype=bool) & np.isfinite(depth_gt) & (depth_gt > 0)
    level = float(np.median(depth_gt[valid])) if valid.any() else 1.0
    num_frames = depth_gt.shape[0]
    extrinsics = np.tile(np.eye(3, 4), (num_frames, 1, 1))
    depth = np.full(depth_gt.shape, level)
    points = unproject_depth_map_to_point_map(depth, extrinsics, np.asarray(gt["intrinsics"], np.float64))
    return {"extrinsics": extrinsics, "depth": depth, "world_points": points}


BASELINES = {"trivial": trivial_prediction}


def _mean_over_scenes(per_scene: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([scene[key] for scene in per_scene])) for key in METRIC_KEYS}


def evaluate(
    model: torch.nn.Module,
    num_scenes: int = 32,
    num_frames: int = 8,
    seed: int = 0,
    split: str = "test",
    image_size: int | None = None,
    progress: bool = True,
    baselines: bool = True,
    reference: list[dict] | None = None,
    keep_predictions: bool = False,
) -> dict:
    """Mean reconstruction metrics of ``model`` over ``num_scenes`` rendered scenes.

    Scene ``i`` is ``render_split(split, seed + i, num_frames=num_frames, image_size=image_size
    or model.config.img_size)``; use seeds that are multiples of ``num_scenes`` for disjoint
    blocks. Deterministic: the same arguments and weights give the same numbers.

    Returns:
        ``{auc30, auc15, auc5, auc3, rra30, rta30, depth_abs_rel, depth_delta1, point_acc,
        point_comp, point_nc}`` (means over scenes, see the module docstring for units), plus
        ``baselines`` (``{"trivial": {same keys}}``, or ``{}`` with ``baselines=False``),
        ``per_scene`` (one dict of the metric keys and ``index`` per scene), ``num_scenes``,
        ``num_frames``, ``seed``, ``split`` and ``image_size``. With ``reference`` (one
        predict_scene dict per scene, e.g. a float model's ``predictions``): ``fidelity``, the
        means of ``FIDELITY_KEYS`` and ``POSE_FIDELITY_KEYS``. With ``keep_predictions``: ``predictions``, this model's
        predict_scene dicts.
    """
    from tqdm.auto import tqdm

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (camera metrics use frame pairs), got {num_frames}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if not (0 <= seed and seed + num_scenes <= len(SPLITS[split])):
        raise ValueError(f"scenes {seed}..{seed + num_scenes - 1} are outside the {len(SPLITS[split])} "
                         f"scenes of split {split!r}")
    if reference is not None and len(reference) != num_scenes:
        raise ValueError(f"reference has predictions for {len(reference)} scenes, evaluation uses {num_scenes}; "
                         "make it with evaluate(reference_model, ..., keep_predictions=True) on the same scenes")
    size = int(image_size or model.config.img_size)
    per_scene: list[dict] = []
    predictions: list[dict] = []
    fidelity: list[dict] = []
    per_baseline: dict[str, list[dict]] = {name: [] for name in (BASELINES if baselines else ())}
    for i in tqdm(range(num_scenes), desc="eval", unit="scene", disable=not progress):
        gt = render_split(split, seed + i, num_frames=num_frames, image_size=size)
        pred = predict_scene(model, gt["images"])
        per_scene.append({**scene_metrics(pred, gt), "index": seed + i})
        if reference is not None:
            if reference[i]["depth"].shape != pred["depth"].shape:
                raise ValueError(f"reference scene {i} has depth {reference[i]['depth'].shape}, this model "
                                 f"{pred['depth'].shape}: evaluate both with the same scenes, frames and size")
            fidelity.append(fidelity_metrics(pred, reference[i], gt["valid"]))
        if keep_predictions:
            predictions.append(pred)
        for name, scenes in per_baseline.items():
            scenes.append(scene_metrics(BASELINES[name](gt), gt))
    extras = {}
    if reference is not None:
        extras["fidelity"] = {key: float(np.mean([f[key] for f in fidelity]))
                              for key in (*FIDELITY_KEYS, *POSE_FIDELITY_KEYS)}
    if keep_predictions:
        extras["predictions"] = predictions
    return {
        **_mean_over_scenes(per_scene),
        **extras,
        "baselines": {name: _mean_over_scenes(scenes) for name, scenes in per_baseline.items()},
        "per_scene": per_scene,
        "num_scenes": num_scenes,
        "num_frames": num_frames,
        "seed": seed,
        "split": split,
        "image_size": size,
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_json(results: dict, path) -> Path:
    """Write ``results`` as strict JSON (NumPy values converted, NaN/inf as null); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")
    return path
