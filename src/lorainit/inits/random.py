"""Random data-free LoRA initializations (B A = 0 at step 0 for all of them).

Hayou, Ghosh, Yu 2024, "The Impact of Initialization on LoRA Finetuning Dynamics", Sec. 2.1:
- Init[A] (``init_a``): B = 0, A_ij ~ N(0, 1/n) with n = fan-in; or PEFT's default draw of A,
  kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(n), 1/sqrt(n)) (``distribution="kaiming_uniform"``).
- Init[B] (``init_b``): A = 0, B_ij ~ N(0, 1/r).
Baselines of Chen et al. 2025 (HRP), Fig. 1:
- ``gaussian``: B = 0, A_ij ~ N(0, std^2) with std = 1/r, as PEFT's ``init_lora_weights="gaussian"``.
- ``orthogonal``: B = 0, A = row_norm * Q^T with Q (in x r) Haar-distributed with orthonormal columns,
  so the rows of A are orthonormal directions. (PEFT's ``"orthogonal"`` is another scheme: both
  factors nonzero with B A = 0.)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank, normal


def _zeros(shape, like: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


@register("init_a", preserves_output=True)
def init_a(
    weight: Tensor,
    rank: int,
    *,
    generator: torch.Generator | None = None,
    std: float | None = None,
    distribution: Literal["normal", "kaiming_uniform"] = "normal",
) -> Factors:
    """Init[A]: B = 0 and A ~ N(0, std^2), std = in_features^-1/2 unless given; or U(-1/sqrt(in), 1/sqrt(in)) (PEFT default)."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    if distribution == "normal":
        A = normal((rank, in_features), in_features**-0.5 if std is None else std, weight, generator)  # (r, in)
    elif distribution == "kaiming_uniform":
        bound = in_features**-0.5  # kaiming_uniform(a=sqrt(5)): gain sqrt(1/3) * sqrt(3 / fan_in)
        A = ((torch.rand((rank, in_features), generator=generator) * 2 - 1) * bound).to(weight.dtype).to(weight.device)
    else:
        raise ValueError(f"distribution must be 'normal' or 'kaiming_uniform'; got {distribution!r}")
    return Factors(A=A, B=_zeros((out_features, rank), weight))


@register("init_b", preserves_output=True)
def init_b(weight: Tensor, rank: int, *, generator: torch.Generator | None = None, std: float | None = None) -> Factors:
    """Init[B]: A = 0 and B ~ N(0, std^2), std = rank^-1/2 unless given (Hayou et al. 2024, Sec. 2.1)."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    B = normal((out_features, rank), rank**-0.5 if std is None else std, weight, generator)  # (out, r)
    return Factors(A=_zeros((rank, in_features), weight), B=B)


@register("gaussian", preserves_output=True)
def gaussian(
    weight: Tensor, rank: int, *, generator: torch.Generator | None = None, std: float | None = None
) -> Factors:
    """B = 0 and A ~ N(0, std^2), std = 1/rank unless given (PEFT's "gaussian")."""
    check_rank(weight, rank)
    return init_a(weight, rank, generator=generator, std=1 / rank if std is None else std)


@register("orthogonal", preserves_output=True)
def orthogonal(
    weight: Tensor, rank: int, *, generator: torch.Generator | None = None, row_norm: float = 1.0
) -> Factors:
    """B = 0 and A with orthonormal rows times ``row_norm`` (1: the expected row norm of Init[A]), Haar-random."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    G = torch.randn(in_features, rank, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)  # (in, r)
    Q = Q * torch.sign(torch.diagonal(R))  # sign fix: Q is then Haar-distributed
    A = (row_norm * Q.T).to(weight.dtype).to(weight.device)  # (r, in)
    return Factors(A=A, B=_zeros((out_features, rank), weight))
