r"""Sibling layers: target layers that a forward calls on one and the same input tensor (a Llama block's q/k/v
projections on the normed hidden state, gate/up on the MLP's input; BERT's query/key/value), computed together.

For siblings 1..m with frozen weights W_i (out_i x in), biases b_i, and every run's adapters A_i (K, r_i', in),
the first sibling called computes for all of them (LoRA, Hu et al. 2021, eq. 3, one product per shared input):

    [y_1 .. y_m] = x [W_1; ..; W_m]^T + [b_1 .. b_m]        (one GEMM over the concatenated weight)
    [xa_1 .. xa_m] = x_k [A_1; ..; A_m]_k^T                   (one batched GEMM over the runs k)

and keeps the others' (y_i, xa_i) until they are called with that same tensor. Each reads x once instead of m
times. The base part's backward takes each y_i's gradient g_i as it comes, dL/dx = sum_i g_i W_i (``_Shared``):
autograd's own backward of the split would first concatenate the g_i, a copy of (rows, sum out_i) that inductor
(torch 2.11) fused into the gate/up SiLU backward as one kernel of masked loads 3x slower than that backward
without it (K=16 wiki profile, H100, bench/results/profile_batch_wiki_k16_head_compiled_h100.txt).
The concatenated weight is the storage of the members' own weights (each ``base.weight`` a view of its rows, no
copy kept); ``Siblings.release`` gives each its own storage back. A call with another tensor (a model that feeds
a sibling something else) computes that layer alone, so a wrong grouping costs time, never a wrong result.
"""

from __future__ import annotations

import torch
from torch import nn

from . import merged


def shared_inputs(model: nn.Module, linears: dict[str, nn.Linear]) -> list[list[str]]:
    """Groups (in call order) of the ``linears`` that one forward of ``model`` on a short dummy sequence
    (``input_ids`` only, as every transformers model takes; compiled modules run uncompiled) calls on the same
    tensor; [] for a model that cannot run that forward (its layers then compute alone)."""
    seen: dict[int, tuple[torch.Tensor, list[str]]] = {}  # id(input) -> (input, kept so its id stays its own; names)

    def hook(name):
        return lambda module, args: seen.setdefault(id(args[0]), (args[0], []))[1].append(name)

    handles = [lin.register_forward_pre_hook(hook(name)) for name, lin in linears.items()]
    device = next(model.parameters()).device
    try:
        # (uncompiled: blocks compiled for a worker's earlier batch keep their graphs, none made for this call)
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):
            model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=device))
    except Exception:  # noqa: BLE001 - whatever a model that takes no input_ids raises: no grouping (only speed lost)
        return []
    finally:
        for h in handles:
            h.remove()
    groups, grouped = [], set()
    for _, names in seen.values():  # (a layer shared across depth, as ALBERT's, is grouped once)
        if len(set(names)) == len(names) > 1 and not grouped & set(names):
            groups.append(names)
            grouped |= set(names)
    return groups


class _Shared(torch.autograd.Function):
    """y = x W^T + b over the concatenated frozen weight, returned as the members' parts (views); backward:
    dL/dx = sum_i g_i W_i over the parts' gradients g_i, none concatenated (W and b are frozen: no gradient)."""

    @staticmethod
    def forward(ctx, x, weight, bias, outs: tuple[int, ...]):
        ctx.set_materialize_grads(False)  # (a part no member used has no gradient: None, not zeros)
        ctx.save_for_backward(weight)
        ctx.outs = outs
        return nn.functional.linear(x, weight, bias).split(outs, -1)  # parts (..., out_i)

    @staticmethod
    def backward(ctx, *grads):
        (weight,) = ctx.saved_tensors
        dx = None
        for g, w in zip(grads, weight.split(ctx.outs)):  # g (..., out_i), w (out_i, in)
            if g is not None:
                part = g @ w.to(g.dtype)  # (..., in)
                dx = part if dx is None else dx + part
        return dx, None, None, None


class Siblings:
    """One group of ``MultiLoRALinear`` layers reading the same input; each member's ``siblings`` is this."""

    def __init__(self, members: list[nn.Module]):
        self.members = members
        bases = [m.base for m in members]
        self.outs = [b.out_features for b in bases]
        self.weight = torch.cat([b.weight.detach() for b in bases])  # (sum out_i, in)
        self.bias = None
        if any(b.bias is not None for b in bases):
            self.bias = torch.cat(
                [b.bias.detach() if b.bias is not None else b.weight.new_zeros(b.out_features) for b in bases]
            )
        row = 0
        for b, n in zip(bases, self.outs):  # the members' weights become views of the one concatenated storage
            b.weight.data = self.weight[row : row + n]
            if b.bias is not None:
                b.bias.data = self.bias[row : row + n]
            row += n
        self.x = None  # the input of the pending outputs
        self.pending: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def outputs(self, layer: nn.Module, x: torch.Tensor):
        """``layer``'s output (K, rows_k, out) with its runs' updates (``layer.merging()``: ``lorainit.merged``),
        else its base output (..., out) and its runs' x A^T (K, rows_k, r'): kept from a sibling's call on this same
        ``x``, else computed for every sibling now (the others' kept for their calls)."""
        if self.x is x and layer in self.pending:
            mine = self.pending.pop(layer)
            if not self.pending:
                self.x = None  # (nothing kept past the group's last call)
            return mine
        K = len(layer.lora_A)
        if layer.merging():
            parts = merged.outputs(merged.by_run(x, K), self.weight, self.bias, self.members)
        else:
            ys = _Shared.apply(x, self.weight, self.bias, tuple(self.outs))  # each (..., out_i)
            A = [m.adapter_A(ys[0].dtype) for m in self.members]  # each (K, r_i', in)
            xs = merged.by_run(x, K).to(ys[0].dtype)  # (K, rows_k, in): run k's rows
            xa = torch.bmm(xs, torch.cat(A, 1).transpose(1, 2))  # (K, rows_k, sum r_i')
            parts = zip(ys, xa.split([a.shape[1] for a in A], -1))
        outs = dict(zip(self.members, parts))
        mine = outs.pop(layer)
        self.x, self.pending = x, outs
        return mine

    def release(self) -> None:
        """Each member's base weight (and bias) in storage of its own again, as before the grouping."""
        if self.weight is None:  # (released already)
            return
        for m in self.members:
            m.base.weight.data = m.base.weight.data.clone()
            if m.base.bias is not None:
                m.base.bias.data = m.base.bias.data.clone()
        self.x, self.pending, self.weight, self.bias = None, {}, None, None
