"""evaluate_co3d(model, co3d_dir, anno_dir): the Co3Dv2 camera-pose protocol of VGGT's Table 1.

QuantVGGT's Table 1 reports the same AUCs; docs/co3d.md lists the upstream sources and the details
where its released code departs from VGGT's.

Protocol (VGGT's evaluation/test_co3d.py, see docs/co3d.md)
--------
For each category in order, its test sequences in sorted name order (``max_sequences=k``: a
``random.Random(seed).sample`` of k of them when it has at least k, upstream's ``--fast_eval`` for
k = 10). Sequences that fail ``usable_sequence`` (fewer than ``min_frames`` frames) are skipped;
each other one gives ``num_frames`` random frames (``sample_frames``, one ``RandomState(seed)`` for
the whole run), loaded with ``load_and_preprocess_images`` (crop, ``image_size``) for the model.

Metrics
-------
Per sequence the rotation and translation-direction errors of all S(S-1)/2 relative poses
(``metrics.relative_pose_errors``). Per category the errors of all its sequences are pooled, then
AUC@30/15/5/3 of the pair error max(rotation, translation) (``metrics.pose_auc``, percent) and
rra30 / rta30, the percentages of pairs with rotation / translation error below 30 degrees. The
reported numbers are plain means over the categories that have a usable sequence.

Fidelity
--------
With ``reference`` (``evaluate_co3d(float_model, ..., keep_predictions=True)["predictions"]``, same
arguments): the same pooled AUCs (``POSE_FIDELITY_KEYS``) with the reference's cameras in place of
the ground truth, and ``rotation_diff_deg``, the mean angle between predicted and reference camera
rotations, each per category, then the mean over categories.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from ..data.co3d import (
    check_categories,
    check_frame_counts,
    load_sequence,
    read_annotations,
    sample_frames,
    usable_sequence,
)
from ..metrics import (
    ACCURACY_THRESHOLD_DEG, AUC_THRESHOLDS_DEG, pose_auc, relative_pose_errors, rotation_angles_deg,
)
from .evaluate import POSE_FIDELITY_KEYS, predict_scene

METRIC_KEYS = ("auc30", "auc15", "auc5", "auc3", "rra30", "rta30")
FIDELITY_KEYS = (*POSE_FIDELITY_KEYS, "rotation_diff_deg")


def pooled_pose_metrics(errors: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``METRIC_KEYS`` of the (rotation, translation) pair errors of several sequences, pooled."""
    rot_err = np.concatenate([rot for rot, _ in errors])
    trans_err = np.concatenate([trans for _, trans in errors])
    pair_err = np.maximum(rot_err, trans_err)
    return {**{f"auc{t}": pose_auc(pair_err, t) for t in AUC_THRESHOLDS_DEG},
            "rra30": float(np.mean(rot_err < ACCURACY_THRESHOLD_DEG) * 100),
            "rta30": float(np.mean(trans_err < ACCURACY_THRESHOLD_DEG) * 100)}


def _test_sequences(sequences: dict, max_sequences: int | None, rng: random.Random) -> list[str]:
    names = sorted(sequences)
    if max_sequences is not None and len(names) >= max_sequences:
        names = sorted(rng.sample(names, max_sequences))
    return names


def _reference_cameras(reference: list[dict], index: int, record: dict) -> np.ndarray:
    """The reference's cameras of the ``index``-th evaluated sequence, checked to be its frames."""
    hint = ("make it with evaluate_co3d(reference_model, ..., keep_predictions=True) and the same "
            "categories, num_frames, min_frames, seed and max_sequences")
    if index >= len(reference):
        raise ValueError(f"reference has predictions for {len(reference)} sequences, this evaluation "
                         f"uses more; {hint}")
    entry = reference[index]
    theirs = (entry.get("category"), entry.get("sequence"), list(entry.get("frame_ids", ())))
    ours = (record["category"], record["sequence"], record["frame_ids"])
    if theirs != ours:
        raise ValueError(f"reference entry {index} is (category, sequence, frame ids) {theirs}, this "
                         f"evaluation has {ours}; {hint}")
    return np.asarray(entry["extrinsics"])


