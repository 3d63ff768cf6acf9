"""Transformer building blocks shared by the DINO patch embed, the aggregator and the camera head.

``Block``: x = x + ls1(attn(norm1(x), pos)); x = x + ls2(mlp(norm2(x))), where the
attention optionally normalizes q and k (LayerNorm over head_dim) and applies 2-D
RoPE. These four linears per block (attn.qkv, attn.proj, mlp.fc1, mlp.fc2) are the
layers QuantVGGT quantizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """x * gamma with a learnable per-channel gamma initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RotaryPositionEmbedding2D(nn.Module):
    """2-D RoPE: the first half of each head's channels rotates with the y position,
    the second half with x. Per axis, d = head_dim/2 channels use frequencies
    inv_freq_k = base^(-2k/d), k < d/2, angles = pos * inv_freq duplicated to d, and
    rotate-half: x cos + cat(-x2, x1) sin. No parameters; shared by all blocks.
    """

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.base = frequency

    def _cos_sin(self, positions: torch.Tensor, dim: int, dtype):
        """cos/sin of angles = pos * inv_freq (duplicated to ``dim``): [B, 1, N, dim] each.

        Computed from the positions directly rather than from a table sized by
        ``positions.max()``, so the forward pass never waits for the device.
        """
        inv_freq = 1.0 / self.base ** (torch.arange(0, dim, 2, device=positions.device).float() / dim)
        angles = positions[..., None].to(inv_freq.dtype) * inv_freq
        angles = torch.cat((angles, angles), dim=-1).to(dtype)[:, None]
        return angles.cos(), angles.sin()

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def _rope_1d(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cos, sin = self._cos_sin(positions, x.shape[-1], x.dtype)
        return x * cos + self._rotate_half(x) * sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [B, heads, N, head_dim]; positions: [B, N, 2] int64 (y, x)."""
        y_half, x_half = x.chunk(2, dim=-1)
        return torch.cat((self._rope_1d(y_half, positions[..., 0]), self._rope_1d(x_half, positions[..., 1])), dim=-1)


def patch_positions(batch: int, grid_h: int, grid_w: int, device=None) -> torch.Tensor:
    """(y, x) of each patch in row-major order: [batch, grid_h*grid_w, 2] int64."""
    ys = torch.arange(grid_h, device=device)
    xs = torch.arange(grid_w, device=device)
    pos = torch.cartesian_prod(ys, xs)
    return pos[None].expand(batch, -1, -1)


class Attention(nn.Module):
    """Multi-head self-attention with optional q/k LayerNorm and 2-D RoPE (applied after the norm)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: nn.Module | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
