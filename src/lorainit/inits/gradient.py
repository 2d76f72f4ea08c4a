"""Initializations from the full-weight gradient G = dL/dW (out x in) of the loss at the pretrained weights.

- ``lora_ga`` (Wang, Yu, Li 2024, LoRA-GA, Sec. 3.2 and the authors' code): G = U S V^T;
  A = V_{1..r}^T and B = U_{r+1..2r} ("ArB2r", the authors' default), both multiplied by
  out^{1/4} / sqrt(gamma) ("stable" scale), and the base weight shifted to W - scaling B A so the
  output is unchanged. PEFT 0.21 differs: it multiplies B by the singular values S_{r+1..2r} and
  applies the stable factor to B only.
- ``lora_one`` (Zhang et al. 2025, LoRA-One, spectral init; the authors' code): with -G = U S V^T,
  B = U_r sqrt(S_r) / sqrt(gamma s_1), A = sqrt(S_r) V_r^T / sqrt(gamma s_1), so
  B A = (-G)_r / (gamma s_1): one normalized gradient step's top-r part. The base weight is NOT
  shifted, so the output changes at step 0 (by design: the init is itself a first update).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank
from .spectral import check_decomposable, top_svd, working


def _check_grad(weight: Tensor, grad: Tensor) -> None:
    if grad.shape != weight.shape:
        raise ValueError(f"gradient has shape {tuple(grad.shape)}, the weight {tuple(weight.shape)}")
    check_decomposable(grad, "gradient")


@register("lora_ga", preserves_output=True, needs=("grad",), stochastic=False, residual=True)
def lora_ga(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    grad: Tensor,
    scaling: float = 1.0,
    direction: Literal["ArB2r", "A2rBr"] = "ArB2r",
    scale: Literal["stable", "unit"] = "stable",
    stable_gamma: float = 16.0,
    niter: int | None = None,
) -> Factors:
    """LoRA-GA: adapter from the gradient's singular vectors, base shifted by -scaling B A."""
    check_rank(weight, rank)
    _check_grad(weight, grad)
    if 2 * rank > min(weight.shape):
        raise ValueError(f"lora_ga uses 2r = {2 * rank} singular vectors; rank must be <= {min(weight.shape) // 2}")
    U, _, Vh = top_svd(working(grad), 2 * rank, niter=niter, generator=generator)
    if direction == "ArB2r":
        A, B = Vh[:rank], U[:, rank : 2 * rank]
    elif direction == "A2rBr":
        A, B = Vh[rank : 2 * rank], U[:, :rank]
    else:
        raise ValueError(f"direction must be 'ArB2r' or 'A2rBr'; got {direction!r}")
    if scale == "stable":
        c = weight.shape[0] ** 0.25 / stable_gamma**0.5
        A, B = A * c, B * c
    elif scale != "unit":
        raise ValueError(f"scale must be 'stable' or 'unit'; got {scale!r}")
    dt, dev = weight.dtype, weight.device
    A, B = A.to(dt).to(dev), B.to(dt).to(dev)
    residual = working(weight) - scaling * (working(B) @ working(A))
    return Factors(A=A, B=B, residual=residual.to(dt))


@register("lora_one", preserves_output=False, needs=("grad",), stochastic=False)
def lora_one(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    grad: Tensor,
    gamma: float = 16.0,
    niter: int | None = None,
) -> Factors:
    """LoRA-One: B A = top-r part of -G divided by gamma times its largest singular value; base unchanged."""
    check_rank(weight, rank)
    _check_grad(weight, grad)
    U, S, Vh = top_svd(-working(grad), rank, niter=niter, generator=generator)
    if not S[0] > 0:
        raise ValueError("the gradient is zero: LoRA-One needs a nonzero first gradient (check the data and loss)")
    root = (S / (gamma * S[0])).sqrt()  # (r,)
    A = root[:, None] * Vh  # (r, in)
    B = U * root[None, :]  # (out, r)
    return Factors(A=A.to(weight.dtype).to(weight.device), B=B.to(weight.dtype).to(weight.device))
