"""The one signature every LoRA initialization scheme follows.

A scheme is a pure function

    scheme(weight, rank, *, generator=None, **hyperparameters) -> Factors

in the vocabulary of loralib/PEFT: for a frozen layer ``y = W x`` with ``W`` of shape (out, in),
LoRA adds ``scaling * B A x`` with ``lora_A`` = A of shape (r, in) and ``lora_B`` = B of shape
(out, r). A scheme reads ``weight`` (its shape, dtype, device, and for spectral schemes its values)
and returns new tensors; it never mutates a module. Residual schemes (PiSSA-like) also return the
base weight to use instead of ``W``.

Random draws come from ``generator`` on the CPU and are then moved to ``weight.device``: the same
seed gives the same factors on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Factors:
    """Initial LoRA factors for one layer."""

    A: Tensor  # (r, in)   lora_A
    B: Tensor  # (out, r)  lora_B
    residual: Tensor | None = None  # (out, in) base weight replacing W, or None to keep W

    def delta(self) -> Tensor:
        """The initial low-rank update B A, shape (out, in), without the scaling factor."""
        return self.B @ self.A


class InitScheme(Protocol):
    def __call__(self, weight: Tensor, rank: int, *, generator: torch.Generator | None = None, **kw) -> Factors: ...


def check_rank(weight: Tensor, rank: int) -> None:
    """Refuse ranks that cannot be a LoRA rank for this weight."""
    if weight.ndim != 2:
        raise ValueError(f"LoRA needs a 2-d weight (out, in); got shape {tuple(weight.shape)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive integer; got {rank!r}")
    out_features, in_features = weight.shape
    if rank > min(out_features, in_features):
        raise ValueError(
            f"rank {rank} exceeds min(out, in) = {min(out_features, in_features)} "
            f"for a weight of shape {tuple(weight.shape)}; choose a rank <= {min(out_features, in_features)}"
        )


def normal(shape: tuple[int, ...], std: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, std^2) samples drawn on the CPU from ``generator``, returned with ``like``'s dtype and device."""
    sample = torch.randn(shape, generator=generator, dtype=torch.float32)
    return (sample * std).to(dtype=like.dtype, device=like.device)
