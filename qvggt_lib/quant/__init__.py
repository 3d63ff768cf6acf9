"""Quantization of VGGT: building blocks, the target table, observers, block reconstruction, NFDS, and quantize().

Where each idea lives (one module each):

    quantizer.py       Q(x) = clamp(round(x / s)) s, learnable clips c = sigmoid(logit), the STE
    hadamard.py        R = diag(v) H, the random Hadamard rotation, x R = fwht(x * v)
    smoothing.py       s_j = max|x_j|^a / max|W_j|^(1-a), x' = (x R) / s, W' = (W R) * s, Order
    gptq.py            GPTQ: columnwise rounding with the Hessian H = 2/n X^T X
    linear.py          QuantLinear: y = Q_a((x R) / s) Q_w((W R) * s)^T + b
    targets.py         which linears of which blocks are quantized (the wiring table)
    observers.py       forward hooks: max|x|, max|x R|, Hessians, recorded inputs
    reconstruction.py  block-wise reconstruction of s and the clips: min ||Q_block(X) - F(X)||^2
    sampling.py        NFDS: noise score, frame-aware features, k-means, per-cluster draws
    configs.py         one frozen config per method, bit parsing, the Table 4 ablations
    api.py             quantize(model, method, bits, calibration)
    report.py          QuantReport, what quantize() did
    serialization.py   save_quantized / load_quantized / load_any
"""

from .api import quantize
from .configs import (
    ABLATIONS,
    BITS,
    METHODS,
    GPTQConfig,
    QuantConfig,
    QuantVGGTConfig,
    QuaRotConfig,
    RTNConfig,
    SmoothQuantConfig,
    make_config,
)
from .gptq import HessianAccumulator, gptq_quantize_weight
from .hadamard import (
    RandomHadamard,
    fwht,
    hadamard_block_size,
    hadamard_matrix,
    is_power_of_two,
    rotate_linear_input,
)
from .linear import QuantLinear
from .observers import AbsMaxObserver, collect_linear_statistics, record_inputs
from .quantizer import (
    LearnableClip,
    Quantizer,
    QuantSpec,
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_from_range,
    round_ste,
)
from .quantizer import quantize as quantize_tensor
from .reconstruction import calibrate_blockwise
from .report import QuantReport
from .sampling import SamplingConfig, calibration_scenes
from .serialization import load_any, load_quantized, save_quantized
from .smoothing import Order, smoothing_factors, transform_input, transform_weight
from .targets import DEFAULT_SCOPES, SCOPES, quantizable_linears

__all__ = [
    "ABLATIONS",
    "BITS",
    "DEFAULT_SCOPES",
    "METHODS",
    "SCOPES",
    "AbsMaxObserver",
    "GPTQConfig",
    "HessianAccumulator",
    "LearnableClip",
    "Order",
    "QuaRotConfig",
    "QuantConfig",
    "QuantLinear",
    "QuantReport",
    "QuantSpec",
    "QuantVGGTConfig",
    "Quantizer",
    "RTNConfig",
    "RandomHadamard",
    "SamplingConfig",
    "SmoothQuantConfig",
    "calibrate_blockwise",
    "calibration_scenes",
    "collect_linear_statistics",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "fwht",
    "gptq_quantize_weight",
    "hadamard_block_size",
    "hadamard_matrix",
    "is_power_of_two",
    "load_any",
    "load_quantized",
    "make_config",
    "qparams_from_range",
    "quantizable_linears",
    "quantize",
    "quantize_tensor",
    "record_inputs",
    "rotate_linear_input",
    "round_ste",
    "save_quantized",
    "smoothing_factors",
    "transform_input",
    "transform_weight",
]
