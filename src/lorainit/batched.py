r"""Many independent training runs as one tensor program.

Every trainable tensor carries a leading run dimension K; run k has its own learning rate, its own
Adam moments and its own divergence record, and no arithmetic mixes runs (the total loss is a sum of
per-run losses, so d total / d theta_k = d loss_k / d theta_k). One forward/backward pass trains all
K runs: a learning-rate x seed x init grid of one width costs about one larger step instead of K.

The update is AdamW (Loshchilov & Hutter 2019) exactly as ``torch.optim.AdamW`` computes it:

    theta <- theta (1 - lr wd)
    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    theta <- theta - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

A run that has diverged (``lorainit.divergence``: its loss non-finite, or above ``diverge_factor`` times its
initial loss) is stopped at that step: its parameters and moments are zeroed (so nothing non-finite is left to leak into shared
reductions), its later losses are recorded as NaN, and the step and reason are kept. Divergence
bookkeeping stays on the device; the loop never synchronizes with the host per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from . import divergence

NOT_DIVERGED = -1
WARMUP = 3  # eager steps before a CUDA graph of the step is captured
REASONS = divergence.REASONS  # (by code)


@dataclass(frozen=True)
class AdamW:
    """AdamW hyperparameters shared by all runs (the learning rate is per run)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent, theta <- theta - lr g (gradient flow's discretization), per-run lr."""


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
    opt: AdamW | SGD = AdamW(),
    log_every: int = 1,
    evaluate: EvalFn | None = None,
    diverge_factor: float = float("inf"),
    on_step: Callable[[int], None] | None = None,
    cuda_graph: bool | None = None,
) -> History:
    """Train ``params`` (each (K, ...), requires_grad) for ``steps`` AdamW steps with per-run ``lr`` (K,).

    ``loss_fn(params, log)`` returns the per-run training loss and, when ``log`` is true, per-run
    metrics; ``evaluate`` (optional) returns extra per-run metrics (e.g. test loss). Both metric kinds
    are computed at logged steps in a separate no-grad pass before that step's update. On CUDA the
    training step (forward, backward, bookkeeping, update) is captured once as a CUDA graph and
    replayed (``cuda_graph=False`` turns this off): the step is launch-bound for small models.
    """
    device = lr.device
    use_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
    st = _State(params, lr, opt, diverge_factor)
    log_steps = sorted(set(range(0, steps + 1, max(1, log_every))) | {steps})
    log_set = set(log_steps)
    logged: dict[str, list[Tensor]] = {"train_loss": []}
    graph = None
    for t in range(steps):
        if t in log_set:
            metrics = _metrics(params, loss_fn, evaluate)
        if graph is None and use_graph and t == WARMUP:
            graph = _capture(lambda: st.step(loss_fn))
        if graph is not None:
            graph.replay()
        elif use_graph:  # warm-up steps on a side stream, as graph capture requires
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                st.step(loss_fn)
            torch.cuda.current_stream().wait_stream(side)
        else:
            st.step(loss_fn)
        if t in log_set:
            _record(logged, st, st.last_loss, metrics)
        if on_step is not None:
            on_step(t + 1)
    with torch.no_grad():
        loss, aux = loss_fn(params, True)
        st.check(loss)
        _record(logged, st, loss, {**aux, **(evaluate(params) if evaluate else {})})
    stacked = {name: torch.stack(values).cpu() for name, values in logged.items()}
    return History(
        steps=log_steps,
        train_loss=stacked.pop("train_loss"),
        metrics=stacked,
        diverged_step=st.diverged.cpu(),
        reason=[REASONS[int(c)] for c in st.reason.cpu()],
    )


