"""Initializations from a singular value decomposition.

- ``pissa`` (Meng et al. 2024, PiSSA, eq. 2-3): W = U S V^T; A = sqrt(S_r / s) V_r^T, B = U_r sqrt(S_r / s)
  with s = scaling, so s B A is the top-r part of W, and the base weight becomes the residual
  W - s B A (the model's output is unchanged). ``niter=None`` takes the full SVD; an integer takes
  the randomized SVD of Halko et al. 2011 with that many power iterations and ``oversample`` extra
  columns (PEFT's ``pissa_niter_K`` uses no oversampling).
- ``target`` (Chen et al. 2025, HRP, Thm. 2 "target initialization"): an oracle for synthetic
  problems where the target update M is known: A = row_norm * V_r^T from M = U S V^T, B = 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank


def check_decomposable(weight: Tensor, what: str = "weight") -> None:
    """SVD schemes need real floating-point values: refuse packed/quantized storage and non-finite entries."""
    if not weight.is_floating_point():
        raise TypeError(f"{what} has dtype {weight.dtype}: an SVD of quantized or packed storage is meaningless; "
                        "dequantize the layer first (or pick a data-free scheme such as init_a)")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{what} has non-finite entries; an SVD-based init cannot use it")


def working(t: Tensor) -> Tensor:
    """``t`` in at least float32 (half types are widened; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def top_svd(M: Tensor, rank: int, *, niter: int | None = None, oversample: int = 8,
            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``rank`` singular triplets of M (float32 or wider): U (m, r), S (r,), Vh (r, n).

    ``niter=None``: full SVD. Otherwise the randomized range finder with ``niter`` power iterations
    on a Gaussian sketch of ``rank + oversample`` columns drawn from ``generator``.
    """
    M = working(M)
    if niter is None:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank]
    m, n = M.shape
    q = min(rank + oversample, m, n)
    omega = torch.randn(n, q, generator=generator, dtype=torch.float32).to(M.dtype).to(M.device)
    Y, _ = torch.linalg.qr(M @ omega)  # (m, q) basis of the sketched range
    for _ in range(niter):  # power iterations, re-orthonormalized each half-step
        Z, _ = torch.linalg.qr(M.T @ Y)
        Y, _ = torch.linalg.qr(M @ Z)
    Ub, S, Vh = torch.linalg.svd(Y.T @ M, full_matrices=False)  # (q, n) small problem
    return (Y @ Ub)[:, :rank], S[:rank], Vh[:rank]


@register("pissa", preserves_output=True, stochastic=False, residual=True)  # full SVD by default; niter=K draws a sketch
def pissa(weight: Tensor, rank: int, *, generator: torch.Generator | None = None, scaling: float = 1.0,
          niter: int | None = None, oversample: int = 8) -> Factors:
    """Principal singular directions of W in the adapter, the rest in the residual base weight."""
    check_rank(weight, rank)
    check_decomposable(weight)
    W = working(weight)
    U, S, Vh = top_svd(W, rank, niter=niter, oversample=oversample, generator=generator)
    root = (S / scaling).sqrt()  # (r,)
    A = root[:, None] * Vh  # (r, in)
    B = U * root[None, :]  # (out, r)
    residual = W - scaling * B @ A
    dt = weight.dtype
    return Factors(A=A.to(dt), B=B.to(dt), residual=residual.to(dt))


@register("target", preserves_output=True, needs=("target",), stochastic=False)
def target(weight: Tensor, rank: int, *, generator: torch.Generator | None = None, target: Tensor,
           row_norm: float = 1.0) -> Factors:
    """Oracle: A spans the top-r right singular directions of the known target update (B = 0)."""
    check_rank(weight, rank)
    if target.shape != weight.shape:
        raise ValueError(f"target update has shape {tuple(target.shape)}, the weight {tuple(weight.shape)}")
    check_decomposable(target, "target update")
    _, _, Vh = top_svd(target, rank)
    A = (row_norm * Vh).to(weight.dtype).to(weight.device)  # (r, in)
    return Factors(A=A, B=torch.zeros(weight.shape[0], rank, dtype=weight.dtype, device=weight.device))
