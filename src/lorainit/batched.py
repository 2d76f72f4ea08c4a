r"""Many independent training runs as one tensor program.

Every trainable tensor carries a leading run dimension K; run k has its own learning rate, its own
Adam moments and its own divergence record, and no arithmetic mixes runs (the total loss is a sum of
per-run losses, so d total / d theta_k = d loss_k / d theta_k). One forward/backward pass trains all
K runs: a learning-rate x seed x init grid of one width costs about one larger step instead of K.

The update is AdamW (Loshchilov & Hutter 2019) exactly as ``torch.optim.AdamW`` computes it:

    theta <- theta (1 - lr wd)
    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    theta <- theta - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

A run whose loss turns non-finite, or exceeds ``diverge_factor`` times its initial loss, is stopped at
that step: its parameters and moments are zeroed (so nothing non-finite is left to leak into shared
reductions), its later losses are recorded as NaN, and the step and reason are kept. Divergence
bookkeeping stays on the device; the loop never synchronizes with the host per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

NOT_DIVERGED = -1
REASONS = {0: None, 1: "non-finite loss", 2: "loss exploded"}


@dataclass(frozen=True)
class AdamW:
    """AdamW hyperparameters shared by all runs (the learning rate is per run)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class History:
    """What ``fit`` recorded; tensors are on the CPU, shapes use L = number of logged steps."""

    steps: list[int]  # the L logged step indices (0 = before any update, last = after the final update)
    train_loss: Tensor  # (L, K) per-run training loss, NaN after divergence
    metrics: dict[str, Tensor] = field(default_factory=dict)  # name -> (L, K)
    diverged_step: Tensor = None  # (K,) first step at which the run diverged, -1 if it never did
    reason: list[str | None] = field(default_factory=list)  # (K,) why it diverged


LossFn = Callable[[list[Tensor], bool], tuple[Tensor, dict[str, Tensor]]]  # (params, log) -> ((K,) loss, {name: (K,)})
EvalFn = Callable[[list[Tensor]], dict[str, Tensor]]  # params -> {name: (K,)} evaluated without grad


def fit(
    params: list[Tensor],
    loss_fn: LossFn,
    lr: Tensor,
    steps: int,
    *,
    opt: AdamW = AdamW(),
    log_every: int = 1,
    evaluate: EvalFn | None = None,
    diverge_factor: float = float("inf"),
    on_step: Callable[[int], None] | None = None,
) -> History:
    """Train ``params`` (each (K, ...), requires_grad) for ``steps`` AdamW steps with per-run ``lr`` (K,).

    ``loss_fn(params, log)`` returns the per-run training loss and, when ``log`` is true (logged steps
    only), per-run metrics computed in the same pass; ``evaluate`` (optional) returns extra per-run
    metrics at logged steps (e.g. test loss).
    """
    K = lr.shape[0]
    device = lr.device
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    alive = torch.ones(K, dtype=torch.bool, device=device)
    diverged = torch.full((K,), NOT_DIVERGED, dtype=torch.long, device=device)
    reason = torch.zeros(K, dtype=torch.long, device=device)
    log_steps = sorted(set(range(0, steps + 1, max(1, log_every))) | {steps})
    log_set = set(log_steps)
    logged: dict[str, list[Tensor]] = {"train_loss": []}
    initial = None
    for t in range(steps + 1):
        final = t == steps
        log = t in log_set
        with torch.set_grad_enabled(not final):
            loss, aux = loss_fn(params, log)  # (K,), {name: (K,)}
        with torch.no_grad():
            if initial is None:
                initial = loss.detach().clone()
            bad_value = ~torch.isfinite(loss)
            exploded = loss > diverge_factor * initial
            newly = alive & (bad_value | exploded)
            diverged = torch.where(newly, t, diverged)
            reason = torch.where(newly & bad_value, 1, torch.where(newly, 2, reason))
            alive = alive & ~newly
        if log:
            with torch.no_grad():
                nan = torch.full_like(loss, float("nan"))
                logged["train_loss"].append(torch.where(alive, loss.detach(), nan))
                extra = dict(aux)
                if evaluate is not None:
                    extra.update(evaluate(params))
                for name, value in extra.items():
                    logged.setdefault(name, []).append(torch.where(alive, value.detach(), nan))
        if final:
            break
        total = torch.where(alive, loss, torch.zeros_like(loss)).sum()
        grads = torch.autograd.grad(total, params)
        with torch.no_grad():
            _adamw_step(params, grads, m, v, lr, alive, t + 1, opt)
        if on_step is not None:
            on_step(t + 1)
    stacked = {name: torch.stack(values).cpu() for name, values in logged.items()}
    return History(
        steps=log_steps,
        train_loss=stacked.pop("train_loss"),
        metrics=stacked,
        diverged_step=diverged.cpu(),
        reason=[REASONS[int(c)] for c in reason.cpu()],
    )


def _adamw_step(params, grads, m, v, lr: Tensor, alive: Tensor, t: int, opt: AdamW) -> None:
    """One AdamW step for every live run; stopped runs are reset to zero parameters and moments."""
    bc1 = 1 - opt.beta1**t
    bc2 = 1 - opt.beta2**t
    for p, g, m_, v_ in zip(params, grads, m, v):
        shape = (-1,) + (1,) * (p.ndim - 1)  # broadcast (K,) over the parameter's own dims
        lr_k = lr.view(shape)
        keep = alive.view(shape)
        if opt.weight_decay:
            p.mul_(1 - lr_k * opt.weight_decay)
        m_.mul_(opt.beta1).add_(g, alpha=1 - opt.beta1)
        v_.mul_(opt.beta2).addcmul_(g, g, value=1 - opt.beta2)
        denom = (v_.sqrt() / bc2**0.5).add_(opt.eps)
        p.sub_((lr_k / bc1) * m_ / denom)
        for x in (p, m_, v_):
            x.copy_(torch.where(keep, x, torch.zeros_like(x)))
