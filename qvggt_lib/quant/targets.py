"""What gets quantized in a VGGT: one declarative table (QuantVGGT, Feng et al., 2025, Sec. 4.1).

Every quantized layer is one of the four linears of a transformer ``Block``:

    linear      input                        LayerNorm-fed   K (VGGT-1B)
    attn.qkv    norm1(x)                     yes             1024
    attn.proj   attention output             no              1024
    mlp.fc1     norm2(x)                     yes             1024
    mlp.fc2     GELU(fc1(x))                 no              4096

"LayerNorm-fed" linears could absorb a smoothing division into the LayerNorm's affine weights
(SmoothQuant); proj and fc2 cannot, so their smoothing (and every rotation) runs online.

Blocks are grouped in scopes, listed here in execution order:

    scope           blocks                             tokens seen by a block     runs in
    patch_embed     aggregator.patch_embed.blocks[i]   [B*S, 1+R+h*w, C]          aggregator
    frame_blocks    aggregator.frame_blocks[i]         [B*S, P, C] + pos          aggregator
    global_blocks   aggregator.global_blocks[i]        [B, S*P, C] + pos          aggregator
    camera_head     camera_head.trunk[i]               [B, S, 2C] (4 iterations)  camera head

Frame and global blocks interleave (frame 0, global 0, frame 1, ...). The paper quantizes
frame_blocks + global_blocks only (DEFAULT_SCOPES: 24 + 24 blocks x 4 = 192 linears of
VGGT-1B, 48% of its parameters); patch_embed and camera_head are optional extras for
whole-model memory savings. The DPT heads' convolutions are never quantized here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # execution order in a Block
LAYERNORM_FED = {"attn.qkv": "norm1", "mlp.fc1": "norm2"}  # linear -> the LayerNorm feeding it
# Where a Block's activations can be observed (an input hook on the module): the residual
# stream entering the block (norm1's input), then the input of each linear.
SITES = {"residual": "norm1", "qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1",
         "fc2": "mlp.fc2"}


@dataclass(frozen=True)
class Scope:
    """One group of Blocks: where they live, which forward reaches them, their token layout."""

    name: str
    path: str  # attribute path of the nn.ModuleList / nn.Sequential of Blocks
    runs_in: str  # "aggregator" or "camera_head": the smallest forward that calls them
    layout: str  # token layout, for docs and reports


SCOPES = {
    scope.name: scope
    for scope in (
        Scope("patch_embed", "aggregator.patch_embed.blocks", "aggregator", "[B*S, 1+R+h*w, C]"),
        Scope("frame_blocks", "aggregator.frame_blocks", "aggregator", "[B*S, P, C]"),
        Scope("global_blocks", "aggregator.global_blocks", "aggregator", "[B, S*P, C]"),
        Scope("camera_head", "camera_head.trunk", "camera_head", "[B, S, 2C]"),
    )
}
DEFAULT_SCOPES = ("frame_blocks", "global_blocks")
# Chains: blocks that feed each other directly (up to a reshape between the frame layout
# [S, P, C] and the global layout [1, S*P, C]); calibration propagates block by block in a chain.
CHAINS = (("patch_embed",), ("frame_blocks", "global_blocks"), ("camera_head",))


def check_scopes(scopes) -> tuple[str, ...]:
    """scopes as a tuple of known, distinct scope names (a single string is one scope)."""
    if isinstance(scopes, str):
        scopes = (scopes,)
    scopes = tuple(scopes)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; choose from {tuple(SCOPES)}")
    if not scopes:
        raise ValueError(f"scopes is empty; choose from {tuple(SCOPES)}")
    if len(set(scopes)) != len(scopes):
        raise ValueError(f"scopes {scopes} repeat a scope")
    return scopes


def _get(model: nn.Module, path: str) -> nn.Module | None:
    for attr in path.split("."):
        model = getattr(model, attr, None)
        if model is None:
            return None
    return model


def target_blocks(model: nn.Module, scopes=DEFAULT_SCOPES) -> list[tuple[str, Scope, nn.Module]]:
    """(name, scope, block) of every Block in ``scopes``, in execution order (see the table)."""
    scopes = check_scopes(scopes)
    blocks = {}
    for name in scopes:
        scope = SCOPES[name]
        container = _get(model, scope.path)
        if container is None:
            raise ValueError(f"scope {name!r}: the model has no {scope.path} (head disabled?)")
        blocks[name] = [(f"{scope.path}.{i}", scope, block) for i, block in enumerate(container)]
    ordered = blocks.get("patch_embed", [])
    frames, globals_ = blocks.get("frame_blocks", []), blocks.get("global_blocks", [])
    for i in range(max(len(frames), len(globals_))):
        ordered += frames[i : i + 1] + globals_[i : i + 1]
    return ordered + blocks.get("camera_head", [])


def block_chains(model: nn.Module, scopes=DEFAULT_SCOPES) -> list[list[tuple]]:
    """For every chain touching ``scopes``: all its blocks (targeted or not) in execution order."""
    scopes = check_scopes(scopes)
    return [target_blocks(model, chain) for chain in CHAINS if set(chain) & set(scopes)]


def quantizable_linears(model: nn.Module, scopes=DEFAULT_SCOPES) -> dict[str, nn.Module]:
    """{full module name: linear} of every target linear, in execution order.

    Names are model.named_modules() names, e.g. "aggregator.frame_blocks.0.attn.qkv". The
    values are nn.Linear in a float model (QuantLinear once quantized).
    """
    return {
        f"{block_name}.{linear}": _get(block, linear)
        for block_name, _, block in target_blocks(model, scopes)
        for linear in BLOCK_LINEARS
    }


def is_layernorm_fed(name: str) -> bool:
    """True for qkv and fc1 (their input is a LayerNorm output), False for proj and fc2."""
    return any(name.endswith("." + linear) for linear in LAYERNORM_FED)

