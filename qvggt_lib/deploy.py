r"""Deployment: from simulated QuantLinear layers to real integer kernels (W4A4, W4A8, W8A8).

A QuantLinear (quant/linear.py) *simulates* quantization in floating point:

    y = Q_a((x R) / s) Q_w((W R) * s)^T + b,      R = diag(v) H  (random Hadamard, signs
                                                  first: x R = fwht(x * v), quant/hadamard.py)

``deploy(model)`` returns a copy in which every QuantLinear is an ``Int4Linear`` (weights of
at most 4 bits, packed two per byte) or an ``Int8Linear`` (5 to 8 bits, one int8 per weight)
that runs ``qvggt_kernels``:

    q_x, s_x = quantize_per_token(x, act_bits, hadamard, smooth=s, clip=c, pre_scale=v)
    y = w4a4_matmul(q_x, s_x, W_packed, s_w, b)        (or w8a8_matmul)      # int32 accumulate

The first line is one fused pass: fwht(x * v) / s, per-token max, clip, rounding.

What goes where
---------------
* Offline, into the integer weights (always): the rotation's weight side W R and the
  smoothing * s, then the quantizer's own rounding, codes = Q_w((W R) * s) / s_w with s_w the
  per-output-channel scale (LWC clip included).
* Online, fused into the activation-quantization kernel: the Hadamard signs v as the kernel's
  pre-scale (buffer act_signs, multiplied on load, exact since v = +-1), the FWHT, the
  smoothing divisor s (buffer act_divisor), the per-token max, the LAC clip ratio c, rounding
  to codes. The signs come *before* the FWHT, so they cannot be merged into the divisor any
  more (fwht(x * v) / s is not fwht(x) / d for any d); that merge was only valid for the
  signs-after order fwht(x) * v, which is a no-op for symmetric quantization.
* GEMM epilogue: acc * s_x * s_w + b in fp32, stored in the input's dtype.

Possible optimization (not done: one code path, exact everywhere): where the input of a layer
is produced by something that commutes with a per-channel sign flip, v can leave the kernel.
For attn.qkv (after norm1) and mlp.fc1 (after norm2), LN(x) * v = norm(x) * (gamma * v) +
beta * v, so the signs fold into the LayerNorm affine (bit-exact: a sign flip is exact, and
these LayerNorms feed only that linear). For attn.proj, the attention output is P V per head
and (P V) * v = P (V * v), so v folds into the value rows of the qkv weight and bias (exact
too: symmetric per-output-channel weight quantization commutes with flipping a row's sign).
mlp.fc2 reads GELU(fc1(x)), and GELU does not commute with a sign flip, so its signs stay
online. The kernel then drops one fp32 [K] load and one multiply per element, which is small
next to the FWHT.

Why the smoothing cannot go into the LayerNorm after a rotation
---------------------------------------------------------------
SmoothQuant divides the LayerNorm output y = LN(x) by s per channel, and a per-channel scale is
exactly what the LayerNorm's affine (gamma, beta) already applies: gamma / s, beta / s, free.
DSFQ divides *after* the rotation: (y R) / s = y diag(v) H diag(1 / s). For the LayerNorm to
absorb it, it would have to output y' with y' R = (y R) / s, i.e. y' = y R diag(1 / s) R^T =
y diag(v) H diag(1 / s) H diag(v): a dense K x K matrix, not a per-channel scale (only a constant
s commutes with H). So the division stays online, where it is one division per element
inside the kernel that already holds the row: cheap, but not free, and not "fused into the
preceding LayerNorm" as the paper says. (The signs v alone, unlike s, *would* fold: see
"Possible optimization" above.) When the smoothing comes *before* any rotation (no rotation:
SmoothQuant; or the ablation order smooth_then_rotate), the fold is valid, and
``deploy(model, fold_smoothing=True)`` does it for the LayerNorm-fed layers (attn.qkv after
norm1, mlp.fc1 after norm2; proj and fc2 are fed by attention and GELU, so their s stays
online: fused when it follows the rotation, a separate division before the kernel for
smooth_then_rotate).

W4A8
----
The int4 GEMM unpacks nibbles to int8 and multiplies with int8 tensor cores, so any int8
activation codes give the exact product: W4A8 is ``Int4Linear`` with ``act_bits=8`` (the int32
accumulator is exact for K * 8 * 128 < 2^31). Likewise W8A4, W6A6 (Int8Linear, 6-bit codes).

Exactness vs the simulation
---------------------------
With the torch backend, the activation codes are computed with the same fp32 operations as the
simulation (same FWHT, same division, same max, same clip product, same rounding), so given
the same input a deployed layer produces *identical* codes and scales; the integer weight codes
times s_w reproduce the simulated ``quantized_weight`` bit for bit (``from_quant_linear``
checks it). The only difference is the GEMM: the simulation sums fp32 products
(q_x s_x)(q_w s_w) in BLAS order, the kernel sums exact integers and scales once, so outputs
differ at fp32 rounding (~1e-7 relative per layer); downstream, an activation that lands
within that rounding of a .5 rounding tie may flip by one code. The Triton FWHT also sums in
another order than the torch butterflies (tests/kernels/test_kernel_act_quant.py), with the
same consequence. Measured by tests/test_deploy.py (tiny VGGT with 2 frame + 2 global blocks,
random weights, DSFQ with perturbed s / LWC / LAC, CPU, torch backend): depth, pose_enc and
world_points agree to <= 4.2e-7 relative (max abs <= 1.2e-7) for W4A4 and W8A8; 0 (W4A4) and
3 (W8A8) of 494,592 activation codes differ between the two chains, by one step. Deeper
models flip more codes and the flips compound: on the trained tiny model (6 + 6 blocks) at W4A4,
12,462 of 2,967,552 activation codes differ (from global_blocks.1.attn.qkv on), and depth,
world_points and pose_enc differ by 2e-4, 6e-4 and 7e-4 relative. That is still far below the
quantization error itself, and every single layer still agrees to ~1e-7 (notebook 06).

Limits: symmetric per-output-channel weights and dynamic symmetric per-token activations (the
paper's setting; per-group weights or static activations raise), power-of-two K when the layer
rotates (the FWHT kernel), even K for int4 packing.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import ClassVar

import torch
from qvggt_kernels import pack_int4, quantize_per_token, w4a4_matmul, w8a8_matmul
from safetensors.torch import save_file
from torch import Tensor, nn

from .model import VGGT, VGGTConfig
from .model.checkpoint import CheckpointError, check_digest, read_state_dict, with_digest
from .quant.hadamard import is_power_of_two
from .quant.linear import QuantLinear
from .quant.targets import LAYERNORM_FED, set_submodule

FORMAT = "qvggt-deployed"
FORMAT_VERSION = "2"  # 2: act_signs (pre-scale) buffer, act_divisor = s
# version 1 files (no act_signs, act_divisor = s * v) hold the older signs-after rotation
# H diag(v) consistently in their weights and divisors, so they still load and run exactly
READABLE_VERSIONS = ("1", "2")
_FP32_BUFFERS = ("weight_scale", "bias", "act_signs", "act_divisor", "input_divisor")


class _IntLinear(nn.Module):
    """Shared body of Int4Linear / Int8Linear; see the module docstring.

    Buffers: weight (int codes: uint8 [N, K/2] packed or int8 [N, K]), weight_scale fp32 [N],
    bias fp32 [N] or None, act_signs fp32 [K] or None (the Hadamard signs v, the kernel's
    pre-scale: multiplies the row on load, before the FWHT), act_divisor fp32 [K] or None (the
    smoothing s, divides the rotated row inside the quantization kernel), input_divisor fp32
    [K] or None (smoothing applied *before* the rotation, order smooth_then_rotate, when it was
    not folded into a LayerNorm: an unfused division). Attributes: hadamard (fused online
    FWHT), act_clip (LAC ratio c or None), weight_bits, act_bits, backend.
    The fp32 buffers stay fp32 when the model is cast (model.bfloat16()): only their device follows.
    """

    packed: ClassVar[bool]
    max_weight_bits: ClassVar[int]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight_bits: int,
        act_bits: int,
        bias: bool = True,
        hadamard: bool = False,
        act_divisor: bool = False,
        input_divisor: bool = False,
        act_signs: bool = False,
        act_clip: float | None = None,
        backend: str = "auto",
        device=None,
    ):
        super().__init__()
        if not 2 <= weight_bits <= self.max_weight_bits:
            raise ValueError(
                f"{type(self).__name__} stores 2..{self.max_weight_bits}-bit weights, "
                f"got {weight_bits}"
            )
        if not 2 <= act_bits <= 8:
            raise ValueError(f"act_bits must be in 2..8 (int8 codes), got {act_bits}")
        if self.packed and in_features % 2:
            raise ValueError(f"int4 packing needs an even in_features, got {in_features}")
        if hadamard and not is_power_of_two(in_features):
            raise ValueError(f"the fused FWHT needs a power-of-two in_features, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.hadamard = bool(hadamard)
        self.act_clip = None if act_clip is None else float(act_clip)
        self.backend = backend
        shape = (out_features, in_features // 2) if self.packed else (out_features, in_features)
        dtype = torch.uint8 if self.packed else torch.int8
        fp32 = {"dtype": torch.float32, "device": device}
        self.register_buffer("weight", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, **fp32))
        self.register_buffer("bias", torch.zeros(out_features, **fp32) if bias else None)
        self.register_buffer(
            "act_divisor", torch.ones(in_features, **fp32) if act_divisor else None
        )
        self.register_buffer(
            "input_divisor", torch.ones(in_features, **fp32) if input_divisor else None
        )
        self.register_buffer("act_signs", torch.ones(in_features, **fp32) if act_signs else None)

    # ---------------------------------------------------------------- conversion
    @classmethod
    def from_quant_linear(
        cls, layer: QuantLinear, backend: str = "auto", smoothing_folded: bool = False
    ) -> _IntLinear:
        """Exact conversion of an eval-mode QuantLinear (see from_quant_linear())."""
        plan = _check_convertible(layer, smoothing_folded)
        codes, scale = integer_weight(layer)
        out = cls(
            layer.in_features,
            layer.out_features,
            plan["weight_bits"],
            plan["act_bits"],
            bias=layer.bias is not None,
            hadamard=plan["hadamard"],
            act_divisor=plan["act_divisor"] is not None,
            input_divisor=plan["input_divisor"] is not None,
            act_signs=plan["act_signs"] is not None,
            act_clip=plan["act_clip"],
            backend=backend,
            device=codes.device,
        )
        with torch.no_grad():
            out.weight.copy_(pack_int4(codes, backend="torch") if cls.packed else codes)
            out.weight_scale.copy_(scale)
            if layer.bias is not None:
                out.bias.copy_(layer.bias.detach().float())
            for name in ("act_signs", "act_divisor", "input_divisor"):
                if plan[name] is not None:
                    getattr(out, name).copy_(plan[name])
        return out

    # ---------------------------------------------------------------- run time
    def quantize_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [..., K] -> (int8 codes [M, K], fp32 scales [M]): the whole activation side."""
        x = x.reshape(-1, self.in_features)
        if self.input_divisor is not None:
            x = x / self.input_divisor.to(x.dtype)  # as the simulation: x / s before R
        return quantize_per_token(
            x.contiguous(),
            self.act_bits,
            self.hadamard,
            self.act_divisor,
            self.act_clip,
            backend=self.backend,
            pre_scale=self.act_signs,  # fwht(x * v) / s: the signs first, on load
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected [..., {self.in_features}] inputs, got {list(x.shape)}")
        q, scale = self.quantize_input(x)  # [M, K] int8, [M] fp32
        gemm = w4a4_matmul if self.packed else w8a8_matmul
        y = gemm(
            q,
            scale,
            self.weight,
            self.weight_scale,
            self.bias,
            out_dtype=x.dtype,
            backend=self.backend,
        )  # [M, N]
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):
        saved = {n: self._buffers[n] for n in _FP32_BUFFERS if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for name, old in saved.items():
            new = self._buffers[name]
            if new.dtype != torch.float32:  # a dtype cast: keep full precision, follow the device
                self._buffers[name] = old.to(new.device)
        return self

    # ---------------------------------------------------------------- (de)serialization
    def layer_config(self) -> dict:
        """JSON-ready description from which load_deployed rebuilds an empty skeleton."""
        return {
            "type": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "bias": self.bias is not None,
            "hadamard": self.hadamard,
            "act_divisor": self.act_divisor is not None,
            "input_divisor": self.input_divisor is not None,
            "act_signs": self.act_signs is not None,
            "act_clip": self.act_clip,  # a Python float: JSON round-trips it exactly
        }

    @classmethod
    def from_layer_config(cls, config: dict, backend: str = "auto", device=None) -> _IntLinear:
        options = {k: v for k, v in config.items() if k != "type"}
        return cls(**options, backend=backend, device=device)

    def dequantized_weight(self) -> Tensor:
        """codes * s_w [N, K] fp32: equals the simulated QuantLinear's quantized_weight."""
        codes = _unpack(self.weight) if self.packed else self.weight
        return codes.float() * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"w{self.weight_bits}a{self.act_bits}, hadamard={self.hadamard}, "
            f"act_signs={self.act_signs is not None}, "
            f"act_divisor={self.act_divisor is not None}, "
            f"input_divisor={self.input_divisor is not None}, act_clip={self.act_clip}, "
            f"backend={self.backend!r}"
        )


