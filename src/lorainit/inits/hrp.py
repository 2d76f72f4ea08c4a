"""High-Rank Preheating (Chen et al. 2025, "HRP: High-Rank Preheating for Superior LoRA Initialization").

No public code exists; this is the reconstruction documented in ``shared/papers/hrp-method.md``:

1. Preheat: a LoRA of rank r_p > r, Init[A]-initialized, trained for a few steps on the training
   objective (done by the caller: ``stats.preheat``, AdamW at a constant LR on the one training loop over the
   init batches; this function receives its factors).
2. SVD of the preheated product B_p A_p = U S V^T (computed from the factors, ``factored_svd``).
3. The preheated adapter is discarded; the base weight is unchanged.
4. A_0 = the top-r right singular vectors V_r^T, with rows of norm ``row_norm`` (``a_scale="unit"``,
   default: 1, the expected row norm of an Init[A] draw N(0, 1/n)) or scaled by sqrt(S_r)
   (``a_scale="sqrt_s"``); B_0 = 0, so training starts from the pretrained model. With ``seed_b``
   the adapter starts at the preheated top-r product instead: A_0 = sqrt(S_r) V_r^T,
   B_0 = U_r sqrt(S_r) / scaling, and the base weight becomes W - scaling B_0 A_0 (output unchanged).
5. Training then proceeds as usual; in the asymmetric variant A stays frozen.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank
from .spectral import check_decomposable, working


def factored_svd(B: Tensor, A: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``rank`` SVD of B A (B: out x k, A: k x in) without forming it: with B = Q_B R_B and
    A^T = Q_A R_A, B A = Q_B (R_B R_A^T) Q_A^T, so the SVD of the k x k core gives U = Q_B U_c and
    V^T = V_c^T Q_A^T exactly, in O((out + in) k^2) instead of an (out x in) SVD."""
    check_decomposable(B, "preheated lora_B")
    check_decomposable(A, "preheated lora_A")
    QB, RB = torch.linalg.qr(B)  # (out, k), (k, k)
    QA, RA = torch.linalg.qr(A.T)  # (in, k), (k, k)
    Uc, S, Vhc = torch.linalg.svd(RB @ RA.T)
    return (QB @ Uc)[:, :rank], S[:rank], (Vhc @ QA.T)[:rank]


@register("hrp", preserves_output=True, needs=("preheated",), stochastic=False)
def hrp(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    preheated: Factors,
    a_scale: Literal["unit", "sqrt_s"] = "unit",
    row_norm: float = 1.0,
    seed_b: bool = False,
    scaling: float = 1.0,
) -> Factors:
    """Rank-r init from the top singular directions of a preheated higher-rank adapter's product."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    r_p = preheated.A.shape[0]
    if preheated.A.shape[1] != in_features or preheated.B.shape != (out_features, r_p):
        raise ValueError(
            f"preheated factors {tuple(preheated.B.shape)} x {tuple(preheated.A.shape)} do not fit "
            f"a weight of shape {tuple(weight.shape)}"
        )
    if r_p < rank:
        raise ValueError(f"preheat rank {r_p} is below the LoRA rank {rank}; preheat at a rank >= {rank}")
    U, S, Vh = factored_svd(working(preheated.B), working(preheated.A), rank)
    dt, dev = weight.dtype, weight.device
    if seed_b:
        root = S.sqrt()
        A = root[:, None] * Vh
        B = U * root[None, :] / scaling
        residual = working(weight) - scaling * (B @ A).to(dev)
        return Factors(A=A.to(dt).to(dev), B=B.to(dt).to(dev), residual=residual.to(dt))
    if a_scale == "unit":
        A = row_norm * Vh
    elif a_scale == "sqrt_s":
        A = S.sqrt()[:, None] * Vh
    else:
        raise ValueError(f"a_scale must be 'unit' or 'sqrt_s'; got {a_scale!r}")
    return Factors(A=A.to(dt).to(dev), B=torch.zeros(out_features, rank, dtype=dt, device=dev))
