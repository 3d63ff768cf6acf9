"""Random Hadamard rotations: the first half of DSFQ (QuantVGGT, Feng et al., 2025, Sec. 3.2).

An orthogonal R leaves a linear layer unchanged, X W^T = (X R)(W R)^T, while spreading an
outlier channel of X over all K channels, which makes per-token quantization of X R much
easier (QuaRot, Ashkboos et al., NeurIPS 2024). QuantVGGT uses, for every quantized linear,
its own random Hadamard of size K = in_features:

    R = diag(v) H,   H = orthonormal Hadamard (H H^T = I),   v in {-1, +1}^K random,
    x R = (x * v) H  = fwht(x * v)          (K a power of two: O(K log K), no K x K matmul)
    W R = fwht(W * v)                       (weight side, fused offline: rows of W rotate alike)

Where the signs go: *before* the transform, as in QuaRot's code (random_hadamard_matrix =
matmul_hadU(diag(v))) and QuantVGGT's reference code (evaluation/quarot). The paper's notation
H = H^ diag(v), read literally as x R = fwht(x) * v (signs *after* the transform), would be a
no-op for symmetric quantization: a sign flip changes no magnitude, and symmetric quantizers
are sign-equivariant (Q(-a) = -Q(a)), so every quantization error of x R and W R, and every
per-channel abs-max (hence every smoothing factor), would be exactly that of the plain H, and
the seed would not matter. With the signs first, the seed randomizes the rotation: e.g. a
common positive offset of every channel (post-GELU fc2 inputs) maps under plain H to one large
channel 0 (column 0 of H is all ones), while fwht(x * v) scatters it over all channels.

Where each side is applied, for the VGGT aggregator linears (K = 1024 or 4096):

    layer       input                     x R (activation side)   W R (weight side)
    attn.qkv    norm1(x)                  online                  fused offline
    attn.proj   attention output          online                  fused offline
    mlp.fc1     norm2(x)                  online                  fused offline
    mlp.fc2     GELU(fc1(x)), K = 4096    online                  fused offline

"Online" means computed at run time; a deployment fuses it into the per-token
activation-quantization kernel (both are row-local; the signs are the kernel's pre-scale,
applied on load before the FWHT). A QuaRot-style rotation of the whole residual stream would
make x R free for qkv and fc1 too, but LayerNorm does not commute with R: one must first bake
the mean subtraction into every writer of the residual stream (patch embedding, proj, fc2),
fold the LayerNorm affine into the next linears and the LayerScale gammas into proj/fc2, and
undo R wherever the heads read intermediate tokens. We keep the paper's per-layer rotations
instead.
"""

import math

import torch
from qvggt_kernels import fwht_reference
from torch import Tensor, nn


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def fwht(x: Tensor) -> Tensor:
    """Orthonormal fast Walsh-Hadamard transform along the last dim: x @ H_n / sqrt(n).

    x: [..., n] with n a power of two. Returns [..., n], same dtype. H_n is Sylvester's
    (natural order), equal to scipy.linalg.hadamard(n).

    This *is* qvggt_kernels.fwht_reference (radix-2 butterflies in fp32), the torch twin of
    the Triton kernel that the deployed layers fuse into activation quantization, so the
    simulated QuantLinear and the deployed path rotate with identical arithmetic. float64
    inputs (tests, analysis) instead use the dense exact Sylvester matrix, since the kernel
    reference computes in fp32.
    """
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"fwht needs a power-of-two last dim, got {n}")
    if x.dtype == torch.float64:
        return x @ hadamard_matrix(n, dtype=torch.float64, device=x.device)
    return fwht_reference(x)