class Int4Linear(_IntLinear):
    """W4A4 (or W4A8, ...): int4 weight codes packed two per byte [N, K/2], int4 GEMM."""

    packed = True
    max_weight_bits = 4


class Int8Linear(_IntLinear):
    """W8A8 (or W6A6, W8A4, ...): int8 weight codes [N, K], int8 GEMM."""

    packed = False
    max_weight_bits = 8


LAYER_TYPES = {cls.__name__: cls for cls in (Int4Linear, Int8Linear)}


def _unpack(packed: Tensor) -> Tensor:
    from qvggt_kernels import unpack_int4

    return unpack_int4(packed, backend="torch")


# ------------------------------------------------------------------------------ conversion


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
        raise ValueError(
            f"weight codes in [{lo}, {hi}] leave the {spec.bits}-bit range "
            f"[{spec.qmin}, {spec.qmax}]"
        )
    if not torch.equal(codes * scale, weight_hat) or bool((zero_point != 0).any()):
        raise ValueError(
            "the quantized weight is not codes * scale on the quantizer's grid "
            "(GPTQ with dead input channels, or a hand-set weight?); cannot deploy "
            "it exactly"
        )
    return codes.to(torch.int8).contiguous(), scale[:, 0].contiguous()


def _check_convertible(layer: QuantLinear, smoothing_folded: bool) -> dict:
    """What the deployed layer needs, after checking that the kernels can run it exactly."""
    if not isinstance(layer, QuantLinear):
        raise TypeError(f"expected a QuantLinear, got {type(layer).__name__}")
    wq, aq = layer.weight_quantizer, layer.act_quantizer
    if wq is None or aq is None:
        raise ValueError(
            "deployment needs quantized weights *and* activations (the kernels are "
            "W4A4/W8A8 GEMMs); a float side (w16 / a16) has no integer kernel here"
        )
    if wq.spec.granularity != "per_channel" or not wq.spec.symmetric:
        raise NotImplementedError(
            f"the GEMMs take symmetric per-output-channel weight scales, got {wq.spec}"
        )
    if aq.spec.granularity != "per_token" or not aq.spec.symmetric or not aq.spec.dynamic:
        raise NotImplementedError(
            f"the activation kernel is dynamic symmetric per-token, got {aq.spec}"
        )
    rotation, smooth = layer.rotation, layer.smooth
    if rotation is not None and rotation.dense_hadamard is not None:
        raise NotImplementedError(
            f"K={layer.in_features} is not a power of two: the fused FWHT "
            "cannot apply its block-diagonal Hadamard"
        )
    signs = None if rotation is None else rotation.signs.detach().float()
    s = None if smooth is None else smooth.detach().float()
    usable = None if s is None else torch.isfinite(s) & (s != 0)
    if usable is not None and not bool(usable.all()):
        bad = int((~usable).sum())
        raise ValueError(
            f"{bad} smoothing factor(s) of this layer are zero, NaN or Inf; every activation row "
            "would come out NaN. Re-run the calibration on finite images (a NaN image poisons "
            "the activation maxima) or check the saved model"
        )
    smooth_first = rotation is None or layer.order == "smooth_then_rotate"
    if smoothing_folded and not (smooth_first and s is not None):
        raise ValueError(
            "smoothing_folded: only a smoothing applied before any rotation can live "
            "in the preceding LayerNorm"
        )
    act_divisor = input_divisor = None
    if rotation is None:
        act_divisor = None if smoothing_folded else s
    elif layer.order == "rotate_then_smooth":
        act_divisor = s  # fwht(x * v) / s: signs as the kernel's pre-scale, then divide
    else:  # smooth_then_rotate: x / s first (unfused, or folded), then fwht(. * v)
        input_divisor = None if smoothing_folded else s
    act_clip = None
    if aq.clip is not None:
        with torch.no_grad():
            act_clip = float(aq.clip().float())  # the fp32 value the simulation multiplies by
    return {
        "weight_bits": wq.spec.bits,
        "act_bits": aq.spec.bits,
        "hadamard": rotation is not None,
        "act_divisor": act_divisor,
        "input_divisor": input_divisor,
        "act_signs": signs,
        "act_clip": act_clip,
    }


