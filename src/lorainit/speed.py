"""The single-run fast path for a PEFT LoRA model under bf16 autocast on a GPU (issue: speed).

- ``autocast_lora(model)``: PEFT casts each LoRA layer's input to the adapter's dtype (fp32 adapters on a
  bf16 base: a full fp32 copy of every adapted activation, forward and backward). Under autocast the
  matmuls run in bf16 anyway, so the cast is switched off (PEFT's ``cast_input_dtype_enabled``).
- ``compile_blocks(model)``: each transformer block under ``torch.compile`` (one graph shared by the
  blocks), which fuses the normalization/activation/LoRA element-wise work and removes most launches; with
  ``dynamic=True`` one graph serves every sequence length (padded batches: classification, choice).
- ``eager()``: evaluation runs uncompiled.
- ``adamw(groups, **kw)``: torch's fused AdamW where every parameter is on a GPU, else the default.
The loss over the vocabulary is ``lorainit.lmloss``. What each piece buys is measured in bench/single_run.py.
"""

from __future__ import annotations

import torch
from torch import nn


def autocast_lora(model: nn.Module) -> int:
    """Let LoRA layers take their input in the autocast dtype (no fp32 copy); returns how many layers."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for m in model.modules():
        if isinstance(m, LoraLayer):
            m.cast_input_dtype_enabled = False
            n += 1
    return n


def blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated transformer blocks of a transformers model (or a PEFT model of one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in base.modules():
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(b) for b in m}) == 1:
            return m
    raise ValueError(f"found no list of identical blocks in {type(base).__name__}: compile the model yourself")


def compile_blocks(model: nn.Module, *, dynamic: bool = False, backend: str = "inductor") -> int:
    """``torch.compile`` each block in place (``nn.Module.compile``); returns how many. ``dynamic``: shapes symbolic
    from the first compilation (a batch padded to a new length then reuses the graph; static shapes compile each
    length again, up to dynamo's recompile limit). ``backend``: torch.compile's (tests use 'eager')."""
    layers = blocks(model)
    for b in layers:
        b.compile(dynamic=dynamic, backend=backend)
    return len(layers)


def eager():
    """A context in which compiled modules run their plain Python forward (evaluation: its own shapes and
    modes would each trigger a compilation that a few evaluation batches never pay back)."""
    return torch.compiler.set_stance("force_eager")


def adamw(groups: list[dict], **kw) -> torch.optim.AdamW:
    """AdamW over ``groups``; the fused CUDA kernel (one launch for all tensors) when every tensor is on a GPU."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, fused=fused or None, **kw)
