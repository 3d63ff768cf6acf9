"""The VGGT aggregator: a DINOv2-with-registers patch embed, then alternating frame and global attention.

Per frame the token sequence is [camera (1), registers (R), patches (h*w)], so
``patch_start_idx = 1 + R``. Frame 0 gets its own camera/register tokens (index 0 of
the learned (1, 2, X, C) tensors), all other frames share index 1: that is the only
way the network knows which frame is the reference. Frame blocks attend within one
frame, tokens viewed as [B*S, P, C]; global blocks attend across all frames, tokens
viewed as [B, S*P, C]. Layer i outputs cat(frame_i, global_i) -> [B, S, P, 2C].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import VGGTConfig
from .layers import Block, RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size conv: [N, 3, H, W] -> [N, (H/p)*(W/p), C]."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers, as VGGT uses it: only the normalized patch tokens leave it.

    Tokens: [cls + pos_embed[0], registers (no pos-embed), patches + pos_embed[1:]].
    The pos-embed is stored for the training grid and resized bicubically (antialiased)
    for other grids.
    """

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        dim, grid = cfg.embed_dim, cfg.img_size // cfg.patch_size
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.patch_embed_registers
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.patch_embed_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # unused at inference
        self.blocks = nn.ModuleList(
            Block(dim, cfg.patch_embed_heads, cfg.mlp_ratio, cfg.patch_embed_init_values, norm_eps=1e-6)
            for _ in range(cfg.patch_embed_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int, dtype) -> torch.Tensor:
        """pos_embed resized to a grid_h x grid_w patch grid: [1, 1 + grid_h*grid_w, C]."""
        n_stored = self.pos_embed.shape[1] - 1
        if n_stored == grid_h * grid_w and grid_h == grid_w:
            return self.pos_embed
        pos = self.pos_embed.float()
        side = int(n_stored**0.5)
        patch_pos = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] (normalized) -> x_norm_patchtokens [N, h*w, C]."""
        N, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(N, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(N, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]


def first_frame_split(tokens: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """(1, 2, X, C) learned tokens -> [B*S, X, C]: index 0 for frame 0, index 1 for frames 1..S-1."""
    first = tokens[:, :1].expand(B, 1, *tokens.shape[2:])
    others = tokens[:, 1:].expand(B, S - 1, *tokens.shape[2:])
    return torch.cat((first, others), dim=1).reshape(B * S, *tokens.shape[2:])


class Aggregator(nn.Module):
    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.patch_start_idx = cfg.patch_start_idx
        self.patch_embed = DinoVisionTransformer(cfg)
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq)
        self.frame_blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.init_values, qk_norm=True, rope=self.rope)
            for _ in range(cfg.depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.init_values, qk_norm=True, rope=self.rope)
            for _ in range(cfg.depth)
        )
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, dim))
        self.reset_constants()
        self.gradient_checkpointing = False

    def reset_constants(self) -> None:
        """The ImageNet mean and std buffers (not in checkpoints: a model built on the meta device
        gets them here after loading)."""
        device = None if self.camera_token.is_meta else self.camera_token.device
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1),
                             persistent=False)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, S, 3, H, W] in [0, 1] -> tokens [B*S, P, C] and RoPE positions [B*S, P, 2].

        Special tokens sit at position (0, 0); patch (i, j) at (i + 1, j + 1).
        """
        B, S, _, H, W = images.shape
        x = ((images - self._mean) / self._std).reshape(B * S, 3, H, W)
        patches = self.patch_embed(x)
        special = torch.cat(
            (first_frame_split(self.camera_token, B, S), first_frame_split(self.register_token, B, S)), dim=1
        )
        tokens = torch.cat((special.to(patches.dtype), patches), dim=1)
        pos = patch_positions(B * S, H // self.patch_size, W // self.patch_size, images.device) + 1
        pos = torch.cat((pos.new_zeros(B * S, self.patch_start_idx, 2), pos), dim=1)
        return tokens, pos

    def _run(self, block: Block, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, x, pos, use_reentrant=False)
        return block(x, pos)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """images [B, S, 3, H, W] -> (list of depth tensors [B, S, P, 2C], patch_start_idx)."""
        B, S = images.shape[:2]
        tokens, pos = self.embed(images)
        P, C = tokens.shape[1:]
        outputs = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            tokens = self._run(frame_block, tokens.reshape(B * S, P, C), pos.reshape(B * S, P, 2))
            frame_out = tokens.reshape(B, S, P, C)
            tokens = self._run(global_block, tokens.reshape(B, S * P, C), pos.reshape(B, S * P, 2))
            global_out = tokens.reshape(B, S, P, C)
            outputs.append(torch.cat((frame_out, global_out), dim=-1))
        return outputs, self.patch_start_idx
