"""VGGT's prediction heads: the camera head (iterative adaLN refinement) and the DPT dense head.

Camera head: t = LN(camera token of the last layer) [B, S, 2C]; for 4 iterations,
(shift, scale, gate) = Linear(SiLU(embed(pred))), y = gate * (LN(t)(1 + scale) + shift) + t,
y = trunk(y) (attention across the S frames), pred += MLP(LN(y)). Output is the
pose encoding [T (3), quaternion XYZW (4), fov_h, fov_w] with ReLU on the FoVs.

DPT head: four aggregator layers -> LayerNorm -> 1x1 projections -> resize to
strides 4, 8, 16, 32 of the patch grid -> RefineNet fusion -> full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VGGTConfig
from .layers import Block, Mlp

# --------------------------------------------------------------------------- camera head


def activate_pose(pred: torch.Tensor) -> torch.Tensor:
    """absT_quaR_FoV activation: translation and quaternion linear, FoV ReLU."""
    return torch.cat((pred[..., :7], F.relu(pred[..., 7:])), dim=-1)


class CameraHead(nn.Module):
    def __init__(self, dim_in: int, trunk_depth: int, num_heads: int, mlp_ratio: float, init_values: float):
        super().__init__()
        target_dim = 9
        self.trunk = nn.Sequential(
            *(Block(dim_in, num_heads, mlp_ratio, init_values) for _ in range(trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, target_dim))
        self.embed_pose = nn.Linear(target_dim, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, target_dim)

    def forward(self, aggregated_tokens: list[torch.Tensor], num_iterations: int = 4) -> list[torch.Tensor]:
        """Returns the activated pose encoding [B, S, 9] after each iteration."""
        tokens = self.token_norm(aggregated_tokens[-1][:, :, 0])  # camera token, [B, S, 2C]
        B, S, _ = tokens.shape
        pred, preds = None, []
        for _ in range(num_iterations):
            if pred is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))
            else:
                pred = pred.detach()  # the recurrence carries the pre-activation encoding
                condition = self.embed_pose(pred)
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            y = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(y)))
            pred = delta if pred is None else pred + delta
            preds.append(activate_pose(pred))
        return preds


# --------------------------------------------------------------------------- DPT head


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))).

    Upstream applies an in-place ReLU to its input, so the skip connection carries
    relu(x), not x; we reproduce that explicitly (without mutating the input).
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """out = out_conv(upsample(rcu2(x + rcu1(skip)))), bilinear with align_corners=True."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def create_uv_grid(width: int, height: int, aspect_ratio: float, dtype=None, device=None) -> torch.Tensor:
    """Pixel-centre (u, v) grid [H, W, 2] spanning the image, normalized by its diagonal."""
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def sincos_embed(pos: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """[N] positions -> [N, dim] = [sin(pos * w_k), cos(pos * w_k)], w_k = omega_0^(-2k/dim)."""
    omega = 1.0 / omega_0 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    angles = torch.outer(pos.reshape(-1).double(), omega)
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def uv_position_embedding(x: torch.Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> torch.Tensor:
    """Adds ratio * sincos(u, v) to a feature map x [N, C, h, w]."""
    C, h, w = x.shape[1:]
    uv = create_uv_grid(w, h, aspect_ratio=image_w / image_h, dtype=x.dtype, device=x.device).reshape(-1, 2)
    emb = torch.cat((sincos_embed(uv[:, 0], C // 2), sincos_embed(uv[:, 1], C // 2)), dim=-1)
    emb = emb.to(x.dtype).reshape(h, w, C).permute(2, 0, 1)
    return x + ratio * emb[None]


class DPTHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        output_dim: int,
        activation: str,
        features: int,
        out_channels: tuple[int, int, int, int],
        intermediate_layer_idx: tuple[int, int, int, int],
    ):
        super().__init__()
        if activation not in ("exp", "inv_log"):
            raise ValueError(f"Unknown DPT activation {activation!r}; use 'exp' or 'inv_log'")
        self.patch_size = patch_size
        self.activation = activation
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
        )

    def forward(
        self, aggregated_tokens: list[torch.Tensor], images: torch.Tensor, patch_start_idx: int, frames_chunk_size: int = 8
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> prediction [B, S, H, W, output_dim-1] and confidence [B, S, H, W], processing frames in chunks."""
        S = images.shape[1]
        if frames_chunk_size is None or frames_chunk_size >= S:
            return self._forward_frames(aggregated_tokens, images, patch_start_idx, 0, S)
        chunks = [
            self._forward_frames(aggregated_tokens, images, patch_start_idx, s, min(s + frames_chunk_size, S))
            for s in range(0, S, frames_chunk_size)
        ]
        return torch.cat([c[0] for c in chunks], dim=1), torch.cat([c[1] for c in chunks], dim=1)

    def _forward_frames(self, aggregated_tokens, images, patch_start_idx, start, end):
        B, _, _, H, W = images.shape
        S = end - start
        h, w = H // self.patch_size, W // self.patch_size
        levels = []
        for project, resize, layer_idx in zip(self.projects, self.resize_layers, self.intermediate_layer_idx):
            x = aggregated_tokens[layer_idx][:, start:end, patch_start_idx:]  # [B, S, h*w, 2C]
            x = self.norm(x.reshape(B * S, h * w, -1))
            x = x.permute(0, 2, 1).reshape(B * S, -1, h, w)
            x = uv_position_embedding(project(x), W, H)
            levels.append(resize(x))
        out = self._fuse(levels)
        out = F.interpolate(out, size=(h * self.patch_size, w * self.patch_size), mode="bilinear", align_corners=True)
        out = self.scratch.output_conv2(uv_position_embedding(out, W, H))
        out = out.permute(0, 2, 3, 1)  # [B*S, H, W, output_dim]
        values, conf = out[..., :-1], out[..., -1]
        values = torch.exp(values) if self.activation == "exp" else torch.sign(values) * torch.expm1(values.abs())
        conf = 1 + conf.exp()
        return values.reshape(B, S, *values.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

    def _fuse(self, levels: list[torch.Tensor]) -> torch.Tensor:
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.refinenet1(out, l1)
        return s.output_conv1(out)


def build_heads(cfg: VGGTConfig) -> dict[str, nn.Module | None]:
    dim_in = 2 * cfg.embed_dim
    dpt = dict(
        dim_in=dim_in,
        patch_size=cfg.patch_size,
        features=cfg.dpt_features,
        out_channels=cfg.dpt_out_channels,
        intermediate_layer_idx=cfg.intermediate_layer_idx,
    )
    return {
        "camera_head": CameraHead(dim_in, cfg.camera_trunk_depth, cfg.camera_num_heads, cfg.mlp_ratio, cfg.init_values)
        if cfg.enable_camera
        else None,
        "point_head": DPTHead(output_dim=4, activation="inv_log", **dpt) if cfg.enable_point else None,
        "depth_head": DPTHead(output_dim=2, activation="exp", **dpt) if cfg.enable_depth else None,
    }
