"""Random data-free LoRA initializations.

Hayou, Ghosh, Yu 2024, "The Impact of Initialization on LoRA Finetuning Dynamics", Sec. 2.1:
both schemes start from the pretrained model (B A = 0) but put the randomness in different factors.

- Init[A] (PEFT's default family): B = 0, A_ij ~ N(0, sigma_A^2) with sigma_A^2 = 1/n, n = fan-in.
- Init[B]: A = 0, B_ij ~ N(0, sigma_B^2) with sigma_B^2 = 1/r.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import register
from .base import Factors, check_rank, normal


@register("init_a", preserves_output=True)
def init_a(weight: Tensor, rank: int, *, generator: torch.Generator | None = None, std: float | None = None) -> Factors:
    """Init[A]: B = 0 and A ~ N(0, std^2), std = in_features^-1/2 unless given (Hayou et al. 2024, Sec. 2.1)."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    std = in_features**-0.5 if std is None else std
    A = normal((rank, in_features), std, weight, generator)  # (r, in)
    B = torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device)  # (out, r)
    return Factors(A=A, B=B)


@register("init_b", preserves_output=True)
def init_b(weight: Tensor, rank: int, *, generator: torch.Generator | None = None, std: float | None = None) -> Factors:
    """Init[B]: A = 0 and B ~ N(0, std^2), std = rank^-1/2 unless given (Hayou et al. 2024, Sec. 2.1)."""
    check_rank(weight, rank)
    out_features, in_features = weight.shape
    std = rank**-0.5 if std is None else std
    A = torch.zeros(rank, in_features, dtype=weight.dtype, device=weight.device)  # (r, in)
    B = normal((out_features, rank), std, weight, generator)  # (out, r)
    return Factors(A=A, B=B)
