"""Initialization from the layer's input activations.

``eva`` (Paischer et al. 2024, EVA, Sec. 3): with X (N x in) the inputs the layer sees on training
data, centred column-wise, X = U S V^T: A = V_r^T (the top-r principal directions of the inputs;
``whiten`` divides row i by sqrt(s_i) as PEFT's ``whiten=True``), B = 0. EVA's rank redistribution
across layers (rho > 1) is a model-level step, not part of this per-layer function (rho = 1 here).
``center=False`` takes ``activations`` as already centred, e.g. a square root R of the centred scatter
matrix (R^T R = X_c^T X_c), which has the same right singular vectors and values as X_c, or only its
k >= r leading rows diag(sqrt(l_1..k)) V_k^T (what ``lorainit.stats.activation_scatter(keep=r)`` gives).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank
from .spectral import check_decomposable, top_svd, working


@register("eva", preserves_output=True, needs=("activations",), stochastic=False)
def eva(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    activations: Tensor,
    whiten: bool = False,
    niter: int | None = None,
    center: bool = True,
) -> Factors:
    """EVA: A = top-r principal directions of the layer inputs, B = 0."""
    check_rank(weight, rank)
    X = working(activations.reshape(-1, activations.shape[-1]))  # (N, in): tokens of any batch shape
    if X.shape[1] != weight.shape[1]:
        raise ValueError(f"activations have {X.shape[1]} features, the layer takes {weight.shape[1]}")
    if X.shape[0] < rank + center:  # n centred rows span at most n - 1 directions
        raise ValueError(f"{X.shape[0]} activation rows cannot give {rank} principal directions; collect more data")
    check_decomposable(X, "activations")
    _, S, Vh = top_svd(X - X.mean(0) if center else X, rank, niter=niter, generator=generator)
    A = Vh / S.sqrt()[:, None] if whiten else Vh
    return Factors(
        A=A.to(weight.dtype).to(weight.device),
        B=torch.zeros(weight.shape[0], rank, dtype=weight.dtype, device=weight.device),
    )