def from_quant_linear(
    layer: QuantLinear, backend: str = "auto", smoothing_folded: bool = False
) -> _IntLinear:
    """The deployed twin of ``layer``: Int4Linear for <= 4-bit weights, Int8Linear otherwise.

    smoothing_folded: the layer's smoothing (applied before any rotation) was folded into the
    preceding LayerNorm (fold_smoothing_into_norms), so the deployed layer does not divide.
    """
    if layer.weight_quantizer is None:
        raise ValueError("deployment needs a weight quantizer (got a float weight)")
    cls = Int4Linear if layer.weight_quantizer.spec.bits <= 4 else Int8Linear
    return cls.from_quant_linear(layer, backend, smoothing_folded)


def _smoothing_precedes_rotation(layer: QuantLinear) -> bool:
    return layer.smooth is not None and (
        layer.rotation is None or layer.order == "smooth_then_rotate"
    )


@torch.no_grad()
def fold_smoothing_into_norms(model: nn.Module) -> set[str]:
    """SmoothQuant's fold, in place: gamma / s and beta / s for every LayerNorm-fed QuantLinear
    (attn.qkv <- norm1, mlp.fc1 <- norm2) whose smoothing comes before any rotation.

    Returns the names of the layers whose smoothing now lives in their LayerNorm. Layers with a
    rotation before the smoothing (DSFQ) are skipped: see the module docstring for why.
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
        raise ValueError(
            "the model has no QuantLinear layers: quantize it first "
            "(qvggt_lib.quant.quantize_model)"
        )
    for name in names:
        layer = deployed.get_submodule(name)
        set_submodule(deployed, name, from_quant_linear(layer, backend, name in folded))
    deployed.eval()
    return deployed


def deployed_layers(model: nn.Module) -> dict[str, _IntLinear]:
    """{name: Int4Linear / Int8Linear} of a deployed model, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _IntLinear)}


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every deployed layer's kernel backend ("auto", "triton", "torch"), in place."""
    for layer in deployed_layers(model).values():
        layer.backend = backend
    return model


