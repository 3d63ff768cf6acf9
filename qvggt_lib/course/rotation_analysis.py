"""Measurements for the rotation lesson (notebook 02): outliers and 4-bit error, with and without R.

A per-token symmetric b-bit quantizer of a row x [K] uses the step s = max|x| / qmax
(qmax = 2^(b-1) - 1). Modelling the rounding error as uniform on [-s/2, s/2] gives the
relative error of the row

    ||Q(x) - x|| / ||x||  ~  (max|x| / rms(x)) / (sqrt(12) * qmax),

so the *max-to-RMS ratio* of a token (between 1 for a flat row and sqrt(K) for a one-hot row)
is what decides how well it quantizes. An orthogonal rotation keeps ||x|| (and rms) but can
lower max|x|: a Hadamard spreads one large channel over all K channels.

Functions here take plain tensors (``x [..., K]``, recorded with ``quant.record_inputs``;
``weight [N, K]``) and a rotation (a ``RandomHadamard``, or None for the unrotated baseline),
so they work for any linear layer of the tiny model or of VGGT-1B:

* :func:`max_to_rms`, :func:`channel_absmax`, :func:`relative_error`, :func:`orthogonality_error`;
* :func:`predicted_token_error` -- the formula above;
* :func:`layer_quant_errors` -- activation, weight and output error of one layer at WxAy;
* :func:`pad_truncate_hadamard` -- the zero-pad-and-truncate fallback for non-power-of-two
  sizes (Dao-AILab's reference), which is *not* orthogonal: the lesson's counter-example.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..quant.hadamard import RandomHadamard, hadamard_matrix
from ..quant.quantizer import QuantSpec, fake_quantize


def max_to_rms(x: Tensor) -> Tensor:
    """Per-row max|x| / rms(x) for x [..., K] -> [...] (1 = flat, sqrt(K) = one-hot)."""
    x = x.double()
    rms = x.pow(2).mean(dim=-1).sqrt()
    return (x.abs().amax(dim=-1) / rms.clamp_min(1e-30)).float()


def channel_absmax(x: Tensor) -> Tensor:
    """Per-channel max over all rows of |x|: x [..., K] -> [K]."""
    return x.reshape(-1, x.shape[-1]).abs().amax(dim=0)


def relative_error(approx: Tensor, reference: Tensor) -> float:
    """||approx - reference||_F / ||reference||_F, computed in float64."""
    reference = reference.double()
    return float((approx.double() - reference).norm() / reference.norm().clamp_min(1e-300))


def orthogonality_error(matrix: Tensor) -> float:
    """max |M M^T - I| of a square matrix (0 for an orthogonal one)."""
    m = matrix.double()
    return float((m @ m.T - torch.eye(m.shape[0], dtype=m.dtype, device=m.device)).abs().max())


def predicted_token_error(ratio: Tensor | float, bits: int = 4) -> Tensor:
    """Uniform-noise prediction of a row's relative per-token quantization error.

    ratio: max|x| / rms(x) of the row(s). Returns ratio / (sqrt(12) * qmax), capped at 1
    (rounding everything to zero never costs more than the row itself).
    """
    qmax = 2 ** (bits - 1) - 1
    return (torch.as_tensor(ratio, dtype=torch.float32) / (math.sqrt(12) * qmax)).clamp(max=1.0)


def _rotate(t: Tensor, rotation: RandomHadamard | None) -> Tensor:
    return t if rotation is None else rotation.rotate(t)


def layer_quant_errors(
    x: Tensor,
    weight: Tensor,
    rotation: RandomHadamard | None = None,
    weight_bits: int = 4,
    act_bits: int = 4,
) -> dict[str, float]:
    """Relative errors of one linear at W{weight_bits}A{act_bits}, optionally rotated.

    x [..., K] (the layer's recorded input), weight [N, K]. With R = rotation (identity when
    None), activations are quantized per token and symmetric, weights per output channel and
    symmetric, as in QuantVGGT. ``rotation`` may be any object with a ``rotate(t)`` method
    applying an orthogonal map along the last dim (e.g. a signs-first variant). Returns

    * ``act``: ||Q_a(x R) - x R|| / ||x R||    (R orthogonal: the norm is that of x)
    * ``weight``: ||Q_w(W R) - W R|| / ||W R||
    * ``output``: ||Q_a(x R) Q_w(W R)^T - x W^T|| / ||x W^T||   (bias left out: it is exact)
    """
    x = x.reshape(-1, x.shape[-1]).float()
    weight = weight.detach().float()
    return transformed_layer_errors(x, weight, _rotate(x, rotation), _rotate(weight, rotation),
                                    weight_bits, act_bits)


def transformed_layer_errors(x: Tensor, weight: Tensor, xt: Tensor, wt: Tensor,
                             weight_bits: int = 4, act_bits: int = 4) -> dict[str, float]:
    """act / weight / output errors of a layer whose input x [M, K] and weight [N, K] were
    transformed to xt, wt with xt wt^T = x W^T (rotation, smoothing): xt is quantized per token,
    wt per output channel, both symmetric, and the output is compared with x W^T."""
    xq = fake_quantize(xt, QuantSpec(act_bits, "per_token"))
    wq = fake_quantize(wt, QuantSpec(weight_bits, "per_channel"))
    return {
        "act": relative_error(xq, xt),
        "weight": relative_error(wq, wt),
        "output": relative_error(xq @ wq.T, x @ weight.T),
    }


def pad_truncate_hadamard(n: int) -> Tensor:
    """The [n, n] map x -> (pad x to the next power of two m, x H_m, keep the first n outputs).

    Equals hadamard_matrix(m)[:n, :n]. For n < m it is not orthogonal (rows lose norm), which is
    why QuantVGGT-style code must use a true Hadamard (Paley / Kronecker) or a block-diagonal one.
    """
    m = 1 << max(n - 1, 0).bit_length()
    return hadamard_matrix(m, dtype=torch.float64)[:n, :n]
