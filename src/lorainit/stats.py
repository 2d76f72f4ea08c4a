"""The one data pass a data-dependent init needs, on a PEFT LoRA model or a plain model.

Data arrive one way for every scheme: an iterable of batches and ``loss_fn(model, batch) -> scalar``
(default: ``model(**batch).loss``, the transformers convention). ``layers`` maps names to PEFT LoRA
layers (the pass reads their base layers, with the model's adapters disabled) or to plain linear
layers of a model that has no adapters (``lorainit.multi`` runs the pass before attaching its own).

- ``gradients``: dL/dW of the frozen base weights at the pretrained point (adapters disabled),
  averaged over the batches. Layers are processed in groups whose gradients fit ``budget_mb``; each
  group costs one pass over the data and its gradients are handed out and freed before the next, so
  the full gradients of all layers are never held at once.
- ``activation_scatter``: per layer, the square root of the centred scatter matrix of its inputs
  (in x in), accumulated batch by batch (no activations are stored), in groups within ``budget_mb``
  like the gradients.
- ``preheat``: HRP's preheat, a temporary rank-r_p adapter trained with AdamW for a few steps; the
  adapter is a forward hook on each base layer (out + s (x A_p^T) B_p^T), so it needs no PEFT.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from . import train
from .inits import Factors

LossFn = Callable[[nn.Module, object], Tensor]


def default_loss(model: nn.Module, batch) -> Tensor:
    return model(**batch).loss


def base_layer(layer) -> nn.Module:
    """The frozen layer under a PEFT LoRA layer, or ``layer`` itself when it is a plain one."""
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer


def base_weight(layer) -> Tensor:
    """A layer's base weight as (out, in), whatever its storage (a PEFT Conv1D layer stores (in, out))."""
    w = base_layer(layer).weight
    return w.T if getattr(layer, "fan_in_fan_out", False) else w


def adapters_off(model):
    """A context in which the model computes its base function: PEFT's ``disable_adapter``, else nothing to do."""
    off = getattr(model, "disable_adapter", None)
    return off() if callable(off) else contextlib.nullcontext()


def budget_groups(sizes_mb: dict[str, float], budget_mb: float) -> list[list[str]]:
    """Consecutive names whose sizes sum to at most ``budget_mb`` (a name larger than the budget alone)."""
    groups, current, size = [], [], 0.0
    for name, mb in sizes_mb.items():
        if current and size + mb > budget_mb:
            groups.append(current)
            current, size = [], 0.0
        current.append(name)
        size += mb
    return groups + ([current] if current else [])


def gradients(
    model, layers: dict[str, nn.Module], data: Iterable, loss_fn: LossFn = default_loss, *, budget_mb: float = 1024.0
) -> Iterator[tuple[str, Tensor]]:
    """Yield (layer name, mean dL/dW as (out, in) float32), group by group, at the pretrained point."""
    batches = list(data)
    if not batches:
        raise ValueError("no batches given: gradient-based inits need at least one batch of training data")
    params = [p for p in model.parameters()]
    was = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        for group in budget_groups({n: base_layer(m).weight.numel() * 4 / 2**20 for n, m in layers.items()}, budget_mb):
            weights = [base_layer(layers[n]).weight for n in group]
            for w in weights:
                w.requires_grad_(True)
                w.grad = None
            with adapters_off(model):
                for batch in batches:
                    loss_fn(model, batch).backward()
            for name, w in zip(group, weights):
                g = w.grad.float() / len(batches)
                w.grad = None
                w.requires_grad_(False)
                yield name, (g.T if getattr(layers[name], "fan_in_fan_out", False) else g)
    finally:
        for p, r in zip(params, was):
            p.requires_grad_(r)


def _shared_inputs(model, layers: dict[str, nn.Module], batch, loss_fn: LossFn) -> dict[str, str]:
    """layer -> the first layer fed the very same input tensor (itself if none), from one forward on ``batch``
    (each input is held until the forward ends, so tensor identity is safe: no address is reused)."""
    owner: dict[str, str] = {}
    held: dict[int, tuple[Tensor, str]] = {}

    def hook(name):
        def record(_module, args):
            if name not in owner:
                h = held.get(id(args[0]))
                owner[name] = h[1] if h is not None and h[0] is args[0] else name
                held[id(args[0])] = (args[0], owner[name])

        return record

    handles = [base_layer(layers[n]).register_forward_pre_hook(hook(n)) for n in layers]
    try:
        with torch.no_grad(), adapters_off(model):
            loss_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in owner]
    if missing:
        raise ValueError(f"layer {missing[0]} saw no input in the given batches: is it used by the model's forward?")
    return owner


