r"""K LoRA fine-tunes of one frozen base model in one process and one forward/backward per step.

Every target ``nn.Linear`` (W: out x in) becomes a ``MultiLoRALinear`` holding K adapters
(``lora_A[k]``: r x in, ``lora_B[k]``: out x r, scaling s_k). A step's input is the K runs' own
micro-batches stacked along the batch dimension (run k owns rows k*b .. (k+1)*b - 1); the frozen base
computes x W^T for all rows in one GEMM and each run adds its own update (LoRA, Hu et al. 2021, eq. 3):

    y_k = x_k W^T + s_k (x_k A_k^T) B_k^T          (two batched matmuls over k)

Rows never mix (attention and normalization act within a sequence), so run k's loss depends on its
own adapter and data only, and the sum of the runs' losses gives each adapter exactly its own gradient.
Each run has its own AdamW parameter groups (its LR; lr x LoRA+ ratio for lora_B), so the optimizer
arithmetic is that of K separate runs; all runs share the schedule's shape (steps, warmup). The loop is
``lorainit.train``. A run whose loss turns non-finite or exceeds ``diverge_factor`` x its first loss is
dropped from the sum (its rows still compute; its values are recorded as diverged).

Inits come from the registry exactly as ``lorainit.apply`` draws them (same generator per layer), so a
run here starts where the same run through PEFT would. Data-dependent and residual schemes (which
change the shared base) are refused: run those one at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import apply, inits, lmloss


@dataclass(frozen=True)
class Run:
    """One of the K runs: its init scheme, learning rate, seed and LoRA+ ratio."""

    init: str
    lr: float
    seed: int = 0
    loraplus_ratio: float = 1.0


class MultiLoRALinear(nn.Module):
    """A frozen linear layer with K LoRA adapters, one per run, applied to the run's rows of the input."""

    def __init__(self, base: nn.Linear, A: list[torch.Tensor], B: list[torch.Tensor], scaling: float):
        super().__init__()
        self.base = base
        self.lora_A = nn.ParameterList([nn.Parameter(a.detach().clone().float()) for a in A])  # K x (r, in)
        self.lora_B = nn.ParameterList([nn.Parameter(b.detach().clone().float()) for b in B])  # K x (out, r)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        K = len(self.lora_A)
        xs = x.reshape(K, -1, x.shape[-1])  # (K, rows_k, in): run k's rows
        A = torch.stack(list(self.lora_A)).to(y.dtype)  # (K, r, in)
        B = torch.stack(list(self.lora_B)).to(y.dtype)  # (K, out, r)
        xa = torch.bmm(xs.to(y.dtype), A.transpose(1, 2))  # (K, rows_k, r)
        # y_k + s (x_k A_k^T) B_k^T in one batched GEMM with the base output as its addend
        return torch.baddbmm(y.reshape(K, -1, y.shape[-1]), xa, B.transpose(1, 2), alpha=self.scaling).reshape(y.shape)


def targets_of(model: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The model's linear layers whose last name component is in ``targets`` (PEFT's suffix matching)."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets}
    if not found:
        raise ValueError(f"no linear layer named {', '.join(targets)} in the model: check the target module names")
    return found


def attach(model: nn.Module, runs: list[Run], *, rank: int, alpha: float, targets: list[str],
           use_rslora: bool = False) -> dict[str, MultiLoRALinear]:
    """Replace each target layer of ``model`` (in place) by a ``MultiLoRALinear`` with one adapter per run;
    returns them by module name. The base's parameters are frozen."""
    entries = [inits.entry(r.init) for r in runs]
    for r, e in zip(runs, entries):
        if e.needs or e.residual:
            raise ValueError(f"init {r.init!r} {'needs ' + ', '.join(e.needs) if e.needs else 'changes the base weight'}: "
                             "batched runs share one frozen base; run it on its own (lorainit finetune)")
    for p in model.parameters():
        p.requires_grad_(False)
    scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    layers = {}
    for name, base in targets_of(model, targets).items():
        W = base.weight.detach()  # (out, in)
        if rank > min(W.shape):
            raise ValueError(f"rank {rank} exceeds min(out, in) = {min(W.shape)} of layer {name}")
        peft_name = f"base_model.model.{name}"  # the name lorainit.apply seeds PEFT's layer with
        fs = [apply.draw(r.init, W.float(), rank, seed=r.seed, layer=peft_name, layer_scaling=scaling) for r in runs]
        layer = MultiLoRALinear(base, [f.A for f in fs], [f.B for f in fs], scaling).to(W.device)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        layers[name] = layer
    return layers


