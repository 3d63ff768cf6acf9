"""Model configurations: the official VGGT-1B sizes and a tiny CPU teaching size.

Both use exactly the same architecture (``qvggt_lib.model.vggt``); only sizes
differ. ``build_vggt(name, **overrides)`` picks a preset and lets a test or a
user change any field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Upper bounds of the integer fields, far above VGGT-1B's values (24 blocks, width 1024, 518 px).
LIMITS = {"img_size": 4096, "patch_size": 64, "embed_dim": 8192, "depth": 128, "num_heads": 256,
          "num_register_tokens": 64, "patch_embed_depth": 128, "patch_embed_heads": 256,
          "patch_embed_registers": 64, "camera_trunk_depth": 64, "camera_num_heads": 256, "dpt_features": 4096}


@dataclass(frozen=True)
class VGGTConfig:
    """All sizes of a VGGT. Defaults are the official VGGT-1B ones.

    Aggregator: ``depth`` frame blocks and ``depth`` global blocks of width
    ``embed_dim``; a DINOv2-style patch embed of ``patch_embed_depth`` ViT blocks
    (same width) turns each ``img_size``² image into (img_size/patch_size)² tokens.
    Heads read layers ``intermediate_layer_idx`` (DPT) and the last layer (camera).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    init_values: float = 0.01  # LayerScale init of aggregator and camera-head blocks
    token_init_std: float = 1e-6  # camera / register token init
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    patch_embed_registers: int = 4
    patch_embed_init_values: float = 1.0
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True

    def __post_init__(self):
        problems = self._type_and_range_problems()
        if problems:  # the divisibility checks below assume sane types
            raise ValueError("Invalid VGGT configuration: " + "; ".join(problems))
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        elif (self.embed_dim // self.num_heads) % 4:
            problems.append("head_dim must be a multiple of 4 for 2-D RoPE (two halves of sin/cos pairs)")
        if self.embed_dim % self.patch_embed_heads:
            problems.append(f"embed_dim={self.embed_dim} is not divisible by patch_embed_heads={self.patch_embed_heads}")
        if (2 * self.embed_dim) % self.camera_num_heads:
            problems.append(f"2*embed_dim={2 * self.embed_dim} is not divisible by camera_num_heads")
        if self.img_size % self.patch_size:
            problems.append(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if len(self.intermediate_layer_idx) != 4 or any(not 0 <= i < self.depth for i in self.intermediate_layer_idx):
            problems.append(f"intermediate_layer_idx={self.intermediate_layer_idx} needs 4 layer indices in [0, {self.depth})")
        if len(self.dpt_out_channels) != 4:
            problems.append("dpt_out_channels needs 4 entries")
        if problems:
            raise ValueError("Invalid VGGT configuration: " + "; ".join(problems))

    def _type_and_range_problems(self) -> list[str]:
        """Every field has its declared type and a sane range (a config read from a file is
        untrusted: ``depth=999`` at full width would allocate until memory runs out)."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                ok = isinstance(value, bool)
            elif f.type == "int":
                ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= LIMITS.get(f.name, 4096)
            elif f.type == "float":
                ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                      and (value >= 0 if f.name == "token_init_std" else value > 0))
            else:  # tuple[int, int, int, int]
                ok = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65536
                                                      for v in value)
            if not ok:
                problems.append(f"{f.name}={value!r} is not a valid {f.type}"
                                + (f" in [1, {LIMITS.get(f.name, 4096)}]" if f.type == "int" else ""))
        return problems

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        """Per-frame token order is [camera (1), registers (num_register_tokens), patches]."""
        return 1 + self.num_register_tokens

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VGGTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown VGGT config fields {sorted(unknown)}; known fields: {sorted(known)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


CONFIGS: dict[str, VGGTConfig] = {
    "vggt-1b": VGGTConfig(),
    # Same architecture, CPU teaching sizes: power-of-two widths (Hadamard sizes are
    # exact), 112 px images -> 8x8 patches, 3 DINO-style patch-embed blocks,
    # 6 frame + 6 global blocks, narrow DPT features.
    "tiny": VGGTConfig(
        img_size=112,
        embed_dim=128,
        depth=6,
        num_heads=4,
        patch_embed_depth=3,
        patch_embed_heads=4,
        camera_trunk_depth=2,
        camera_num_heads=4,
        dpt_features=32,
        dpt_out_channels=(32, 64, 128, 128),
        intermediate_layer_idx=(1, 2, 4, 5),
    ),
}


def get_config(name: str, **overrides) -> VGGTConfig:
    """Preset ``name`` with any field replaced by ``overrides``."""
    if name not in CONFIGS:
        raise ValueError(f"Unknown model config {name!r}; choose one of {sorted(CONFIGS)}")
    known = {f.name for f in dataclasses.fields(VGGTConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"Unknown config override(s) {sorted(unknown)}; known fields: {sorted(known)}")
    return dataclasses.replace(CONFIGS[name], **overrides)
