"""deploy(model): every QuantLinear becomes its exact integer twin, following a typed DeployPlan per layer.

Offline, into the integer weights: codes = Q_w((W R) * s) / s_w (the layer's own quantizer,
LWC included). Online, into the activation kernel: the signs v (pre-scale), the FWHT, the
divisor s, the LAC clip c. A smoothing that comes before any rotation of a LayerNorm-fed layer
can instead fold into the LayerNorm (fold_smoothing=True); docs/deployment.md has the why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from qvggt_kernels import pack_int4
from torch import Tensor, nn

from ..quant.linear import QuantLinear
from ..quant.smoothing import Order
from ..quant.targets import LAYERNORM_FED
from .int_linear import Int4Linear, Int8Linear, IntLinear, IntLinearSpec


@dataclass
class DeployPlan:
    """What one deployed layer needs, read off an eval-mode QuantLinear: its bits, whether it
    runs the fused FWHT, and the fp32 vectors [K] of its activation side (None when absent)."""

    weight_bits: int
    act_bits: int
    hadamard: bool
    act_signs: Tensor | None  # the Hadamard signs v: the kernel's pre-scale
    act_divisor: Tensor | None  # s after the rotation (or without one): inside the kernel
    input_divisor: Tensor | None  # s before the rotation (smooth_then_rotate): unfused
    act_clip: float | None  # the LAC ratio c as the fp32 value the simulation multiplies by

    def spec(self, layer: QuantLinear) -> IntLinearSpec:
        return IntLinearSpec(
            layer.in_features, layer.out_features, self.weight_bits, self.act_bits,
            bias=layer.bias is not None, hadamard=self.hadamard,
            act_divisor=self.act_divisor is not None, input_divisor=self.input_divisor is not None,
            act_signs=self.act_signs is not None, act_clip=self.act_clip)


def integer_weight(layer: QuantLinear) -> tuple[Tensor, Tensor]:
    """(int8 codes [N, K], fp32 per-output-channel scales [N]) of a QuantLinear's weight.

    The scales come from the layer's own weight quantizer applied to its transformed weight
    (W R) * s, i.e. the very function the simulation used (clip included), and the codes are
    round(quantized_weight / scale). Raises unless codes * scale reproduces the cached
    quantized_weight exactly (e.g. a GPTQ weight whose scales were taken elsewhere).
    """
    quantizer = layer.weight_quantizer
    with torch.no_grad():
        weight_hat = layer.compute_quantized_weight() if layer.training else layer.quantized_weight
        scale, zero_point = quantizer.qparams(layer.transformed_weight().detach())  # [N, 1]
        scale, weight_hat = scale.detach().float(), weight_hat.detach().float()
        codes = torch.round(weight_hat / scale)
    spec = quantizer.spec
    lo, hi = int(codes.min()), int(codes.max())
    if lo < spec.qmin or hi > spec.qmax:
        raise ValueError(f"weight codes in [{lo}, {hi}] leave the {spec.bits}-bit range "
                         f"[{spec.qmin}, {spec.qmax}]")
    if not torch.equal(codes * scale, weight_hat) or bool((zero_point != 0).any()):
        raise ValueError("the quantized weight is not codes * scale on the quantizer's grid "
                         "(GPTQ with dead input channels, or a hand-set weight?); cannot deploy "
                         "it exactly")
    return codes.to(torch.int8).contiguous(), scale[:, 0].contiguous()


def plan_layer(layer: QuantLinear, smoothing_folded: bool = False) -> DeployPlan:
    """The DeployPlan of ``layer``, after checking that the kernels can run it exactly."""
    if not isinstance(layer, QuantLinear):
        raise TypeError(f"expected a QuantLinear, got {type(layer).__name__}")
    wq, aq = layer.weight_quantizer, layer.act_quantizer
    if wq is None or aq is None:
        raise ValueError("deployment needs quantized weights *and* activations (the kernels are "
                         "W4A4/W8A8 GEMMs); a float side (w16 / a16) has no integer kernel here")
    if wq.spec.granularity != "per_channel" or not wq.spec.symmetric:
        raise NotImplementedError(
            f"the GEMMs take symmetric per-output-channel weight scales, got {wq.spec}")
    if aq.spec.granularity != "per_token" or not aq.spec.symmetric or not aq.spec.dynamic:
        raise NotImplementedError(f"the activation kernel is dynamic symmetric per-token, got {aq.spec}")
    rotation, smooth = layer.rotation, layer.smooth
    if rotation is not None and rotation.dense_hadamard is not None:
        raise NotImplementedError(f"K={layer.in_features} is not a power of two: the fused FWHT "
                                  "cannot apply its block-diagonal Hadamard")
    s = None if smooth is None else smooth.detach().float()
    if s is not None and not bool((torch.isfinite(s) & (s != 0)).all()):
        bad = int((~(torch.isfinite(s) & (s != 0))).sum())
        raise ValueError(
            f"{bad} smoothing factor(s) of this layer are zero, NaN or Inf; every activation row "
            "would come out NaN. Re-run the calibration on finite images (a NaN image poisons "
            "the activation maxima) or check the saved model")
    if smoothing_folded and not _smoothing_precedes_rotation(layer):
        raise ValueError("smoothing_folded: only a smoothing applied before any rotation can live "
                         "in the preceding LayerNorm")
    act_divisor = input_divisor = None
    if rotation is None:
        act_divisor = None if smoothing_folded else s
    elif layer.order is Order.ROTATE_THEN_SMOOTH:
        act_divisor = s  # fwht(x * v) / s: signs as the kernel's pre-scale, then divide
    else:  # smooth_then_rotate: x / s first (unfused, or folded), then fwht(. * v)
        input_divisor = None if smoothing_folded else s
    act_clip = None
    if aq.clip is not None:
        with torch.no_grad():
            act_clip = float(aq.clip().float())
    return DeployPlan(wq.spec.bits, aq.spec.bits, rotation is not None,
                      None if rotation is None else rotation.signs.detach().float(),
                      act_divisor, input_divisor, act_clip)


def from_quant_linear(layer: QuantLinear, backend: str = "auto",
                      smoothing_folded: bool = False) -> IntLinear:
    """The deployed twin of ``layer``: Int4Linear for <= 4-bit weights, Int8Linear otherwise.

    smoothing_folded: the layer's smoothing (applied before any rotation) was folded into the
    preceding LayerNorm (fold_smoothing_into_norms), so the deployed layer does not divide.
    """
    if layer.weight_quantizer is None:
        raise ValueError("deployment needs a weight quantizer (got a float weight)")
    cls = Int4Linear if layer.weight_quantizer.spec.bits <= 4 else Int8Linear
    plan = plan_layer(layer, smoothing_folded)
    codes, scale = integer_weight(layer)
    out = cls(plan.spec(layer), backend=backend, device=codes.device)
    with torch.no_grad():
        out.weight.copy_(pack_int4(codes, backend="torch") if cls.packed else codes)
        out.weight_scale.copy_(scale)
        if layer.bias is not None:
            out.bias.copy_(layer.bias.detach().float())
        for name in ("act_signs", "act_divisor", "input_divisor"):
            if getattr(plan, name) is not None:
                getattr(out, name).copy_(getattr(plan, name))
    return out


def _smoothing_precedes_rotation(layer: QuantLinear) -> bool:
    return layer.smooth is not None and (
        layer.rotation is None or layer.order is Order.SMOOTH_THEN_ROTATE)


@torch.no_grad()
def fold_smoothing_into_norms(model: nn.Module) -> set[str]:
    """SmoothQuant's fold, in place: gamma / s and beta / s for every LayerNorm-fed QuantLinear
    (attn.qkv <- norm1, mlp.fc1 <- norm2) whose smoothing comes before any rotation.

    Returns the names of the layers whose smoothing now lives in their LayerNorm. Layers with a
    rotation before the smoothing (DSFQ) are skipped: (y R) / s is y times a dense K x K matrix,
    not a per-channel scale a LayerNorm could absorb.
    """
    folded = set()
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantLinear) or not _smoothing_precedes_rotation(layer):
            continue
        for linear, norm_name in LAYERNORM_FED.items():
            if not name.endswith("." + linear):
                continue
            block = model.get_submodule(name[: -len(linear) - 1])
            norm = getattr(block, norm_name, None)
            if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None:
                continue  # no affine LayerNorm to absorb s: the division stays online
            s = layer.smooth.detach().to(norm.weight)
            norm.weight.div_(s)
            norm.bias.div_(s)
            folded.add(name)
    return folded


def deploy(model: nn.Module, backend: str = "auto", fold_smoothing: bool = False) -> nn.Module:
    """A copy of ``model`` (left untouched) with every QuantLinear replaced by its deployed twin.

    backend: the kernels' backend ("auto": Triton on CUDA, torch reference on CPU).
    fold_smoothing: fold pre-rotation smoothing of LayerNorm-fed layers into the LayerNorm
        (SmoothQuant-style models, and the smooth_then_rotate ablation); DSFQ's post-rotation
        smoothing always stays online in the activation kernel.
    The copy is in eval mode (which also refreshes a QuantLinear left in train mode).
    """
    deployed = copy.deepcopy(model).eval()
    folded = fold_smoothing_into_norms(deployed) if fold_smoothing else set()
    names = [n for n, m in deployed.named_modules() if isinstance(m, QuantLinear)]
    if not names:
        raise ValueError("the model has no QuantLinear layers: quantize it first "
                         "(qvggt_lib.quant.quantize)")
    for name in names:
        layer = deployed.get_submodule(name)
        deployed.set_submodule(name, from_quant_linear(layer, backend, name in folded))
    deployed.eval()
    return deployed


def deployed_layers(model: nn.Module) -> dict[str, IntLinear]:
    """{name: Int4Linear / Int8Linear} of a deployed model, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, IntLinear)}