def param_groups(layers: dict[str, MultiLoRALinear], runs: list[Run]) -> list[dict]:
    """Two AdamW groups per run: its lora_A tensors at lr, its lora_B tensors at lr x loraplus_ratio."""
    groups = []
    for k, r in enumerate(runs):
        for kind, lr in (("lora_A", r.lr), ("lora_B", r.lr * r.loraplus_ratio)):
            params = [getattr(m, kind)[k] for m in layers.values()]
            groups.append({"params": params, "names": [f"run{k}.{n}.{kind}" for n in layers], "lr": lr, "base_lr": lr})
    return groups


def stack_batches(batches: list[dict]) -> dict:
    """The K runs' micro-batches (each (b, T) tensors) as one (K b, T) batch, run k's rows k*b..(k+1)*b-1."""
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def run_losses(model, batch: dict, K: int) -> torch.Tensor:
    """Each of the K stacked runs' mean next-token loss on its own rows (K,), through the chunked frozen-head
    cross-entropy (``lorainit.lmloss``), so the (K b, T, vocabulary) logits are never held at once."""
    hidden = lmloss.last_hidden(model.get_decoder(), batch)  # (K b, T, d)
    weight = model.get_output_embeddings().weight
    rows = hidden.shape[0] // K
    return torch.stack([lmloss.next_token_loss(hidden[k * rows:(k + 1) * rows], weight, batch["labels"][k * rows:(k + 1) * rows])
                        for k in range(K)])


class RunLosses:
    """Loss of K stacked runs for a causal LM: each run's mean next-token cross-entropy over its tokens
    (labels -100 ignored, as transformers computes it; ``run_losses``), summed over the live runs (all
    logits at once would be 13 GiB in fp32 for SmolLM2 at K=8, 16 x 512). Per-run losses of
    every step are kept in ``history``; a run whose loss is non-finite or above ``diverge_factor`` x its
    first loss is marked dead (``diverged_step``, ``reason``) and leaves the sum."""

    def __init__(self, K: int, diverge_factor: float = 1e3):
        self.K, self.factor = K, diverge_factor
        self.history: list[list[float]] = []
        self.first: list[float | None] = [None] * K
        self.diverged_step: list[int | None] = [None] * K
        self.reason: list[str | None] = [None] * K

    def __call__(self, model, batch) -> torch.Tensor:
        losses = run_losses(model, batch, self.K)  # (K,)
        values = losses.detach().tolist()
        step = len(self.history)
        for k, v in enumerate(values):
            if self.diverged_step[k] is not None:
                continue
            self.first[k] = v if self.first[k] is None else self.first[k]
            why = "non-finite loss" if not math.isfinite(v) else "loss exploded" if v > self.factor * self.first[k] else None
            if why:
                self.diverged_step[k], self.reason[k] = step, why
        self.history.append([None if d is not None else v for d, v in zip(self.diverged_step, values)])
        alive = torch.tensor([d is None for d in self.diverged_step], device=losses.device)
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()

    def checkpoint_state(self) -> dict:
        """What a resumed loop needs to go on judging each run as the uninterrupted one would (``train.train``)."""
        return {"history": self.history, "first": self.first, "diverged_step": self.diverged_step, "reason": self.reason}

    def load_checkpoint_state(self, state: dict) -> None:
        if len(state["first"]) != self.K:
            raise ValueError(f"the checkpoint holds {len(state['first'])} runs' losses, this loop {self.K}: "
                             "resume with the same runs or start in a new folder")
        self.history, self.first = [list(h) for h in state["history"]], list(state["first"])
        self.diverged_step, self.reason = list(state["diverged_step"]), list(state["reason"])