class _State:
    """Everything one training step reads and writes, as device tensors updated in place (graph-safe)."""

    def __init__(self, params: list[Tensor], lr: Tensor, opt: AdamW | SGD, diverge_factor: float):
        K, device = lr.shape[0], lr.device
        self.params, self.lr, self.opt = params, lr, opt
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.alive = torch.ones(K, dtype=torch.bool, device=device)
        self.diverged = torch.full((K,), NOT_DIVERGED, dtype=torch.long, device=device)
        self.reason = torch.zeros(K, dtype=torch.long, device=device)
        self.t = torch.zeros((), dtype=torch.long, device=device)  # updates done so far
        self.initial = torch.full((K,), float("inf"), dtype=lr.dtype, device=device)
        self.factor = diverge_factor
        self.b1_pow = torch.ones((), dtype=lr.dtype, device=device)  # beta1^t, for bias correction
        self.b2_pow = torch.ones((), dtype=lr.dtype, device=device)
        self.last_loss = torch.zeros(K, dtype=lr.dtype, device=device)

    def check(self, loss: Tensor) -> None:
        """Record runs whose loss is non-finite or above ``factor`` x their initial loss at step t."""
        self.initial.copy_(torch.where(self.t == 0, loss.detach(), self.initial))
        code = divergence.codes(loss, self.initial, self.factor)  # (K,) lorainit.divergence's rule
        newly = self.alive & (code > 0)
        self.diverged.copy_(torch.where(newly, self.t, self.diverged))
        self.reason.copy_(torch.where(newly, code, self.reason))
        self.alive &= ~newly

    def step(self, loss_fn: LossFn) -> None:
        loss, _ = loss_fn(self.params, False)  # (K,)
        with torch.no_grad():
            self.check(loss)
            self.last_loss.copy_(loss.detach())
        total = torch.where(self.alive, loss, torch.zeros_like(loss)).sum()
        grads = torch.autograd.grad(total, self.params)
        with torch.no_grad():
            self.t += 1
            if isinstance(self.opt, SGD):
                _sgd_step(self.params, grads, self.lr, self.alive)
                return
            self.b1_pow.mul_(self.opt.beta1)
            self.b2_pow.mul_(self.opt.beta2)
            _adamw_step(
                self.params, grads, self.m, self.v, self.lr, self.alive, 1 - self.b1_pow, 1 - self.b2_pow, self.opt
            )


def _metrics(params, loss_fn: LossFn, evaluate: EvalFn | None) -> dict[str, Tensor]:
    with torch.no_grad():
        _, aux = loss_fn(params, True)
        return {**aux, **(evaluate(params) if evaluate is not None else {})}


def _record(logged: dict[str, list[Tensor]], st: _State, loss: Tensor, metrics: dict[str, Tensor]) -> None:
    """Append this step's values; runs stopped at or before it read NaN."""
    nan = torch.full_like(st.last_loss, float("nan"))
    logged["train_loss"].append(torch.where(st.alive, loss.detach(), nan))
    for name, value in metrics.items():
        logged.setdefault(name, []).append(torch.where(st.alive, value.detach(), nan))


def _capture(step: Callable[[], None]) -> "torch.cuda.CUDAGraph":
    """Record one training step as a CUDA graph; capturing runs nothing, so no step is lost or doubled."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def _adamw_step(params, grads, m, v, lr: Tensor, alive: Tensor, bc1: Tensor, bc2: Tensor, opt: AdamW) -> None:
    """One AdamW step for every live run; stopped runs are reset to zero parameters and moments."""
    for p, g, m_, v_ in zip(params, grads, m, v):
        shape = (-1,) + (1,) * (p.ndim - 1)  # broadcast (K,) over the parameter's own dims
        lr_k = lr.view(shape)
        keep = alive.view(shape)
        if opt.weight_decay:
            p.mul_(1 - lr_k * opt.weight_decay)
        m_.mul_(opt.beta1).add_(g, alpha=1 - opt.beta1)
        v_.mul_(opt.beta2).addcmul_(g, g, value=1 - opt.beta2)
        denom = (v_.sqrt() / bc2.sqrt()).add_(opt.eps)
        p.sub_((lr_k / bc1) * m_ / denom)
        for x in (p, m_, v_):
            x.copy_(torch.where(keep, x, torch.zeros_like(x)))


def _sgd_step(params, grads, lr: Tensor, alive: Tensor) -> None:
    """theta <- theta - lr g for live runs; stopped runs are reset to zero."""
    for p, g in zip(params, grads):
        shape = (-1,) + (1,) * (p.ndim - 1)
        p.sub_(lr.view(shape) * g)
        p.copy_(torch.where(alive.view(shape), p, torch.zeros_like(p)))
