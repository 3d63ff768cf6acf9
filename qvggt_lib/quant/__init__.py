"""Quantization of VGGT: building blocks (quantizers, rotations, smoothing, GPTQ, QuantLinear),
the target table, calibration, and the model-level API: quantize(model, method, bits, calibration) (alias quantize_model),
save_quantized, load_quantized, load_any."""

from .api import (
    ABLATIONS,
    BITS,
    METHODS,
    GPTQConfig,
    QuantConfig,
    QuantReport,
    QuantVGGTConfig,
    QuaRotConfig,
    RTNConfig,
    SmoothQuantConfig,
    make_config,
)
from .api import quantize
from .api import quantize as quantize_model  # alias kept for readability in notebooks
from .calibration import (
    calibrate_blockwise,
    calibration_scenes,
    collect_linear_statistics,
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
from .quantizer import (
    LearnableClip,
    Quantizer,
    QuantSpec,
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_from_range,
    quantize as quantize_tensor,
    round_ste,
)
from .serialization import load_any, load_quantized, save_quantized
from .smoothing import (
    ActAbsMaxObserver,
    smoothing_factors,
    transform_input,
    transform_weight,
)
from .targets import DEFAULT_SCOPES, SCOPES, quantizable_linears

__all__ = [
    "ABLATIONS",
    "BITS",
    "DEFAULT_SCOPES",
    "METHODS",
    "SCOPES",
    "ActAbsMaxObserver",
    "GPTQConfig",
    "HessianAccumulator",
    "LearnableClip",
    "QuaRotConfig",
    "QuantConfig",
    "QuantLinear",
    "QuantReport",
    "QuantSpec",
    "QuantVGGTConfig",
    "Quantizer",
    "RTNConfig",
    "RandomHadamard",
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
    "quantize_model",
    "rotate_linear_input",
    "round_ste",
    "save_quantized",
    "smoothing_factors",
    "transform_input",
    "transform_weight",
]
