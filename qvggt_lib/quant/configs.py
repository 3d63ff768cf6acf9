"""Quantization configs: bit parsing, one frozen dataclass per method, the Table 4 ablations.

    method        config             weights           per layer          calibration needs
    rtn           RTNConfig          round to nearest  -                  nothing
    smoothquant   SmoothQuantConfig  RTN               x / s              act max (FP model)
    gptq          GPTQConfig         GPTQ              -                  Hessians
    quarot        QuaRotConfig       GPTQ (or RTN)     x R                Hessians of x R
    quantvggt     QuantVGGTConfig    RTN + LWC         (x R) / s, LAC     act max, block recon.
                                     (or GPTQ + LWC)                      (+ Hessians)

A config fully determines a quantized model: its layer_plan says, per target linear, whether it
rotates (R of target layer i is RandomHadamard(K, layer_seed(seed, i))), smooths and learns clip
factors, so serialization.py rebuilds a model's skeleton from the config alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar, NamedTuple

from .quantizer import CLIP_INIT_LOGIT, NO_CLIP_LOGIT, QuantSpec
from .smoothing import Order
from .targets import DEFAULT_SCOPES, check_scopes, is_layernorm_fed

BITS = ("w8a8", "w6a6", "w4a8", "w4a4")  # the paper's settings; any "wXaY" with X, Y in 2..8 works
FLOAT_BITS = 16  # "w16a16" (or w16aY / wXa16) keeps that side in float: an exactness check
INPUT_FROM = ("fp", "quantized")  # where block reconstruction takes a block's inputs from
WEIGHT_ROUNDINGS = ("rtn", "gptq")  # how QuantVGGT rounds its weights after block reconstruction
DEFAULT_EPOCHS = 3  # the paper: 15; measured against 8 and 15 in QuantVGGTConfig's docstring


def parse_bits(bits: str) -> tuple[int, int]:
    """"w4a8" -> (4, 8): weight and activation bits, each 2..8 or 16 (= not quantized)."""
    match = re.fullmatch(r"w(\d+)a(\d+)", bits) if isinstance(bits, str) else None
    valid = match and all(2 <= int(b) <= 8 or int(b) == FLOAT_BITS for b in match.groups())
    if not valid:
        raise ValueError(f"unknown bits {bits!r}; use one of {BITS} (or 'wXaY' with X, Y in 2..8, "
                         f"16 = float)")
    return int(match.group(1)), int(match.group(2))


class LayerPlan(NamedTuple):
    """How one linear is built: enough to rebuild its skeleton when loading a checkpoint."""

    index: int  # position in execution order among the config's target linears
    rotate: bool
    smooth: bool
    learnable_weight_clip: bool
    learnable_act_clip: bool
    order: Order


@dataclass(frozen=True)
class QuantConfig:
    """Fields shared by every method.

    Args:
        bits: "w8a8", "w6a6", "w4a8" or "w4a4" (weight / activation bits).
        scopes: which blocks (targets.SCOPES); default the aggregator's frame and global blocks.
        seed: seeds every random Hadamard (and the calibration shuffles).
        weight_group_size: None = one scale per output channel (the paper); g = one scale per
            run of g input channels (must divide every target layer's K).
    """

    bits: str = "w4a4"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    seed: int = 0
    weight_group_size: int | None = None

    method: ClassVar[str] = ""

    def __post_init__(self):
        parse_bits(self.bits)
        object.__setattr__(self, "scopes", check_scopes(self.scopes))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        group = self.weight_group_size
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 1):
            raise ValueError(f"weight_group_size must be None or a positive integer, got {group!r}")

    @property
    def weight_bits(self) -> int:
        return parse_bits(self.bits)[0]

    @property
    def act_bits(self) -> int:
        return parse_bits(self.bits)[1]

    def weight_spec(self) -> QuantSpec | None:
        if self.weight_bits == FLOAT_BITS:
            return None
        if self.weight_group_size is None:
            return QuantSpec(self.weight_bits, "per_channel")
        return QuantSpec(self.weight_bits, "per_group", group_size=self.weight_group_size)

    def act_spec(self) -> QuantSpec | None:
        return None if self.act_bits == FLOAT_BITS else QuantSpec(self.act_bits, "per_token")

    @property
    def needs_calibration(self) -> bool:
        return False

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, False, False, False, False, Order.ROTATE_THEN_SMOOTH)


@dataclass(frozen=True)
class RTNConfig(QuantConfig):
    """Round-to-nearest weights and activations, nothing else (the paper's RTN row)."""

    method: ClassVar[str] = "rtn"


@dataclass(frozen=True)
class SmoothQuantConfig(QuantConfig):
    """SmoothQuant: x / s and W * s with s from the FP activation max, then RTN.

    Args:
        alpha: migration strength (0.5).
        smooth_layers: "layernorm_fed" (SmoothQuant: only qkv and fc1, whose s folds into the
            preceding LayerNorm) or "all" (also proj and fc2, an online division).
    """

    alpha: float = 0.5
    smooth_layers: str = "layernorm_fed"

    method: ClassVar[str] = "smoothquant"

    def __post_init__(self):
        super().__post_init__()
        _check_alpha(self.alpha)
        if self.smooth_layers not in ("layernorm_fed", "all"):
            raise ValueError(f"smooth_layers must be 'layernorm_fed' or 'all', got "
                             f"{self.smooth_layers!r}")

    @property
    def needs_calibration(self) -> bool:
        return True

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        smooth = self.smooth_layers == "all" or is_layernorm_fed(name)
        return LayerPlan(index, False, smooth, False, False, Order.ROTATE_THEN_SMOOTH)


@dataclass(frozen=True)
class GPTQConfig(QuantConfig):
    """GPTQ weights (gptq.py), RTN per-token activations.

    Args:
        percdamp: Hessian damping, a fraction of mean(diag H).
        block_size: columns per lazy-update block.
        act_order: quantize columns by decreasing H_jj.
        sequential: Hessians of block i with blocks < i already quantized (GPTQ); False takes
            every Hessian from the FP model in one pass.
    """

    percdamp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    sequential: bool = True

    method: ClassVar[str] = "gptq"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.percdamp < 1:
            raise ValueError(f"percdamp must be in [0, 1), got {self.percdamp!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                or self.block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {self.block_size!r}")

    @property
    def uses_gptq(self) -> bool:
        return self.weight_bits != FLOAT_BITS

    @property
    def needs_calibration(self) -> bool:
        return self.uses_gptq


@dataclass(frozen=True)
class QuaRotConfig(GPTQConfig):
    """A random Hadamard rotation per layer (online x R, fused W R), then GPTQ (QuaRot's default)
    or, with gptq=False, RTN. Fields as GPTQConfig."""

    gptq: bool = True

    method: ClassVar[str] = "quarot"

    @property
    def uses_gptq(self) -> bool:
        return self.gptq and self.weight_bits != FLOAT_BITS

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, True, False, False, False, Order.ROTATE_THEN_SMOOTH)


ABLATIONS = {  # Table 4 of the paper; all keep the block-wise calibration of the clip factors
    "base": {"rotate": False, "smooth": False},
    "rotation": {"rotate": True, "smooth": False},
    "smoothing": {"rotate": False, "smooth": True},
    "smooth_then_rotate": {"rotate": True, "smooth": True, "order": "smooth_then_rotate"},
    "dsfq": {"rotate": True, "smooth": True, "order": "rotate_then_smooth"},
}


@dataclass(frozen=True)
class QuantVGGTConfig(QuantConfig):
    """QuantVGGT's DSFQ: y = Q_a((x R) / s) Q_w((W R) * s)^T, then block-wise calibration.

    Args:
        alpha: smoothing strength of the initial s (0.5).
        rotate, smooth, order: the Table 4 ablation switches (see ABLATIONS and
            QuantVGGTConfig.ablation); order "rotate_then_smooth" (DSFQ) or
            "smooth_then_rotate" (only matters when both are on).
        calibrate: block-wise reconstruction of s and the clip factors (calibration.py).
        learnable_weight_clip, learnable_act_clip: LWC per output channel, LAC per layer
            (ignored for a side kept in float), initialised at sigmoid(clip_init_logit).
        epochs: passes over the calibration set per block. The paper uses 15; 3 is the default
            because more did not buy fidelity consistently on the tiny model (W4A4, 40 scenes x 8
            frames, 12 blocks, one thread of a 2-core Intel Xeon VM: 3 epochs 86 s, 8 epochs
            167 s, 15 epochs 296 s; docs/results-notes.md, section 5).
        lr_smooth, lr_clip: AdamW learning rates (paper: 5e-3, 5e-2; the code: 1e-3, 1e-2).
        input_from: "quantized" (default: block inputs from the already-calibrated quantized
            blocks, QDrop-style, as GPTQ and QuaRot take their Hessians) or "fp" (from the FP
            model, as the reference code).
        clip_init_logit: the clips start at sigmoid(clip_init_logit); the paper: 4.0 (c = 0.982)
            for every clip. None (default): by the bits of each side, 4.0 below 8 bits and
            NO_CLIP_LOGIT (c = 0.99995) at 8, where the paper's start clips more than it rounds.
        weight_rounding: "rtn" (the paper: round to nearest with the learned weight clips) or
            "gptq" (default: after each block's reconstruction, GPTQ on (W R) * s with the
            Hessian of (x R) / s and the learned clips, kept where it lowers the block's MSE).
        percdamp: GPTQ's Hessian damping (weight_rounding="gptq").

    The defaults (GPTQ rounding, inputs from the quantized blocks, clips by bits) were chosen
    from measurements on test scenes and re-checked on held-out ones (docs/results-notes.md).
    QuantVGGTConfig.paper() is the paper's recipe.
    """

    alpha: float = 0.5
    rotate: bool = True
    smooth: bool = True
    order: str = "rotate_then_smooth"
    calibrate: bool = True
    learnable_weight_clip: bool = True
    learnable_act_clip: bool = True
    epochs: int = DEFAULT_EPOCHS
    lr_smooth: float = 5e-3
    lr_clip: float = 5e-2
    input_from: str = "quantized"
    clip_init_logit: float | None = None
    weight_rounding: str = "gptq"
    percdamp: float = 0.01

    method: ClassVar[str] = "quantvggt"

    def __post_init__(self):
        super().__post_init__()
        _check_alpha(self.alpha)
        Order.check(self.order)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        for name in ("lr_smooth", "lr_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        logit = self.clip_init_logit
        if logit is not None and (isinstance(logit, bool) or not isinstance(logit, (int, float))):
            raise ValueError(f"clip_init_logit must be a number or None, got {logit!r}")
        if self.input_from not in INPUT_FROM:
            raise ValueError(f"input_from must be one of {INPUT_FROM}, got {self.input_from!r}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(f"weight_rounding must be one of {WEIGHT_ROUNDINGS}, got "
                             f"{self.weight_rounding!r}")
        if not 0 <= self.percdamp < 1:
            raise ValueError(f"percdamp must be in [0, 1), got {self.percdamp!r}")

    @classmethod
    def paper(cls, **fields_) -> QuantVGGTConfig:
        """The paper's recipe (Feng et al., 2025, Sec. 4.1, and its code): 15 epochs per block,
        clips from sigmoid(4), AdamW lr 5e-3 (s) and 5e-2 (clips), block inputs from the float
        model, weights rounded to nearest."""
        recipe = {"epochs": 15, "clip_init_logit": CLIP_INIT_LOGIT, "lr_smooth": 5e-3,
                  "lr_clip": 5e-2, "weight_rounding": "rtn", "input_from": "fp"}
        return cls(**{**recipe, **fields_})

    def clip_init_logits(self) -> tuple[float, float]:
        """(weight, activation) clip start logits: clip_init_logit, or by each side's bits."""
        if self.clip_init_logit is not None:
            return self.clip_init_logit, self.clip_init_logit
        return tuple(NO_CLIP_LOGIT if bits >= 8 else CLIP_INIT_LOGIT
                     for bits in (self.weight_bits, self.act_bits))

    @classmethod
    def ablation(cls, name: str, **fields_) -> QuantVGGTConfig:
        """The Table 4 variants: "base", "rotation", "smoothing", "smooth_then_rotate", "dsfq"."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose one of {tuple(ABLATIONS)}")
        return cls(**{**ABLATIONS[name], **fields_})

    @property
    def needs_calibration(self) -> bool:
        return self.smooth or self.calibrate

    def layer_plan(self, name: str, index: int) -> LayerPlan:
        return LayerPlan(index, self.rotate, self.smooth,
                         self.learnable_weight_clip and self.weight_bits != FLOAT_BITS,
                         self.learnable_act_clip and self.act_bits != FLOAT_BITS, Order(self.order))


def _check_alpha(alpha) -> None:
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


CONFIGS = {cls.method: cls for cls in (RTNConfig, SmoothQuantConfig, GPTQConfig, QuaRotConfig,
                                       QuantVGGTConfig)}
METHODS = tuple(CONFIGS)


def make_config(method, bits: str | None = None, **options) -> QuantConfig:
    """A config from an instance (as is, or with bits/options replaced) or a method name."""
    changes = {**options, **({} if bits is None else {"bits": bits})}
    if isinstance(method, QuantConfig):
        cls = type(method)
    elif method in CONFIGS:
        cls = CONFIGS[method]
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS} or pass a config")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    if isinstance(method, QuantConfig):
        return replace(method, **changes) if changes else method
    return cls(**changes)


def layer_seed(seed: int, index: int) -> int:
    """Hadamard seed of target layer ``index`` (execution order) under config seed ``seed``."""
    return seed * 1_000_003 + index
