r"""The training loop for real (transformers/PEFT) models: AdamW, linear warmup then linear decay,
LoRA+ learning-rate ratio, gradient accumulation, periodic evaluation, JSONL log, exact resume.

Per step t (of T, warmup W = ceil(warmup_ratio T)) the learning rate of a group is

    lr_t = lr_group * (t + 1) / W            for t < W
    lr_t = lr_group * (T - t) / (T - W)      otherwise

with lr_group = lr for ``lora_A`` and other trainable tensors and lr * loraplus_ratio for ``lora_B``
(Hayou et al. 2024b, LoRA+). Which examples step t sees, and its dropout masks, depend on (seed, t)
only, so a run resumed from a checkpoint continues exactly as if it had never stopped. Checkpoints
(``lorainit.checkpoint``: trainable tensors, AdamW moments and the loop's state) are written by a background thread
while the next steps train; a crash leaves the previous checkpoint intact. Under torch.distributed (each process on its
shard of every global batch) the gradients are averaged over the processes, by DistributedDataParallel
where ``model`` is wrapped in it, else here: in buckets during the backward where the optimizer offers it
(``runopt.RunAdamW``), or after the backward (one all-reduce per dtype); the logged loss is averaged over
processes, and only rank 0 writes checkpoints. The host does not wait for the GPU between steps: a step's loss is
read back without a wait and logged (and judged) at the next step's start.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import divergence, speed
from .checkpoint import Writer, load_checkpoint, recover_checkpoint, save_checkpoint
from .runfolder import RunFolder
from .seeding import derive_seed


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    lr: float
    warmup_ratio: float = 0.03
    grad_accum: int = 1
    loraplus_ratio: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0
    diverge_factor: float = divergence.FINETUNE_FACTOR  # the divergence rule's factor (lorainit.divergence)
    schedule: str = (
        "linear"  # "linear": warmup, then linear decay to 0 (fine-tunes); "constant": lr throughout (HRP's preheat)
    )


def param_groups(model: nn.Module, cfg: LoopConfig) -> list[dict]:
    """lora_B tensors at lr * loraplus_ratio, every other trainable tensor at lr (fixed, documented order)."""
    b = [(n, p) for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n]
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and "lora_B" not in n]
    groups = [{"params": [p for _, p in rest], "names": [n for n, _ in rest], "lr": cfg.lr, "base_lr": cfg.lr}]
    if b:
        lr_b = cfg.lr * cfg.loraplus_ratio
        groups.append({"params": [p for _, p in b], "names": [n for n, _ in b], "lr": lr_b, "base_lr": lr_b})
    return groups


def lr_factor(step: int, cfg: LoopConfig) -> float:
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule != "linear":
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use 'linear' or 'constant'")
    warm = math.ceil(cfg.warmup_ratio * cfg.steps)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))


def gradients_of(opt) -> list[torch.Tensor]:
    """The gradients an optimizer steps on: its buffers (``opt.gradients()``), else each parameter's (zeros where
    missing, so that every process of a data-parallel run sends the same tensors)."""
    if hasattr(opt, "gradients"):
        return opt.gradients()
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
    return [p.grad for p in params]


def average_gradients(grads: list[torch.Tensor], world: int) -> None:
    """Average ``grads`` over the ``world`` processes: one all-reduce per dtype over the flattened gradients."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        torch.distributed.all_reduce(flat)
        flat.div_(world)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def train(
    model: nn.Module,
    batch_at: Callable[[int, int], object],
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    cfg: LoopConfig,
    out: Path,
    *,
    evaluate: Callable[[int], dict] | None = None,
    progress: bool = True,
    autocast: torch.dtype | None = None,
    log: Callable[[dict], None] = lambda rec: None,
    groups: list[dict] | None = None,
    optimizer=None,
    local: bool = False,
) -> dict:
    """Run (or resume) the loop; ``batch_at(step, micro)`` gives micro-batch ``micro`` of step ``step``.
    A ``loss_fn`` with state (``runloss.RunLosses``: each run's divergence record) offers ``checkpoint_state()``
    (JSON-ready) and ``load_checkpoint_state(state)``, and that state is checkpointed with the loop; its
    ``record()`` is logged with each step, and once its ``all_diverged`` is true the loop stops. A step's record is
    logged when its loss has reached the host, at the next step's start (no wait between steps), or before its
    optimizer step where the loop judges divergence itself (a finite ``cfg.diverge_factor``).
    ``optimizer``: an optimizer built by the caller (with ``param_groups`` holding "lr" and "base_lr"), instead of
    AdamW over ``groups``; it may train tensors outside ``model`` (HRP's preheat: hooks' factors). ``local``: this
    process trains alone even under torchrun (no loss or gradient averaging: every process runs the same data). Returns {"steps", "seconds", "tokens", "resumed_from"}; every record also goes to ``log``
    (a step's with "elapsed": wall seconds from this process's loop start to when the step's loss reached the host,
    evaluations included, so steady-state speed can be read past the first steps' warm-up)."""
    core = getattr(model, "module", model)  # a DistributedDataParallel wrapper trains its module
    dist = not local and torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
    if optimizer is not None:  # built by the caller (lorainit.multi's runs: one AdamW with per-run learning rates)
        opt = optimizer
    else:
        groups = param_groups(core, cfg) if groups is None else groups  # each: {"params", "names", "lr", "base_lr"}
        opt = speed.adamw(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    ckpt = RunFolder(out).checkpoint
    recover_checkpoint(ckpt)
    start, first = 0, None
    if ckpt.exists():
        state = load_checkpoint(ckpt, opt)
        start, first = state["step"], state.get("first_loss")
        if "loss_state" in state:
            loss_fn.load_checkpoint_state(state["loss_state"])
    trained = next((p for p in core.parameters() if p.requires_grad), None)  # (else the optimizer's own: HRP's preheat)
    device = (trained if trained is not None else next(p for g in opt.param_groups for p in g["params"])).device
    model.train()
    t0, tokens = time.perf_counter(), 0
    # a plain model under torchrun: its gradients are averaged here (DDP would have), during the last micro-batch's
    # backward where the optimizer offers it (``runopt.BucketedAllReduce``), else after it
    sync = opt.gradient_sync(world) if dist and core is model and hasattr(opt, "gradient_sync") else None
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc="finetune",
        unit="step",
        disable=not progress,
        mininterval=2.0,
    )
    # A step's summed loss reaches the host without a wait (``speed.Readback``) and its record is logged at the next
    # step's start: the host launches step t + 1 while the GPU still runs step t's backward. A loop that judges the
    # summed loss itself (a finite ``diverge_factor``) reads it before the optimizer step instead, as it must.
    wait = math.isfinite(cfg.diverge_factor)
    pending = None  # (step, its loss's readback, its record so far)

    def settle() -> None:
        nonlocal pending, first
        if pending is None:
            return
        (at, value, rec), pending = pending, None
        total = value.values()  # (a 0-d tensor's value)
        first = total if first is None else first
        why = divergence.reason(total, first, cfg.diverge_factor)
        if why:
            log({"step": at, "diverged": True, "reason": why, "loss": total})
            raise FloatingPointError(f"{why} at step {at} (lr {cfg.lr:g}): the run diverged; lower the learning rate")
        rec["elapsed"] = round(time.perf_counter() - t0, 4)  # (when the step's loss reached the host)
        log({"step": at, "loss": total, **rec, **(loss_fn.record() if hasattr(loss_fn, "record") else {})})
        bar.set_postfix(loss=f"{total:.4f}", refresh=False)

    writer = Writer()  # checkpoints are written while the next steps train
    try:
        for step in bar:
            settle()
            if getattr(loss_fn, "all_diverged", False):  # every run of a batched loss is dead: nothing left to train
                log({"step": step, "stopped": "every run diverged"})
                break
            if evaluate is not None and step % cfg.eval_every == 0:
                log({"step": step, **evaluate(step)})
                model.train()
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_factor(step, cfg)
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for micro in range(cfg.grad_accum):
                if sync is not None and micro == cfg.grad_accum - 1:
                    sync.arm()
                # dropout masks depend on the step only
                torch.manual_seed(derive_seed("dropout", cfg.seed, step, micro))
                batch = batch_at(step, micro)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    loss = loss_fn(model, batch) / cfg.grad_accum
                loss.backward()
                total += loss.detach()
                if isinstance(batch, dict) and "attention_mask" in batch:  # counted on the device: no wait per step
                    tokens = tokens + batch["attention_mask"].sum()
            if sync is not None:
                sync.finish()
            elif dist and core is model:
                average_gradients(gradients_of(opt), world)
            if dist:  # the logged loss is the mean over the processes' shards of the global batch
                torch.distributed.all_reduce(total)
                total /= world
            pending = (step, speed.Readback(total), {"lr": opt.param_groups[0]["lr"]})
            if wait:
                settle()
            opt.step()
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps and rank == 0:
                settle()
                stateful = {"loss_state": loss_fn.checkpoint_state()} if hasattr(loss_fn, "checkpoint_state") else {}
                save_checkpoint(
                    ckpt, core, opt, step + 1, {"first_loss": first, "processes": world, **stateful}, writer=writer
                )
        else:
            settle()
    except BaseException:
        with contextlib.suppress(Exception):  # (the loop's own error is the one to see)
            writer.join()
        raise
    finally:
        bar.close()
    writer.join()
    if evaluate is not None and not getattr(loss_fn, "all_diverged", False):
        log({"step": cfg.steps, **evaluate(cfg.steps)})
    return {
        "steps": cfg.steps,
        "seconds": time.perf_counter() - t0,
        "tokens": int(tokens) * world,
        "resumed_from": start,
        "processes": world,
    }