def evaluate_co3d(
    model: torch.nn.Module,
    co3d_dir,
    anno_dir,
    categories=None,
    num_frames: int = 10,
    min_frames: int = 50,
    seed: int = 0,
    image_size: int | None = None,
    reference: list[dict] | None = None,
    keep_predictions: bool = False,
    progress: bool = True,
    max_sequences: int | None = None,
) -> dict:
    """Co3Dv2 camera-pose metrics of ``model`` (see the module docstring); deterministic.

    Args:
        categories: names from ``CO3D_CATEGORIES`` (None: all 41, upstream's order).
        image_size: the preprocessing width (None: ``model.config.img_size``; VGGT-1B: 518).
        max_sequences: at most this many test sequences per category (quick runs; None: all).

    Returns:
        ``METRIC_KEYS`` (means over categories, percent); ``per_category``: for each category those
        keys (absent when it had no usable sequence), ``num_sequences``, ``num_skipped`` (and its
        ``fidelity``); ``num_sequences``, ``num_skipped`` in total, ``categories`` (those with a
        usable sequence) and the settings. With ``reference``: ``fidelity`` (``FIDELITY_KEYS``).
        With ``keep_predictions``: ``predictions``, one dict per evaluated sequence in order:
        ``category``, ``sequence``, ``frame_ids``, ``extrinsics [S, 3, 4]``.
    """
    from tqdm.auto import tqdm

    categories = check_categories(categories)
    check_frame_counts(num_frames, min_frames)
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
    size = int(image_size or model.config.img_size)
    annotations = {category: read_annotations(anno_dir, category, "test") for category in categories}
    frame_rng, sequence_rng = np.random.RandomState(seed), random.Random(seed)
    per_category, records = {}, []
    for category, sequences in annotations.items():
        names = _test_sequences(sequences, max_sequences, sequence_rng)
        usable = [name for name in names if usable_sequence(sequences[name], min_frames)]
        errors, reference_errors, rotation_diffs = [], [], []
        for name in tqdm(usable, desc=f"co3d {category}", unit="seq", disable=not progress):
            frames = sequences[name]
            frame_ids = sample_frames(len(frames), num_frames, frame_rng)
            sequence = load_sequence(co3d_dir, [frames[i] for i in frame_ids], size)
            cameras = predict_scene(model, sequence["images"])["extrinsics"]
            errors.append(relative_pose_errors(cameras, sequence["extrinsics"]))
            record = {"category": category, "sequence": name, "frame_ids": frame_ids.tolist(),
                      "extrinsics": cameras}
            if reference is not None:
                reference_cameras = _reference_cameras(reference, len(records), record)
                reference_errors.append(relative_pose_errors(cameras, reference_cameras))
                rotation_diffs.append(rotation_angles_deg(cameras, reference_cameras))
            records.append(record)
        result = {"num_sequences": len(usable), "num_skipped": len(names) - len(usable)}
        if usable:
            result.update(pooled_pose_metrics(errors))
        if reference_errors:
            pooled = pooled_pose_metrics(reference_errors)
            result["fidelity"] = {**{key: pooled[key] for key in POSE_FIDELITY_KEYS},
                                  "rotation_diff_deg": float(np.concatenate(rotation_diffs).mean())}
        per_category[category] = result
    scored = [category for category, result in per_category.items() if result["num_sequences"]]
    if not scored:
        raise ValueError(f"no test sequence of {list(categories)} in {anno_dir} has >= {min_frames} "
                         "frames (and sane translations); nothing to evaluate")
    if reference is not None and len(reference) != len(records):
        raise ValueError(f"reference has predictions for {len(reference)} sequences, this evaluation "
                         f"used {len(records)}; evaluate both with the same arguments")
    results = {key: float(np.mean([per_category[c][key] for c in scored])) for key in METRIC_KEYS}
    if reference is not None:
        results["fidelity"] = {key: float(np.mean([per_category[c]["fidelity"][key] for c in scored]))
                               for key in FIDELITY_KEYS}
    if keep_predictions:
        results["predictions"] = records
    return {
        **results,
        "per_category": per_category,
        "num_sequences": len(records),
        "num_skipped": sum(result["num_skipped"] for result in per_category.values()),
        "categories": scored,
        "num_frames": num_frames,
        "min_frames": min_frames,
        "seed": seed,
        "image_size": size,
        "max_sequences": max_sequences,
    }
