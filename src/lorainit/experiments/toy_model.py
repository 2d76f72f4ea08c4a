"""The teacher-student model of Hayou, Ghosh, Yu 2024 (eq. 4, App. B.1.1) as tensors: the teacher and its data, S
seeds' frozen students of width n, the batched forward of K = S*M LoRA runs (checked against eq. 4 written one run
at a time) and Fig. 3's feature norms |Z_A|, |Z_B|. ``toy`` trains on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..seeding import generator
from .toy_head import head

if TYPE_CHECKING:
    from .toy import ToyConfig


def _normal(shape, var: float, g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g).mul_(var**0.5)


def teacher_weights(cfg: ToyConfig, g: torch.Generator | None = None) -> dict[str, Tensor]:
    """Teacher of eq. (4): W_h = 0 and an injected rank-``teacher_rank`` LoRA, every weight N(0, 1/fan_in)."""
    g = generator("toy-teacher", cfg.data_seed) if g is None else g
    d, n, r = cfg.input_dim, cfg.teacher_width, cfg.teacher_rank
    return {
        "W_in": _normal((n, d), 1 / d, g),
        "A": _normal((r, n), 1 / n, g),
        "B": _normal((n, r), 1 / r, g),
        "W_out": _normal((n,), 1 / n, g),
    }


def teacher_data(cfg: ToyConfig) -> dict[str, Tensor]:
    """X ~ N(0, I_d) and Y = f_teacher(X): train and test splits (CPU)."""
    g = generator("toy-teacher", cfg.data_seed)
    w = teacher_weights(cfg, g)
    X = torch.randn(cfg.n_train + cfg.n_test, cfg.input_dim, generator=g)  # (N, d)
    pre = X @ w["W_in"].T  # (N, n)
    Y = torch.relu(pre + torch.relu(pre) @ w["A"].T @ w["B"].T) @ w["W_out"]  # (N,)
    return {
        "X_train": X[: cfg.n_train],
        "Y_train": Y[: cfg.n_train],
        "X_test": X[cfg.n_train :],
        "Y_test": Y[cfg.n_train :],
    }


@dataclass
class Student:
    """Frozen parts of S seeds' students of width n, precomputed on ``device``."""

    Z: Tensor  # (S, N, n) LoRA input relu(W_in x)
    P: Tensor  # (S, N, n) frozen hidden pre-activation W_in x + W_h relu(W_in x)
    w_out: Tensor  # (S, n)
    W_h: list[Tensor]  # S x (n, n): the weight the LoRA adapts (handed to the init schemes)


def students(
    cfg: ToyConfig, width: int, X: dict[str, Tensor], device: torch.device, seeds: list[int] | None = None
) -> dict[str, Student]:
    """Each seed's frozen student (B.1.1 variances), evaluated on the train and test inputs; ``seeds``
    (default ``range(cfg.seeds)``) are stacked in the order given."""
    per_split: dict[str, list] = {"train": [], "test": []}
    W_hs, w_outs = [], []
    for seed in range(cfg.seeds) if seeds is None else seeds:
        g = generator("toy-student", cfg.data_seed, seed, width)
        W_in = _normal((width, cfg.input_dim), 1 / cfg.input_dim, g).to(device)
        W_h = _normal((width, width), 1 / width, g).to(device)
        W_outs = _normal((width,), 1 / width, g).to(device)
        for split in per_split:
            pre = X[split].to(device) @ W_in.T  # (N, n)
            z = torch.relu(pre)
            per_split[split].append((z, pre + z @ W_h.T))
        W_hs.append(W_h)
        w_outs.append(W_outs)
    w_out = torch.stack(w_outs)
    return {
        split: Student(Z=torch.stack([z for z, _ in v]), P=torch.stack([p for _, p in v]), w_out=w_out, W_h=W_hs)
        for split, v in per_split.items()
    }


def forward(student: Student, A: Tensor, B: Tensor, scaling: float) -> tuple[Tensor, Tensor]:
    """Outputs (K, N) and LoRA features Z_A (K, N, r) of K = S*M runs; A (K, r, n), B (K, n, r)."""
    S, N, n = student.Z.shape
    M = A.shape[0] // S
    # one (N, d) @ (d, r) product per run, each seed's Z shared through a stride-0 view: a run's rounding does not
    # depend on how many runs share its seed (einsum's single (N, d) @ (d, M r) product did, on an AVX2 host's MKL)
    Z_A = torch.cat(
        [torch.bmm(student.Z[s].expand(M, N, n), A[s * M : (s + 1) * M].transpose(1, 2)) for s in range(S)]
    )  # (K, N, r)
    return head(scaling * Z_A, B, student.P, student.w_out), Z_A


def forward_reference(student: Student, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    """Eq. (4) written directly, one run at a time through plain autograd: the check on ``forward``."""
    S = student.Z.shape[0]
    M = A.shape[0] // S
    outs = []
    for k in range(A.shape[0]):
        s = k // M
        h = student.P[s] + scaling * (student.Z[s] @ A[k].T) @ B[k].T  # (N, n)
        outs.append(torch.relu(h) @ student.w_out[s])
    return torch.stack(outs)  # (K, N)


@torch.no_grad()
def feature_norms(Z_A: Tensor, B: Tensor) -> dict[str, Tensor]:
    """Fig. 3's |Z_A| = N^-1 sum_i ||A z_i|| and |Z_B| = N^-1 sum_i ||B A z_i||, per run (K,).

    ||B A z||^2 = (A z)^T (B^T B) (A z), so |Z_B| needs the (K, r, r) Gram matrix, not the (K, N, n) Z_B."""
    gram = torch.bmm(B.transpose(1, 2), B)  # (K, r, r)
    zb2 = (torch.bmm(Z_A, gram) * Z_A).sum(-1)  # (K, N)
    return {"za": Z_A.norm(dim=-1).mean(-1), "zb": zb2.clamp_min(0).sqrt().mean(-1)}
