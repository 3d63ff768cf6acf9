"""Deployment: simulated QuantLinear layers become Int4Linear / Int8Linear running real integer kernels.

    int_linear.py   Int4Linear / Int8Linear: fused activation quantization, int GEMM, epilogue
    convert.py      deploy(model): the exact conversion, layer by layer, from a DeployPlan
    io.py           save_deployed / load_deployed
    bench.py        the aggregator end to end in fp32, bf16, W8A8 and W4A4 (a benchmark)

docs/deployment.md explains what goes into the integer weights, what stays online, and why
the deployed model agrees with the simulation to fp32 rounding.
"""

from .convert import (
    DeployPlan,
    deploy,
    deployed_layers,
    fold_smoothing_into_norms,
    from_quant_linear,
    integer_weight,
    plan_layer,
)
from .int_linear import Int4Linear, Int8Linear, IntLinear, IntLinearSpec, linear_storage_bytes
from .io import FORMAT, load_deployed, save_deployed

__all__ = [
    "FORMAT",
    "DeployPlan",
    "Int4Linear",
    "Int8Linear",
    "IntLinear",
    "IntLinearSpec",
    "deploy",
    "deployed_layers",
    "fold_smoothing_into_norms",
    "from_quant_linear",
    "integer_weight",
    "linear_storage_bytes",
    "load_deployed",
    "plan_layer",
    "save_deployed",
]
