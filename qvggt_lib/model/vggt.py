"""VGGT (Wang et al., CVPR 2025): images of one scene in, cameras, depth and point maps out.

    aggregator(images) -> 24 (or cfg.depth) layers of cat(frame, global) tokens
    camera_head(last layer, camera token)   -> pose_enc [B, S, 9]
    depth_head(layers 4, 11, 17, 23)        -> depth [B, S, H, W, 1], depth_conf [B, S, H, W]
    point_head(layers 4, 11, 17, 23)        -> world_points [B, S, H, W, 3], world_points_conf

The state dict is key-for-key the official one (without ``track_head.*``).
"""

from __future__ import annotations

import torch
from torch import nn

from .aggregator import Aggregator
from .config import VGGTConfig, get_config
from .heads import build_heads

INPUT_RANGE_TOLERANCE = 1e-2  # allow resampling overshoot around [0, 1]


class VGGT(nn.Module):
    def __init__(self, cfg: VGGTConfig | None = None):
        super().__init__()
        self.config = cfg or VGGTConfig()
        self.aggregator = Aggregator(self.config)
        for name, head in build_heads(self.config).items():
            setattr(self, name, head)

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Validates images and returns them as [B, S, 3, H, W]."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(
                f"images must have shape [S, 3, H, W] or [B, S, 3, H, W], got {tuple(images.shape)}; "
                "stack the frames of one scene along the first dimension"
            )
        if images.shape[2] != 3:
            raise ValueError(
                f"images must have 3 (RGB) channels in dimension -3, got {images.shape[2]} "
                f"(shape {tuple(images.shape)}); convert grayscale/RGBA to RGB and use channels-first layout"
            )
        H, W = images.shape[-2:]
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(
                f"image height and width must be multiples of the patch size {p}, got {H}x{W}; "
                "resize with qvggt_lib.io.load_and_preprocess_images or crop to a multiple of 14"
            )
        if images.shape[0] == 0 or images.shape[1] == 0:
            raise ValueError(
                f"images must hold at least one frame, got shape {tuple(images.shape)}; "
                "pass [S, 3, H, W] with S >= 1 (VGGT reconstructs from one or more views)"
            )
        if H == 0 or W == 0:
            raise ValueError(f"images must be at least {p}x{p} pixels, got {H}x{W}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
        if images.dtype == torch.float64:
            raise TypeError("images must be float32 (or float16/bfloat16), got float64; convert with images.float()")
        if images.device.type != "meta":
            finite = torch.isfinite(images).flatten(2).all(-1)  # [B, S]
            if not bool(finite.all()):
                bad = (~finite).nonzero().tolist()  # [[scene, frame], ...]
                where = ", ".join(f"frame {s}" if images.shape[0] == 1 else f"scene {b} frame {s}" for b, s in bad[:8])
                more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
                raise ValueError(
                    f"images contain NaN or Inf values in {where}{more}; every output would be NaN. "
                    "Check how those frames were loaded or decoded, or drop them"
                )
            lo, hi = float(images.min()), float(images.max())
            if lo < -INPUT_RANGE_TOLERANCE or hi > 1 + INPUT_RANGE_TOLERANCE:
                raise ValueError(
                    f"images must be RGB in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                    "do not apply ImageNet normalization yourself (the model does it), and divide 0-255 data by 255"
                )
        return images

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.check_images(images)
        tokens, patch_start_idx = self.aggregator(images)
        predictions: dict[str, torch.Tensor] = {}
        # The heads run in fp32, as upstream does (autocast disabled).
        with torch.autocast(device_type=images.device.type, enabled=False):
            tokens32 = [t.float() for t in tokens]
            if self.camera_head is not None:
                pose_enc_list = self.camera_head(tokens32)
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            images32 = images.float()
            if self.depth_head is not None:
                depth, depth_conf = self.depth_head(tokens32, images32, patch_start_idx)
                predictions["depth"], predictions["depth_conf"] = depth, depth_conf
            if self.point_head is not None:
                points, points_conf = self.point_head(tokens32, images32, patch_start_idx)
                predictions["world_points"], predictions["world_points_conf"] = points, points_conf
        if not self.training:
            predictions["images"] = images
        return predictions


def init_weights(model: nn.Module, token_init_std: float = 1e-6) -> None:
    """Training-from-scratch init (ViT/timm style): trunc-normal(0.02) linears, zero biases,
    pos-embed trunc-normal(0.02), cls/register/camera tokens normal(token_init_std)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    agg = model.aggregator
    nn.init.trunc_normal_(agg.patch_embed.pos_embed, std=0.02)
    for p in (agg.patch_embed.cls_token, agg.patch_embed.register_tokens, agg.camera_token, agg.register_token):
        nn.init.normal_(p, std=token_init_std)


def build_vggt(name: str = "vggt-1b", *, device=None, seed: int | None = 0, **overrides) -> VGGT:
    """Build a VGGT by preset name ("vggt-1b" or "tiny") with optional config overrides.

    ``device="meta"`` allocates no memory (for key/shape checks and size counts).
    Weights are randomly initialised with ``seed`` (reproducible); load real weights
    with :func:`qvggt_lib.model.load_checkpoint`.
    """
    cfg = get_config(name, **overrides)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return VGGT(cfg)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = VGGT(cfg)
        init_weights(model, cfg.token_init_std)
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    return model.to(device) if device is not None else model
