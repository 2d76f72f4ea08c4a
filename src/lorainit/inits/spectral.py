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

from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank


def check_decomposable(weight: Tensor, what: str = "weight") -> None:
    """SVD schemes need real floating-point values: refuse packed/quantized storage and non-finite entries."""
    if not weight.is_floating_point():
        raise TypeError(
            f"{what} has dtype {weight.dtype}: an SVD of quantized or packed storage is meaningless; "
            "dequantize the layer first (or pick a data-free scheme such as init_a)"
        )
    if not torch.isfinite(weight).all():
        raise ValueError(f"{what} has non-finite entries; an SVD-based init cannot use it")


def working(t: Tensor) -> Tensor:
    """``t`` in at least float32 (half types are widened; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def top_svd(
    M: Tensor,
    rank: int,
    *,
    niter: int | None = None,
    oversample: int = 8,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``rank`` singular triplets of M (m, n), float32 or wider: U (m, r), S (r,), Vh (r, n); or of
    each matrix of a stack M (L, m, n): U (L, m, r), S (L, r), Vh (L, r, n).

    ``niter=None``: full SVD. Otherwise the randomized range finder of Halko et al. 2011 (Alg. 4.4):
    a Gaussian sketch of ``rank + oversample`` columns drawn on the CPU from ``generator`` (for a stack,
    one generator per matrix, so a matrix gets the same sketch alone or stacked), ``niter`` power
    iterations re-orthonormalized each half-step, then the SVD of the small projected matrix.
    """
    M = working(M)
    if niter is None:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return U[..., :rank], S[..., :rank], Vh[..., :rank, :]
    single = M.ndim == 2
    Ms = M[None] if single else M  # (L, m, n)
    gens = (
        [generator] if single else (list(generator) if isinstance(generator, Sequence) else [generator] * Ms.shape[0])
    )
    if len(gens) != Ms.shape[0]:
        raise ValueError(f"a stack of {Ms.shape[0]} matrices needs as many generators; got {len(gens)}")
    m, n = Ms.shape[-2:]
    q = min(rank + oversample, m, n)
    omega = (
        torch.stack([torch.randn(n, q, generator=g, dtype=torch.float32) for g in gens]).to(M.dtype).to(M.device)
    )  # (L, n, q)
    Y = orthonormal_basis(Ms @ omega)  # (L, m, q) basis of the sketched range
    for _ in range(niter):  # power iterations
        Y = orthonormal_basis(Ms @ orthonormal_basis(Ms.mT @ Y))
    U, S, Vh = _small_svd(Y.mT @ Ms, rank)  # of the (L, q, n) projected problem
    U = Y @ U  # (L, m, r)
    return (U[0], S[0], Vh[0]) if single else (U, S, Vh)


COND_MAX = 1e5  # CholeskyQR's float64 Gram is accurate to ~1e-16 cond(Y)^2; beyond this, Householder QR


def orthonormal_basis(Y: Tensor) -> Tensor:
    """Q (L, m, q) with orthonormal columns spanning the columns of each Y (L, m, q), m >= q.

    CholeskyQR2 (Fukaya et al. 2014): Q = Y R^-1 with R^T R = Y^T Y, applied twice, the (q, q) Gram
    and its Cholesky factor in float64; a handful of batched kernels for the whole stack instead of one
    Householder QR per matrix. A rank-deficient or ill-conditioned Y (a failed Cholesky, or diag(R) spread
    beyond ``COND_MAX``) goes to Householder QR (``torch.linalg.qr``)."""
    Q = Y.double()
    for _ in range(2):
        R, info = torch.linalg.cholesky_ex(Q.mT @ Q, upper=True)  # (L, q, q)
        d = R.diagonal(dim1=-2, dim2=-1).abs()
        if bool((info != 0).any() | (d.amin(-1) * COND_MAX <= d.amax(-1)).any()):
            return torch.linalg.qr(Y).Q
        Q = torch.linalg.solve_triangular(R, Q, upper=True, left=False)  # Q R = Y
    return Q.to(Y.dtype)


def _small_svd(Bm: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``keep`` SVD of short-wide matrices Bm (L, q, n), q <= n, through the eigendecomposition of the
    (q, q) Gram Bm Bm^T = U S^2 U^T in float64 (a batched eigensolver), Vh = S^-1 U^T Bm. Where a kept
    singular value is below 1e-6 of the largest, the Gram does not determine its row of Vh: that stack
    takes ``torch.linalg.svd``."""
    B64 = Bm.double()
    lam, U = torch.linalg.eigh(B64 @ B64.mT)  # ascending
    lam, U = lam.flip(-1)[..., :keep], U.flip(-1)[..., :keep]
    S = lam.clamp_min(0).sqrt()  # (L, keep)
    if bool((S[..., -1] <= 1e-6 * S[..., 0]).any()):
        U, S, Vh = torch.linalg.svd(Bm, full_matrices=False)
        return U[..., :keep], S[..., :keep], Vh[..., :keep, :]
    Vh = (U.mT @ B64) / S[..., None]  # (L, keep, n)
    return U.to(Bm.dtype), S.to(Bm.dtype), Vh.to(Bm.dtype)


def pissa_stack(
    weights: Tensor,
    rank: int,
    *,
    generators: Sequence[torch.Generator | None],
    scaling: float = 1.0,
    niter: int | None = None,
    oversample: int = 8,
) -> list[Factors]:
    """``pissa`` for a stack (L, out, in) of same-shape weights, matrix i drawing from ``generators[i]``:
    one batched decomposition for L layers (``lorainit.apply`` groups a model's layers by shape)."""
    check_rank(weights[0], rank)
    check_decomposable(weights)
    W = working(weights)
    U, S, Vh = top_svd(W, rank, niter=niter, oversample=oversample, generator=generators)
    root = (S / scaling).sqrt()  # (L, r)
    A = root[..., :, None] * Vh  # (L, r, in)
    B = U * root[..., None, :]  # (L, out, r)
    residual = W - scaling * B @ A  # (L, out, in)
    dt = weights.dtype
    return [Factors(A=a.to(dt), B=b.to(dt), residual=res.to(dt)) for a, b, res in zip(A, B, residual)]


@register(
    "pissa", preserves_output=True, stochastic=False, residual=True, stacked=pissa_stack
)  # full SVD by default; niter=K draws a sketch
def pissa(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    scaling: float = 1.0,
    niter: int | None = None,
    oversample: int = 8,
) -> Factors:
    """Principal singular directions of W in the adapter, the rest in the residual base weight."""
    return pissa_stack(weight[None], rank, generators=[generator], scaling=scaling, niter=niter, oversample=oversample)[
        0
    ]


@register("target", preserves_output=True, needs=("target",), stochastic=False)
def target(
    weight: Tensor, rank: int, *, generator: torch.Generator | None = None, target: Tensor, row_norm: float = 1.0
) -> Factors:
    """Oracle: A spans the top-r right singular directions of the known target update (B = 0)."""
    check_rank(weight, rank)
    if target.shape != weight.shape:
        raise ValueError(f"target update has shape {tuple(target.shape)}, the weight {tuple(weight.shape)}")
    check_decomposable(target, "target update")
    _, _, Vh = top_svd(target, rank)
    A = (row_norm * Vh).to(weight.dtype).to(weight.device)  # (r, in)
    return Factors(A=A, B=torch.zeros(weight.shape[0], rank, dtype=weight.dtype, device=weight.device))
