"""Model-independent quantization building blocks: quantizers, rotations, smoothing, GPTQ."""

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
    quantize,
    round_ste,
)
from .smoothing import (
    ActAbsMaxObserver,
    smoothing_factors,
    transform_input,
    transform_weight,
)

__all__ = [
    "ActAbsMaxObserver",
    "HessianAccumulator",
    "LearnableClip",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "RandomHadamard",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "fwht",
    "gptq_quantize_weight",
    "hadamard_block_size",
    "hadamard_matrix",
    "is_power_of_two",
    "qparams_from_range",
    "quantize",
    "rotate_linear_input",
    "round_ste",
    "smoothing_factors",
    "transform_input",
    "transform_weight",
]
