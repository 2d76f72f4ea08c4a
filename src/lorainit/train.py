r"""The training loop for real (transformers/PEFT) models: AdamW, linear warmup then linear decay,
LoRA+ learning-rate ratio, gradient accumulation, periodic evaluation, JSONL log, exact resume.

Per step t (of T, warmup W = ceil(warmup_ratio T)) the learning rate of a group is

    lr_t = lr_group * (t + 1) / W            for t < W
    lr_t = lr_group * (T - t) / (T - W)      otherwise

with lr_group = lr for ``lora_A`` and other trainable tensors and lr * loraplus_ratio for ``lora_B``
(Hayou et al. 2024b, LoRA+). Which examples step t sees, and its dropout masks, depend on (seed, t)
only, so a run resumed from a checkpoint continues exactly as if it had never stopped. Checkpoints
are safetensors (trainable tensors, AdamW moments) plus JSON, written to a temporary folder and
renamed: a crash leaves the previous checkpoint intact. Under torch.distributed (each process on its
shard of every global batch) the gradients are averaged over the processes, by DistributedDataParallel
where ``model`` is wrapped in it, else here: in buckets during the backward where the optimizer offers it
(``runopt.RunAdamW``), or after the backward (one all-reduce per dtype); the logged loss is averaged over
processes, and only rank 0 writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import divergence, speed
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


def save_checkpoint(path: Path, model: nn.Module, opt, step: int, extra: dict) -> None:
    """The optimizer's parameters and moments (``opt.state_tensors()`` where it has them, else per named tensor)."""
    from safetensors.torch import save_file

    tensors = (
        {k: v.contiguous() for k, v in opt.state_tensors().items()}
        if hasattr(opt, "state_tensors")
        else _named_state(opt)
    )
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".checkpoint."))
    try:
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=1))
        old = path.parent / ".checkpoint.old"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _named_state(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """A torch optimizer's trainable tensors and AdamW moments, by the names its groups carry."""
    tensors = {
        f"param.{n}": p.detach().contiguous().cpu() for g in opt.param_groups for n, p in zip(g["names"], g["params"])
    }
    for g in opt.param_groups:
        for n, p in zip(g["names"], g["params"]):
            st = opt.state.get(p)
            if st:
                tensors[f"exp_avg.{n}"] = st["exp_avg"].contiguous().cpu()
                tensors[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].contiguous().cpu()
                tensors[f"step.{n}"] = torch.as_tensor(st["step"]).reshape(1).float().cpu()
    return tensors


def recover_checkpoint(path: Path) -> None:
    """Undo a save killed between its two renames: the previous checkpoint, moved aside to .checkpoint.old, comes back."""
    old = Path(path).parent / ".checkpoint.old"
    if old.is_dir() and (old / "state.json").exists():
        if Path(path).exists():
            shutil.rmtree(old)  # the new one landed: the old one is what was left to delete
        else:
            os.replace(old, path)


def load_checkpoint(path: Path, opt) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(path / "state.safetensors")
    if hasattr(opt, "load_state_tensors"):
        opt.load_state_tensors(tensors)
        return json.loads((path / "state.json").read_text())
    with torch.no_grad():
        for g in opt.param_groups:
            for n, p in zip(g["names"], g["params"]):
                p.copy_(tensors[f"param.{n}"])
                if f"exp_avg.{n}" in tensors:
                    step = tensors[f"step.{n}"].reshape(())  # the fused kernel keeps it beside the parameter
                    opt.state[p] = {
                        "step": step.to(p.device) if opt.defaults.get("fused") else step.clone(),
                        "exp_avg": tensors[f"exp_avg.{n}"].to(p.device),
                        "exp_avg_sq": tensors[f"exp_avg_sq.{n}"].to(p.device),
                    }
    return json.loads((path / "state.json").read_text())


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
    ``record()`` is logged with each step, and once its ``all_diverged`` is true the loop stops.
    ``optimizer``: an optimizer built by the caller (with ``param_groups`` holding "lr" and "base_lr"), instead of
    AdamW over ``groups``; it may train tensors outside ``model`` (HRP's preheat: hooks' factors). ``local``: this
    process trains alone even under torchrun (no loss or gradient averaging: every process runs the same data). Returns {"steps", "seconds", "tokens", "resumed_from"}; every record also goes to ``log``
    (a step's with "elapsed": wall seconds since this process's loop began, evaluations included, so steady-state
    speed can be read past the first steps' warm-up)."""
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
    for step in bar:
        if evaluate is not None and step % cfg.eval_every == 0:
            log({"step": step, **evaluate(step)})
            model.train()
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, cfg)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            if sync is not None and micro == cfg.grad_accum - 1:
                sync.arm()
            torch.manual_seed(derive_seed("dropout", cfg.seed, step, micro))  # dropout masks depend on the step only
            batch = batch_at(step, micro)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = loss_fn(model, batch) / cfg.grad_accum
            loss.backward()
            total += loss.item()
            if isinstance(batch, dict) and "attention_mask" in batch:  # counted on the device: no wait per step
                tokens = tokens + batch["attention_mask"].sum()
        if sync is not None:
            sync.finish()
        elif dist and core is model:
            average_gradients(gradients_of(opt), world)
        if dist:  # the logged loss is the mean over the processes' shards of the global batch
            t = torch.tensor([total], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            total = t[0].item() / world
        first = total if first is None else first
        why = divergence.reason(total, first, cfg.diverge_factor)
        if why:
            log({"step": step, "diverged": True, "reason": why, "loss": total})
            raise FloatingPointError(f"{why} at step {step} (lr {cfg.lr:g}): the run diverged; lower the learning rate")
        opt.step()
        log(
            {
                "step": step,
                "loss": total,
                "lr": opt.param_groups[0]["lr"],
                "elapsed": round(time.perf_counter() - t0, 4),
                **(loss_fn.record() if hasattr(loss_fn, "record") else {}),
            }
        )
        bar.set_postfix(loss=f"{total:.4f}")
        if getattr(loss_fn, "all_diverged", False):  # every run of a batched loss is dead: nothing left to train
            log({"step": step + 1, "stopped": "every run diverged"})
            break
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps and rank == 0:
            stateful = {"loss_state": loss_fn.checkpoint_state()} if hasattr(loss_fn, "checkpoint_state") else {}
            save_checkpoint(ckpt, core, opt, step + 1, {"first_loss": first, "processes": world, **stateful})
    bar.close()
    if evaluate is not None and not getattr(loss_fn, "all_diverged", False):
        log({"step": cfg.steps, **evaluate(cfg.steps)})
    return {
        "steps": cfg.steps,
        "seconds": time.perf_counter() - t0,
        "tokens": int(tokens) * world,
        "resumed_from": start,
        "processes": world,
    }
