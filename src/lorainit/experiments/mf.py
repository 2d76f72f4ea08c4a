r"""Low-rank matrix factorization with LoRA: Chen et al. 2025 (HRP), Figure 1.

Pretrained weight W = 0, target update M (default diag(I_12, 0_20), a 32 x 32 matrix; ``singular_values``
gives it distinct singular values instead); a rank-r
adapter minimizes L(A, B) = 1/2 ||B A - M||_F^2 by gradient descent (the paper's analysis is gradient
flow). Classic LoRA trains A and B; asymmetric LoRA freezes A after initialization and trains B.

The best rank-r loss is L* = 1/2 sum_{i > r} sigma_i(M)^2 (Eckart-Young): 5.0 for the default M, r = 2.
With A frozen, B converges to M A^T (A A^T)^-1 and the loss to 1/2 ||M (I - P_A)||_F^2, P_A the
projection onto A's row space: L* exactly when A spans M's top-r right singular directions, and
1/2 (1 - r/n) ||M||_F^2 in expectation for an isotropic random A (5.625 for the default).

Inits (all with B = 0 and rows of A of norm about 1, so that they differ in direction, not scale):
``gaussian`` A ~ N(0, 1/n); ``orthogonal`` orthonormal rows; ``target`` M's top-r right singular
vectors; ``hrp`` the top-r right singular vectors of a rank-``preheat_rank`` classic LoRA (Init[A])
trained ``preheat_steps`` steps on the same objective. Every (init, seed) run of a mode trains as one
batched program; so does every seed's preheat.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import batched, inits
from ..seeding import generator

SCHEME_KW = {"gaussian": lambda n: {"std": n**-0.5}, "orthogonal": lambda n: {"row_norm": 1.0}}


@dataclass(frozen=True)
class MFConfig:
    """Matrix factorization toward M = diag(1 x ones, 0 x (n - ones)) with a rank-r LoRA."""

    n: int = 32
    """size of the square target M"""
    ones: int = 12
    """number of unit singular values of M (the rest are 0)"""
    singular_values: tuple[float, ...] = ()
    """M's nonzero singular values instead, e.g. 5,4,3,2,1 (M = diag(values, 0, ...)); distinct values give M distinct
    top directions, which the paper's diag(I_12, 0) cannot tell apart (empty: --ones unit values)"""
    rank: int = 2
    """LoRA rank r"""
    inits: tuple[str, ...] = ("gaussian", "orthogonal", "hrp", "target")
    """init schemes to compare"""
    modes: tuple[str, ...] = ("classic", "asymmetric")
    """classic: A and B train; asymmetric: A frozen after init, B trains"""
    seeds: int = 8
    """number of seeds (random A draws; the preheat's draw for hrp)"""
    steps: int = 1500
    """gradient-descent steps of the main run"""
    lr: float = 0.1
    """gradient-descent step size"""
    preheat_rank: int = 6
    """HRP: rank of the preheated adapter"""
    preheat_steps: int = 100
    """HRP: gradient-descent steps of the preheat (classic LoRA, Init[A])"""
    preheat_lr: float = 0.1
    """HRP: preheat step size"""
    preheat_sweep: tuple[int, ...] = (10, 30, 100, 300)
    """HRP: also report the asymmetric final loss for these preheat lengths (empty: skip)"""
    tolerance: float = 0.01
    """a run 'reaches the optimum' once its loss is within this fraction of L*"""