# ------------------------------------------------------------------------------ files


def _jsonable(config) -> dict | None:
    if config is None or not is_dataclass(config):
        return None
    return {"type": type(config).__name__, "fields": asdict(config)}


def save_deployed(model: nn.Module, path) -> Path:
    """Write a deploy()-ed VGGT to ``path`` (.safetensors): its whole state dict, and metadata

    format, format_version   "qvggt-deployed", FORMAT_VERSION
    config                   the VGGTConfig as JSON
    layers                   {name: layer_config()} of every deployed layer
    quant_config             the quantization config it came from (informational) or null
    """
    layers = deployed_layers(model)
    if not layers:
        raise ValueError("the model has no deployed layers: call deploy(model) first")
    if not isinstance(getattr(model, "config", None), VGGTConfig):
        raise TypeError("save_deployed writes VGGT models (model.config is a VGGTConfig)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "layers": json.dumps({name: layer.layer_config() for name, layer in layers.items()}),
        "quant_config": json.dumps(_jsonable(getattr(model, "quant_config", None))),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=with_digest(metadata))
    return path


def load_deployed(path, device=None, backend: str = "auto") -> VGGT:
    """Rebuild a model written by save_deployed (strict load, bit-exact); eval mode."""
    state, metadata = read_state_dict(path)
    check_digest(path, metadata)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a deployed checkpoint (format "
            f"{metadata.get('format')!r}); load_any reads every kind"
        )
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {metadata.get('format_version')!r}; "
            f"this library reads versions {', '.join(READABLE_VERSIONS)}"
        )
    model = VGGT(VGGTConfig.from_dict(json.loads(metadata["config"]))).eval()
    for name, config in json.loads(metadata["layers"]).items():
        if config.get("type") not in LAYER_TYPES:
            raise CheckpointError(f"{path}: unknown layer type {config.get('type')!r} at {name}")
        set_submodule(model, name, LAYER_TYPES[config["type"]].from_layer_config(config, backend))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit its own layer table: {exc}") from exc
    model.quant_config_dict = json.loads(metadata.get("quant_config", "null"))
    model.eval()
    return model.to(device) if device is not None else model


def linear_storage_bytes(
    in_features: int,
    out_features: int,
    weight_bits: int,
    bias: bool = True,
    act_divisor: bool = True,
    act_signs: bool = True,
) -> int:
    """Bytes of one deployed layer's state: codes (4-bit: K/2 bytes per row; 5..8-bit: K),
    fp32 weight scales [N], fp32 bias [N], fp32 activation divisor [K] (s, when the layer
    smooths), fp32 Hadamard signs [K] (v, the kernel's pre-scale, when it rotates). The
    defaults describe DSFQ (both). memory.py counts models with it; tests check it against
    real deployed modules."""
    codes = out_features * (math.ceil(in_features / 2) if weight_bits <= 4 else in_features)
    return (
        codes
        + 4 * out_features
        + (4 * out_features if bias else 0)
        + (4 * in_features if act_divisor else 0)
        + (4 * in_features if act_signs else 0)
    )
