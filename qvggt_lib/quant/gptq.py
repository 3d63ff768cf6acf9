"""GPTQ: second-order weight quantization (Frantar et al., ICLR 2023).

GPTQ minimises the layer's output error ||X W^T - X W_hat^T||^2 = tr(dW H dW^T) with the
input Hessian H = 2/n sum_t x_t x_t^T [K, K]. It quantizes the columns of W one at a time
and spreads each column's error onto the columns not yet quantized (Optimal Brain Surgeon):

    w_hat_j = Q(w_j),   e = (w_j - w_hat_j) / U_jj,   W[:, j+1:] -= e U[j, j+1:]

where U is the upper Cholesky factor of H^-1 (after damping H += percdamp * mean(diag H) I).
Updates to columns outside the current block of block_size columns are applied lazily,
once per block, as one matrix product. act_order quantizes columns by decreasing H_jj.
"""

import dataclasses

import torch
from torch import Tensor

from .quantizer import QuantSpec, compute_qparams, dequantize, quantize


class HessianAccumulator:
    """Running H = 2/n sum_t x_t x_t^T over all n tokens of inputs x [..., K]."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.hessian: Tensor | None = None  # [K, K], on the first input's device
        self.num_tokens = 0

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.dtype)
        if self.hessian is None:
            self.hessian = torch.zeros(x.shape[1], x.shape[1], dtype=self.dtype, device=x.device)
        total = self.num_tokens + x.shape[0]
        self.hessian *= self.num_tokens / total  # running average: rescale the old sum
        self.hessian += (2 / total) * (x.T @ x)
        self.num_tokens = total


@torch.no_grad()
def gptq_quantize_weight(
    weight: Tensor,
    hessian: Tensor,
    spec: QuantSpec,
    percdamp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    clip: Tensor | float | None = None,
) -> Tensor:
    """Quantize-dequantize weight [N, K] with GPTQ; returns W_hat [N, K] in weight's dtype.

    hessian: [K, K] from HessianAccumulator. spec: per_channel (one scale per row, from the
    whole row) or per_group (one scale per row and group, computed when GPTQ reaches the
    group's first column, from the already-updated weights). clip: scalar or [N, 1].
    Columns with H_jj = 0 never saw a nonzero input: they are set to 0. With act_order and
    groups, groups are runs of the permuted order, as in the original GPTQ.
    """
    if spec.granularity not in ("per_channel", "per_group"):
        raise ValueError(
            f"GPTQ quantizes weights per_channel or per_group, got {spec.granularity!r}"
        )
    w = weight.detach().clone().float()
    h = hessian.detach().clone().float().to(w.device)
    num_cols = w.shape[1]

    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]

    h += percdamp * torch.diag(h).mean() * torch.eye(num_cols, device=w.device)
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(h_inv, upper=True)  # upper Cholesky factor of H^-1

    column_spec = dataclasses.replace(spec, granularity="per_channel", group_size=None)
    if spec.granularity == "per_group":
        if num_cols % spec.group_size != 0:
            raise ValueError(f"group_size {spec.group_size} does not divide {num_cols} columns")
        # round block_size to whole groups, so a group never straddles two blocks
        block_size = max(block_size // spec.group_size, 1) * spec.group_size
    else:
        scale, zero_point = compute_qparams(w, column_spec, clip)  # [N, 1] from the whole row

    w_hat = torch.zeros_like(w)
    for start in range(0, num_cols, block_size):
        end = min(start + block_size, num_cols)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        u_block = u[start:end, start:end]
        for i in range(end - start):
            if spec.granularity == "per_group" and (start + i) % spec.group_size == 0:
                scale, zero_point = compute_qparams(
                    block[:, i : i + spec.group_size], column_spec, clip
                )
            column = block[:, i : i + 1]
            q = dequantize(
                quantize(column, scale, zero_point, column_spec), scale, zero_point, column_spec
            )
            w_hat[:, start + i] = q[:, 0]
            error = (column - q) / u_block[i, i]
            block[:, i:] -= error @ u_block[i : i + 1, i:]
            errors[:, i : i + 1] = error
        w[:, end:] -= errors @ u[start:end, end:]  # lazy batch update of the remaining columns

    if act_order:
        w_hat = w_hat[:, torch.argsort(perm)]
    return w_hat.to(weight.dtype)