def activation_scatter(
    model,
    layers: dict[str, nn.Module],
    data: Iterable,
    loss_fn: LossFn = default_loss,
    *,
    budget_mb: float = 1024.0,
    keep: int | None = None,
) -> Iterator[tuple[str, Tensor]]:
    """Yield (layer name, R) with R^T R = sum_i (x_i - mean)(x_i - mean)^T over every input row the layer saw:
    R = diag(sqrt(l)) V^T from the eigendecomposition of that centred scatter (in x in, float64), or only its
    ``keep`` leading rows (the top eigen-directions, which is all EVA uses).

    Layers fed the very same input (q/k/v, gate/up in a Llama block) share one accumulator and one R (7 -> 4
    matrices per Llama block). Accumulators are held ``budget_mb`` at a time: each group costs one pass over
    the data (plus one forward on the first batch to find the shared inputs), and is handed out and freed
    before the next, so the in x in matrices of all layers never exist at once."""
    batches = list(data)
    if not batches:
        raise ValueError("no batches given: activation-based inits need at least one batch of training data")
    owner = _shared_inputs(model, layers, batches[0], loss_fn)
    sizes = {n: base_weight(layers[n]).shape[1] ** 2 * 8 / 2**20 for n in layers if owner[n] == n}
    for group in budget_groups(sizes, budget_mb):
        acc: dict[str, list] = {}  # owner -> [count, sum (in,), second moment (in, in)], float64

        def hook(name):
            def record(_module, args):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (tokens, in)
                a = acc.setdefault(name, [0, None, None])
                a[0] += x.shape[0]
                a[1] = x.sum(0) if a[1] is None else a[1] + x.sum(0)
                a[2] = x.T @ x if a[2] is None else a[2].addmm_(x.T, x)

            return record

        handles = [base_layer(layers[n]).register_forward_pre_hook(hook(n)) for n in group]
        try:
            with torch.no_grad(), adapters_off(model):
                for batch in batches:
                    loss_fn(model, batch)
        finally:
            for h in handles:
                h.remove()
        for name in group:
            n, s, m2 = acc.pop(name)
            evals, evecs = torch.linalg.eigh(m2 - torch.outer(s, s) / n)  # centred scatter; ascending eigenvalues
            del m2
            k = evals.shape[0] if keep is None else min(keep, evals.shape[0])
            top = slice(evals.shape[0] - k, None)
            R = (evals[top].clamp_min(0).sqrt()[:, None] * evecs[:, top].T).flip(0).float()  # (k, in), largest first
            del evals, evecs
            for layer in layers:
                if owner[layer] == name:
                    yield layer, R


def preheat(
    model,
    layers: dict[str, nn.Module],
    data: Iterable,
    loss_fn: LossFn = default_loss,
    *,
    rank: int,
    steps: int,
    lr: float,
    seed: int = 0,
) -> dict[str, Factors]:
    """HRP's preheat: a temporary rank-``rank`` adapter (Init[A]: A ~ N(0, 1/in), B = 0, scaling 1) on the same
    layers, ``steps`` AdamW steps (constant ``lr``) of the one training loop (``train.train``) on ``loss_fn``
    cycling through ``data`` with the model's own adapters off; returns each layer's preheated factors (B_p, A_p).
    Every other parameter keeps its value and its requires_grad. A loss that diverges (``lorainit.divergence``, the
    fine-tunes' factor) stops it with a FloatingPointError."""
    from . import inits
    from .seeding import generator

    batches = list(data)
    if not batches:
        raise ValueError("no batches given: HRP's preheat needs training data")
    temp: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
    for name, layer in layers.items():
        W = base_weight(layer)
        f = inits.get("init_a")(W.detach().float(), rank, generator=generator("hrp-preheat", seed, name))
        temp[name] = (nn.Parameter(f.A.to(W.device)), nn.Parameter(f.B.to(W.device)))  # (r_p, in), (out, r_p), fp32

    def hook(name):
        A, B = temp[name]

        def add(_module, args, out):  # out + (x A_p^T) B_p^T in the adapter's dtype, as PEFT adds a LoRA
            return out + ((args[0].to(A.dtype) @ A.T) @ B.T).to(out.dtype)

        return add

    params = list(model.parameters())
    was, mode = [p.requires_grad for p in params], model.training
    handles = [base_layer(layers[n]).register_forward_hook(hook(n)) for n in layers]
    try:
        for p in params:
            p.requires_grad_(False)
        # the one loop (lorainit.train): constant lr, no checkpoint, this process alone, the global RNG left as it was
        opt = torch.optim.AdamW(
            [{"params": [t for pair in temp.values() for t in pair], "base_lr": lr}], lr=lr, weight_decay=0.0
        )
        loop = train.LoopConfig(
            steps=steps, lr=lr, schedule="constant", warmup_ratio=0.0, eval_every=steps + 1, checkpoint_every=steps + 1
        )
        device = next(iter(temp.values()))[0].device
        with (
            adapters_off(model),
            tempfile.TemporaryDirectory() as out,
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            try:
                train.train(
                    model,
                    lambda step, micro: batches[step % len(batches)],
                    loss_fn,
                    loop,
                    out,
                    progress=False,
                    optimizer=opt,
                    local=True,
                )
            except (
                FloatingPointError
            ) as e:  # (the rule of every loop, lorainit.divergence): diverged factors mean nothing
                raise FloatingPointError(f"HRP's preheat: {e} (here the learning rate is preheat_lr)") from None
    finally:
        for h in handles:
            h.remove()
        for p, r in zip(params, was):
            p.requires_grad_(r)
        model.train(mode)
    return {name: Factors(A=A.detach(), B=B.detach()) for name, (A, B) in temp.items()}
