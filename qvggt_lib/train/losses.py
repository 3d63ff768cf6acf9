"""VGGT's training losses (Wang et al. 2025, Sec. 3.4): L = w_cam L_camera + L_depth + L_pmap.

Ground truth is first expressed in the first camera's frame (frame 0 becomes the
identity camera) and divided by the mean distance of all valid points to the
origin, so the network predicts a normalized scene, as VGGT does.

* L_camera: Huber loss on the pose encoding of every refinement iteration, later
  iterations weighted more (gamma^(n-1-i)).
* L_depth, L_pmap: aleatoric-uncertainty regression, sum over pixels of
  Σ ⊙ |ŷ - y| + Σ ⊙ |∇ŷ - ∇y| - α log Σ, with the predicted confidence Σ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import extri_intri_to_pose_encoding


def to_homogeneous(extrinsics: torch.Tensor) -> torch.Tensor:
    """[..., 3, 4] -> [..., 4, 4]."""
    bottom = torch.zeros_like(extrinsics[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat((extrinsics, bottom), dim=-2)


def normalize_ground_truth(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-express a batch in frame 0's camera frame and normalize its scale.

    E_i' = E_i E_0^{-1}; X' = R_0 X + t_0; s = mean_valid |X'|; then translations,
    points and depths are divided by s.
    """
    extr = to_homogeneous(batch["extrinsics"].float())  # [B, S, 4, 4]
    first = extr[:, :1]
    new_extr = extr @ torch.linalg.inv(first)
    points = batch["world_points"].float()  # [B, S, H, W, 3]
    R0, t0 = first[..., :3, :3], first[..., :3, 3]
    points = torch.einsum("bij,bshwj->bshwi", R0[:, 0], points) + t0[:, 0, None, None, None, :]
    valid = batch["valid"].bool()
    dist = (points.norm(dim=-1) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    scale = dist.clamp(min=1e-6)  # [B]
    new_extr = new_extr[..., :3, :].clone()
    new_extr[..., :3, 3] /= scale[:, None, None]
    return {
        "extrinsics": new_extr,
        "intrinsics": batch["intrinsics"].float(),
        "world_points": points / scale[:, None, None, None, None],
        "depth": batch["depth"].float() / scale[:, None, None, None],
        "valid": valid,
        "scale": scale,
    }


def camera_loss(pose_enc_list: list[torch.Tensor], gt_pose_enc: torch.Tensor, gamma: float = 0.6, delta: float = 0.1):
    """Σ_i gamma^(n-1-i) [Huber(T) + Huber(q) + 0.5 Huber(FoV)] over the refinement iterations."""
    n = len(pose_enc_list)
    total = gt_pose_enc.new_zeros(())
    for i, pred in enumerate(pose_enc_list):
        def huber(a, b):
            return F.huber_loss(a, b, delta=delta)

        stage = huber(pred[..., :3], gt_pose_enc[..., :3]) + huber(pred[..., 3:7], gt_pose_enc[..., 3:7])
        stage = stage + 0.5 * huber(pred[..., 7:], gt_pose_enc[..., 7:])
        total = total + gamma ** (n - 1 - i) * stage
    return total


def confidence_regression_loss(pred, gt, conf, valid, alpha: float = 0.2):
    """Σ|ŷ - y| + Σ|∇(ŷ - y)| - α log Σ averaged over valid pixels.

    pred, gt: [B, S, H, W, C]; conf, valid: [B, S, H, W].
    """
    diff = pred - gt
    err = diff.norm(dim=-1)
    v = valid.float()
    reg = ((conf * err - alpha * torch.log(conf)) * v).sum() / v.sum().clamp(min=1)
    grad_terms = []
    for dim in (2, 3):  # image rows, columns
        n = diff.shape[dim]
        d = diff.narrow(dim, 1, n - 1) - diff.narrow(dim, 0, n - 1)
        both = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)
        c = conf.narrow(dim, 0, n - 1)
        grad_terms.append((c * d.norm(dim=-1) * both).sum() / both.sum().clamp(min=1))
    return reg, sum(grad_terms)


def vggt_loss(predictions: dict, batch: dict, camera_weight: float = 5.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (detached scalars, left on the device) for a rendered batch
    (see :func:`normalize_ground_truth`)."""
    gt = normalize_ground_truth(batch)
    H, W = gt["depth"].shape[-2:]
    gt_pose = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (H, W))
    parts = {"camera": camera_loss(predictions["pose_enc_list"], gt_pose)}
    parts["depth"], parts["depth_grad"] = confidence_regression_loss(
        predictions["depth"], gt["depth"][..., None], predictions["depth_conf"], gt["valid"]
    )
    parts["point"], parts["point_grad"] = confidence_regression_loss(
        predictions["world_points"], gt["world_points"], predictions["world_points_conf"], gt["valid"]
    )
    total = camera_weight * parts["camera"] + sum(v for k, v in parts.items() if k != "camera")
    return total, {k: v.detach() for k, v in parts.items()}
