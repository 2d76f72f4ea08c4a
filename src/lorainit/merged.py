r"""Layers' frozen base outputs and their runs' LoRA updates as one GEMM per run, the update inside the product.

For members i = 1..m reading one input (a layer alone, or the siblings of ``lorainit.siblings``) with frozen
weights W_i (out_i x in), biases b_i, scalings s_i and run k's adapters A_ik (r_i x in), B_ik (out_i x r_i)
(with a frozen correction: [A; A0] and [B, -B0], ``MultiLoRALinear.adapter_A/B``), run k's rows x_k (rows_k x in):

    xa_k = x_k [A_1k; ..; A_mk]^T                                             (rows_k x R, R = sum_i r_i)
    [y_1 .. y_m]_k = [x_k, xa_k] [W^T; D_k] + b                                (one GEMM, inner dimension in + R)
    W = [W_1; ..; W_m],  D_k = blockdiag(s_1 B_1k^T, .., s_m B_mk^T)            (R x sum_i out_i)

which is y_ik = x_k W_i^T + b_i + s_i (x_k A_ik^T) B_ik^T, LoRA (Hu et al. 2021, eq. 3) for every member at once.
The update is part of the GEMM's output: no second product (rows_k x out_i) is written and added to y (the cost
that made K batched runs 1.77x the frozen base's step, bench/results/profile_step_h100_base_compiled_k8.txt).
Backward, with g_ik = dL/dy_ik, per member (no concatenation of the g_i, as in ``siblings._Shared``):

    [dL/dx_k, dL/dxa_ik] += g_ik [W_i, s_i B_ik]          (one GEMM per member; dL/dx summed over the members)
    dL/d(s_i B_ik^T) = xa_ik^T g_ik                         (r_i x out_i: the diagonal block of dL/dD_k only)

W and b are frozen (no gradient). The adapters' gradients then come from autograd through xa and the casts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import fused


def compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype ``nn.Linear`` would compute ``x``'s output in: autocast's where it is on, else the weight's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def by_run(x: Tensor, K: int) -> Tensor:
    """(K b, ..., d) -> (K, rows_k, d): run k's rows, the K runs' micro-batches being stacked on dimension 0. Two
    steps (split the batch dimension, then join the rows) where one ``reshape`` would do: torch 2.11's inductor (the
    GPU image's) cannot express the one-step view of an element-wise result as strides, so it wrote one copy of it
    per GEMM reading it (a norm's or SiLU's output forward; SiLU's or RoPE's gradient backward: ~0.9 ms a layer at
    8 x 16 x 512 tokens on an H100, ~0.7 on an H200: bench/results/profile_step_h*_graphs_views_*); the two steps are
    plain strided views to it. (torch 2.13's inductor takes either.)"""
    return x.unflatten(0, (K, -1)).flatten(1, -2)


def by_batch(y: Tensor, shape: torch.Size) -> Tensor:
    """(K, rows_k, o) -> (*shape, o), the inverse of ``by_run`` for an input of leading dimensions ``shape``; two
    steps for the same reason (its gradient is ``by_run``'s one-step view otherwise)."""
    return y.unflatten(1, (-1, *shape[1:])).flatten(0, 1)


def _block_diagonal(blocks: tuple[Tensor, ...]) -> Tensor:
    """(K, sum r_i, sum o_i): each (K, r_i, o_i) block on the diagonal, zeros elsewhere."""
    width, col, rows = sum(b.shape[2] for b in blocks), 0, []
    for b in blocks:
        rows.append(torch.nn.functional.pad(b, (col, width - col - b.shape[2])))  # (K, r_i, sum o_i)
        col += b.shape[2]
    return torch.cat(rows, 1)


class _Merged(torch.autograd.Function):
    """[y_1 .. y_m] = [x, xa] [W^T; D] + b per run, returned as the members' parts (views of one output)."""

    @staticmethod
    def forward(ctx, x, xa, weight, bias, outs: tuple[int, ...], *bts):
        # x (K, rows_k, in), xa (K, rows_k, R), weight (O, in), bias (O,) or None, bts[i] = s_i B_i^T (K, r_i, out_i)
        ctx.set_materialize_grads(False)  # (a part no member used has no gradient: None, not zeros)
        K = x.shape[0]
        w = torch.cat([weight.t().expand(K, -1, -1), _block_diagonal(bts)], 1)  # (K, in + R, O)
        y = torch.bmm(torch.cat([x, xa], -1), w)  # (K, rows_k, O)
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(xa, weight, *bts)
        ctx.outs = outs
        return y.split(outs, -1)  # each (K, rows_k, out_i)

    @staticmethod
    def backward(ctx, *grads):
        xa, weight, *bts = ctx.saved_tensors
        n, want_x = weight.shape[1], ctx.needs_input_grad[0]
        gx, gxa, gbts = None, [], []
        xas = xa.split([b.shape[1] for b in bts], -1)  # each (K, rows_k, r_i)
        for g, w, b, xa_i in zip(grads, weight.split(ctx.outs), bts, xas):
            if g is None:
                gxa.append(torch.zeros_like(xa_i))
                gbts.append(None)
                continue
            if want_x:  # dL/dx and dL/dxa_i from one GEMM: g_i [W_i, s_i B_i]
                both = torch.bmm(
                    g, torch.cat([w.expand(g.shape[0], -1, -1), b.transpose(1, 2)], 2)
                )  # (K, rows_k, in + r_i)
                gx = both[..., :n] if gx is None else gx + both[..., :n]
                gxa.append(both[..., n:])
            else:
                gxa.append(torch.bmm(g, b.transpose(1, 2)))  # (K, rows_k, r_i)
            gbts.append(torch.bmm(xa_i.transpose(1, 2), g))  # (K, r_i, out_i)
        return gx, torch.cat(gxa, -1), None, None, None, *gbts


def outputs(xs: Tensor, weight: Tensor, bias: Tensor | None, members: list) -> tuple[Tensor, ...]:
    """Each member's output (K, rows_k, out_i), its runs' LoRA updates included, for the runs' rows ``xs``
    (K, rows_k, in); ``weight`` (sum out_i, in) and ``bias`` are the members' frozen ones, stacked in their order;
    ``members``: ``MultiLoRALinear`` layers (``adapter_A``, ``adapter_B``, ``scaling``, ``kernel``). Where
    ``fused.usable`` (by default: the layers' ``kernel``, on CUDA) the two products run in one Triton kernel."""
    dtype = compute_dtype(xs, weight)
    xs = xs.to(dtype)
    A = torch.cat([m.adapter_A(dtype) for m in members], 1)  # (K, R, in)
    bts = [m.scaling * m.adapter_B(dtype).transpose(1, 2) for m in members]  # each (K, r_i, out_i)
    outs = tuple(m.base.out_features for m in members)
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    if fused.usable(xs, dtype, members[0].kernel):  # both products in one kernel, no concatenated input
        return fused.Fused.apply(xs, A, weight, bias, outs, *bts)
    xa = torch.bmm(xs, A.transpose(1, 2))  # (K, rows_k, R)
    return _Merged.apply(xs, xa, weight, bias, outs, *bts)