def validate(cfg: MFConfig) -> None:
    for name in ("n", "rank", "seeds", "steps", "preheat_rank", "preheat_steps"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {getattr(cfg, name)}")
    if not cfg.singular_values and not 0 < cfg.ones <= cfg.n:  # (--singular-values replaces --ones)
        raise ValueError(f"ones must be in 1..n={cfg.n}; got {cfg.ones}")
    if cfg.singular_values and (
        len(cfg.singular_values) > cfg.n or min(cfg.singular_values) < 0 or max(cfg.singular_values) <= 0
    ):
        raise ValueError(
            f"singular_values must be at most n={cfg.n} values >= 0, one of them > 0; got "
            f"{','.join(f'{v:g}' for v in cfg.singular_values)}"
        )
    if cfg.rank > cfg.n:
        raise ValueError(f"rank {cfg.rank} exceeds n = {cfg.n}")
    if "hrp" in cfg.inits and cfg.preheat_rank < cfg.rank:
        raise ValueError(f"preheat_rank {cfg.preheat_rank} is below rank {cfg.rank}; HRP preheats at a higher rank")
    for lr in (cfg.lr, cfg.preheat_lr):
        if not lr > 0:
            raise ValueError(f"step sizes must be > 0; got {lr}")
    if not cfg.inits or not cfg.modes:
        raise ValueError("give at least one init (--inits) and one mode (--modes)")
    for name in cfg.inits:
        inits.entry(name)
    bad = [m for m in cfg.modes if m not in ("classic", "asymmetric")]
    if bad:
        raise ValueError(f"unknown mode {bad[0]!r}: choose classic and/or asymmetric")


def target_matrix(cfg: MFConfig) -> Tensor:
    """M = diag(s_1, ..., s_k, 0, ..., 0) (n x n): ``singular_values`` where given, else ``ones`` ones."""
    values = (
        torch.tensor(cfg.singular_values, dtype=torch.float64)
        if cfg.singular_values
        else torch.ones(cfg.ones, dtype=torch.float64)
    )
    return torch.diag(torch.cat([values, torch.zeros(cfg.n - len(values), dtype=torch.float64)]))


def optimal_loss(M: Tensor, rank: int) -> float:
    """Eckart-Young: 1/2 sum of the squared singular values beyond the r-th."""
    return 0.5 * float((torch.linalg.svdvals(M)[rank:] ** 2).sum())


def _loss(B: Tensor, A: Tensor, M: Tensor) -> Tensor:
    return 0.5 * ((B @ A - M) ** 2).sum((1, 2))  # (K,)


def train(
    A0: Tensor,
    B0: Tensor,
    M: Tensor,
    steps: int,
    lr: float | Tensor,
    *,
    freeze_A: bool,
    diverge_factor: float = float("inf"),
) -> tuple[Tensor, Tensor, Tensor]:
    """K runs of gradient descent on 1/2 ||B A - M||^2 from (A0 (K, r, n), B0 (K, n, r)), each at its own
    step size (``lr`` a float or (K,)); returns losses (steps+1, K), A, B."""
    return train_history(A0, B0, M, steps, lr, freeze_A=freeze_A, diverge_factor=diverge_factor)[:3]


def train_history(
    A0: Tensor,
    B0: Tensor,
    M: Tensor,
    steps: int,
    lr: float | Tensor,
    *,
    freeze_A: bool,
    diverge_factor: float = float("inf"),
) -> tuple[Tensor, Tensor, Tensor, batched.History]:
    """``train`` that also returns the batched history (divergence step and reason per run)."""
    A = A0.clone().requires_grad_(not freeze_A)
    B = B0.clone().requires_grad_(True)
    params = [B] if freeze_A else [A, B]

    def loss_fn(p, log):
        return _loss(p[0], A, M) if freeze_A else _loss(p[1], p[0], M), {}

    lrs = torch.as_tensor(lr, dtype=M.dtype).expand(A0.shape[0]).clone()
    hist = batched.fit(params, loss_fn, lrs, steps, opt=batched.SGD(), log_every=1, diverge_factor=diverge_factor)
    return hist.train_loss, A.detach(), B.detach(), hist


def preheat(cfg: MFConfig, M: Tensor, steps: int) -> list[inits.Factors]:
    """Each seed's rank-``preheat_rank`` classic LoRA, Init[A] (A ~ N(0, 1/n), B = 0), after ``steps`` steps."""
    W = torch.zeros_like(M)
    f = [inits.get("init_a")(W, cfg.preheat_rank, generator=generator("mf-preheat", s)) for s in range(cfg.seeds)]
    _, A, B = train(
        torch.stack([x.A for x in f]), torch.stack([x.B for x in f]), M, steps, cfg.preheat_lr, freeze_A=False
    )
    return [inits.Factors(A=A[s], B=B[s]) for s in range(cfg.seeds)]


def factors(cfg: MFConfig, M: Tensor, name: str, seed: int, preheated: inits.Factors | None) -> inits.Factors:
    """The initial factors of one (init, seed) run (``preheated``: that seed's preheat, for hrp)."""
    kw = SCHEME_KW.get(name, lambda n: {})(cfg.n)
    if name == "target":
        kw["target"] = M
    if name == "hrp":
        kw["preheated"] = preheated
    return inits.get(name)(torch.zeros_like(M), cfg.rank, generator=generator("mf-init", name, seed), **kw)


def initial_factors(cfg: MFConfig, M: Tensor, preheated: list[inits.Factors] | None) -> tuple[Tensor, Tensor]:
    """(A0, B0) of every (init, seed) run, init-major."""
    fs = [factors(cfg, M, name, s, preheated[s] if preheated else None) for name in cfg.inits for s in range(cfg.seeds)]
    return torch.stack([f.A for f in fs]), torch.stack([f.B for f in fs])


def steps_to_reach(curve: list[float], level: float) -> int | None:
    return next((t for t, v in enumerate(curve) if v <= level), None)


def summarize(per_seed: list[list[float]], level: float, preheat_steps: int = 0) -> dict:
    """Final loss (mean, s.e.m.) and steps until the loss first reaches ``level``, over seeds' curves."""
    reach = [steps_to_reach(c, level) for c in per_seed]
    final = torch.tensor([c[-1] for c in per_seed], dtype=torch.float64)
    reached = [r for r in reach if r is not None]
    mean = sum(reached) / len(reached) if reached else None
    return {
        "final_loss_mean": final.mean().item(),
        "final_loss_sem": (final.std() / math.sqrt(len(final))).item() if len(final) > 1 else None,
        "seeds_reaching_optimum": len(reached),
        "steps_to_optimum_mean": mean,
        "steps_to_optimum_mean_with_preheat": mean + preheat_steps if reached else None,
        "steps_to_optimum_per_seed": reach,
    }


def run(cfg: MFConfig) -> dict:
    """Train every (mode, init, seed); return curves and the analysis (JSON-ready)."""
    validate(cfg)
    M = target_matrix(cfg)
    best = optimal_loss(M, cfg.rank)
    pre = preheat(cfg, M, cfg.preheat_steps) if "hrp" in cfg.inits else None
    A0, B0 = initial_factors(cfg, M, pre)
    curves, summary = {}, {}
    for mode in cfg.modes:
        losses, _, _ = train(A0, B0, M, cfg.steps, cfg.lr, freeze_A=mode == "asymmetric")
        curves[mode], summary[mode] = {}, {}
        for i, name in enumerate(cfg.inits):
            per_seed = losses[:, i * cfg.seeds : (i + 1) * cfg.seeds].T.tolist()  # seeds x (steps+1)
            summary[mode][name] = summarize(
                per_seed, best * (1 + cfg.tolerance), cfg.preheat_steps if name == "hrp" else 0
            )
            curves[mode][name] = per_seed
    sweep = {}
    if "hrp" in cfg.inits:
        only_hrp = dataclasses.replace(cfg, inits=("hrp",))
        for t in cfg.preheat_sweep:
            A, B = initial_factors(only_hrp, M, preheat(cfg, M, t))
            sweep[str(t)] = {}
            for mode in cfg.modes:
                losses, _, _ = train(A, B, M, cfg.steps, cfg.lr, freeze_A=mode == "asymmetric")
                full = summarize(losses.T.tolist(), best * (1 + cfg.tolerance), t)
                sweep[str(t)][mode] = {
                    k: full[k]
                    for k in ("final_loss_mean", "seeds_reaching_optimum", "steps_to_optimum_mean_with_preheat")
                }
    return {
        "optimal_loss": best,
        "expected_random_asymmetric_loss": 0.5 * (1 - cfg.rank / cfg.n) * float((M**2).sum()),
        "summary": summary,
        "hrp_preheat_sweep": sweep,
        "curves": curves,
    }
