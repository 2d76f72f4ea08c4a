"""The single-run fast path for a PEFT LoRA model under bf16 autocast on a GPU (issue: speed).

- ``autocast_lora(model)``: PEFT casts each LoRA layer's input to the adapter's dtype (fp32 adapters on a
  bf16 base: a full fp32 copy of every adapted activation, forward and backward). Under autocast the
  matmuls run in bf16 anyway, so the cast is switched off (PEFT's ``cast_input_dtype_enabled``).
- ``compile_blocks(model)``: each transformer block under ``torch.compile`` (one graph shared by the
  blocks), which fuses the normalization/activation/LoRA element-wise work and removes most launches; with
  ``dynamic=True`` one graph serves every sequence length (padded batches: classification, choice).
- ``keep_graphs(shape)``: a process's later batches (a sweep worker's) reuse the graphs its earlier batches of
  the same shape compiled, instead of compiling again.
- ``eager()``: evaluation runs uncompiled.
- ``attention(padded)``: batches padded to a new length at almost every step (classification, choice) leave out
  cuDNN's attention, which builds an execution plan for each new shape.
- ``adamw(groups, **kw)``: torch's fused AdamW where every parameter is on a GPU, else the default.
- ``Readback(t)``: a small device tensor's values read on the host later, so that the training loop does not wait
  for the GPU at every step (the losses it logs and judges).
The loss over the vocabulary is ``lorainit.lmloss``. What each piece buys is measured in bench/single_run.py.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


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


def compile_blocks(
    model: nn.Module, *, dynamic: bool = False, backend: str = "inductor", mode: str | None = None
) -> int:
    """``torch.compile`` each block in place (``nn.Module.compile``); returns how many. ``dynamic``: shapes symbolic
    from the first compilation (a batch padded to a new length then reuses the graph; static shapes compile each
    length again, up to dynamo's recompile limit). ``backend``: torch.compile's (tests use 'eager'). ``mode``:
    torch.compile's ('reduce-overhead': each block's kernels replayed as a CUDA graph)."""
    layers = blocks(model)
    for b in layers:
        b.compile(dynamic=dynamic, backend=backend, mode=mode)
    return len(layers)


KEPT_SHAPES = 4  # batch shapes whose graphs a process keeps (dynamo compiles a code object 8 times at most)
_kept: set = set()


def keep_graphs(shape) -> bool:
    """Call before compiling a batch's blocks; ``shape`` is a hashable of what its graphs depend on (``finetune_run``:
    model, rank, batch size, sequence length, number of runs, corrections, full fine-tune). Dynamo keeps the graphs of the process's earlier batches, guarded
    by the tensors' shapes and the modules' attributes, so a batch shaped like an earlier one compiles nothing
    (checked in tests/test_speed.py). A new shape beyond ``KEPT_SHAPES`` starts afresh (``torch._dynamo.reset``),
    clear of dynamo's recompile limit, past which a block would silently run uncompiled. False where it reset."""
    fresh = shape not in _kept and len(_kept) >= KEPT_SHAPES
    if fresh:
        torch._dynamo.reset()
        _kept.clear()
    _kept.add(shape)
    return not fresh


def eager():
    """A context in which compiled modules run their plain Python forward (evaluation: its own shapes and
    modes would each trigger a compilation that a few evaluation batches never pay back)."""
    return torch.compiler.set_stance("force_eager")


PADDED_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]  # no cuDNN


def attention(padded: bool):
    """The context for a run's forward and backward passes. ``padded``: the batches are padded to their longest
    example, a new length at almost every batch (classification, multiple choice); then torch's attention leaves out
    cuDNN's kernel, which on an H100 builds an execution plan for every new shape (hundreds of milliseconds each:
    pytorch/pytorch#155958, FunASR#3705), and takes the flash or memory-efficient kernel. LM blocks (one shape) keep
    torch's own choice."""
    return sdpa_kernel(PADDED_ATTENTION) if padded else contextlib.nullcontext()


def adamw(groups: list[dict], **kw) -> torch.optim.AdamW:
    """AdamW over ``groups``; the fused CUDA kernel (one launch for all tensors) when every tensor is on a GPU."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, fused=fused or None, **kw)


class Readback:
    """The values of a small tensor ``t`` (a step's losses), on the host later without a wait now: on a GPU a
    non-blocking copy into pinned memory and an event recorded after it on the current stream; ``values()`` waits for
    that event only, which the GPU passes as soon as the copy is done (not after the work launched since: the step's
    backward and optimizer step go on while the host reads). Elsewhere a plain copy."""

    def __init__(self, t: torch.Tensor):
        t = t.detach()
        if t.is_cuda:
            self._host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self._host.copy_(t, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host, self._event = t.clone(), None

    def values(self):
        """The values as Python numbers (``tolist``: a list, or a number for a 0-d tensor)."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()