def _sylvester(n: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


def _jacobsthal(q: int) -> Tensor:
    """Q[i, j] = legendre(j - i mod q): +1 square, -1 non-square, 0 on the diagonal."""
    squares = {i * i % q for i in range(1, q)}
    chi = torch.tensor(
        [0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64
    )
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def _bordered(corner_sign: float, q: int) -> Tensor:
    """[[0, 1^T], [corner_sign * 1, Q]] of order q + 1, Q the Jacobsthal matrix."""
    ones = torch.ones(q, 1, dtype=torch.float64)
    top = torch.cat((torch.zeros(1, 1, dtype=torch.float64), ones.T), dim=1)
    return torch.cat((top, torch.cat((corner_sign * ones, _jacobsthal(q)), dim=1)), dim=0)


def _paley(m: int) -> Tensor:
    """Unnormalised Hadamard of order m in {12, 20, 28} (Paley 1933)."""
    eye = torch.eye(m, dtype=torch.float64)
    if m in (12, 20):
        # Paley I, q = m - 1 in {11, 19} prime, q = 3 mod 4: H = I + S, S skew-symmetric
        return eye + _bordered(-1.0, m - 1)
    if m == 28:
        # Paley II, q = 13 prime, q = 1 mod 4: C symmetric of order 14, every entry of C
        # becomes a 2x2 block: +-1 -> +-[[1, 1], [1, -1]], 0 -> [[1, -1], [-1, -1]]
        c = _bordered(1.0, m // 2 - 1)
        h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        zero_block = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(c, h2) + torch.kron(eye[: m // 2, : m // 2], zero_block)
    raise ValueError(f"no Paley construction for order {m}")


def _constructible(n: int) -> bool:
    return any(n % m == 0 and is_power_of_two(n // m) for m in (1, 12, 20, 28))


def hadamard_block_size(n: int) -> int:
    """Largest b dividing n that has a true Hadamard matrix here (b = n when possible)."""
    return max(b for b in range(1, n + 1) if n % b == 0 and _constructible(b))


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Orthonormal Hadamard-type matrix [n, n] (H H^T = I), computed, not pasted.

    n = 2^k:             Sylvester, equal to scipy.linalg.hadamard(n) / sqrt(n).
    n = m 2^k, m in {12, 20, 28}: kron(H_m, H_{2^k}), H_m from Paley's construction.
    otherwise:           block-diagonal with n / b copies of the order-b matrix, b =
                         hadamard_block_size(n). Still orthogonal, but it only mixes channels
                         inside each block of b (b = 1 gives the identity).
    """
    b = hadamard_block_size(n)
    m = next(m for m in (12, 20, 28, 1) if b % m == 0 and is_power_of_two(b // m))
    block = _sylvester(b // m) if m == 1 else torch.kron(_paley(m), _sylvester(b // m))
    h = torch.block_diag(*[block] * (n // b)) / math.sqrt(b)
    return h.to(device=device, dtype=dtype)


class RandomHadamard(nn.Module):
    """R = diag(v) H, with H = hadamard_matrix(n) and signs v ~ {-1, +1}^n drawn from seed.

    Signs first (QuaRot / QuantVGGT reference code; see the module docstring): x R =
    fwht(x * v), so different seeds give different rotations and different quantization
    errors. The signs are a persistent buffer, so a saved model reloads the same rotation.
    """

    def __init__(self, n: int, seed: int):
        super().__init__()
        self.n = n
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer(
            "signs", torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
        )
        dense = None if is_power_of_two(n) else hadamard_matrix(n)
        self.register_buffer("dense_hadamard", dense, persistent=False)

    def rotate(self, x: Tensor) -> Tensor:
        """x [..., n] -> x R = (x * v) H, same shape, dtype and device as x.

        The sign flip x * v is exact in every float dtype, so this is the FWHT of x * v with
        the same arithmetic as qvggt_kernels.quantize_per_token(..., pre_scale=v).
        """
        xv = x * self.signs.to(device=x.device, dtype=x.dtype)
        if self.dense_hadamard is None:
            return fwht(xv)
        return xv @ self.dense_hadamard.to(device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.rotate(x)

    def matrix(self) -> Tensor:
        """Dense R = diag(v) H [n, n] (float32, on the signs' device): row i of H times v_i."""
        return self.signs[:, None] * hadamard_matrix(self.n, device=self.signs.device)

    def extra_repr(self) -> str:
        return f"n={self.n}, fast={self.dense_hadamard is None}"


def rotate_linear_input(linear: nn.Linear, rotation: RandomHadamard | Tensor) -> nn.Linear:
    """New nn.Linear with weight W R (bias unchanged), so that new(x R) == linear(x).

    rotation: a RandomHadamard or a dense orthogonal R [K, K]. The source is not modified.
    """
    weight = linear.weight.detach().float()  # rotate in fp32 even for bf16/fp16 layers
    if isinstance(rotation, RandomHadamard):
        rotated = rotation.rotate(weight)
    else:
        rotated = weight @ rotation.to(weight)
    fused = nn.Linear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(rotated)
        if linear.bias is not None:
            fused.bias.copy_(linear.bias)
    return fused
