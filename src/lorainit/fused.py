r"""The merged layer of ``lorainit.merged`` with its two products in one Triton kernel: no concatenated input.

``lorainit.merged`` computes run k's outputs as one GEMM, [x_k, xa_k] [W^T; D_k], whose input is a concatenation
(rows_k x (in + R)) that is written and read again, and whose weight is K copies of W^T. Here one kernel,
``dual_gemm``, reads both operands where they lie and accumulates both products in one tile:

    Y_k = P_k Q_k + U_k V_k + C_k + bias                    (fp32 accumulation; Q may be shared by the K runs)

Forward, for members i = 1..m reading one input (notation of ``lorainit.merged``):

    xa_k = x_k A_k^T,  A_k = [A_1k; ..; A_mk]                                    (rows_k x R)
    [y_1 .. y_m]_k = dual_gemm(P = x_k, Q = W^T, U = xa_k, V = D_k) + b           (D_k = blockdiag(s_i B_ik^T))

Backward, with g_ik = dL/dy_ik (each member's gradient read where it lies, as in ``lorainit.merged``):

    dL/dxa_ik = g_ik (s_i B_ik)                    dL/d(s_i B_ik^T) = xa_ik^T g_ik          (the skinny products)
    dL/dA_k = (dL/dxa_k)^T x_k
    dL/dx_k = dual_gemm(P = g_1k, Q = W_1, U = dL/dxa_k, V = A_k) + sum_{i>1} g_ik W_i   (C: the running sum)

so dL/dx = sum_i g_i W_i + dL/dxa A (LoRA's input gradient) is written once per member, never added afterwards.
Where the output is narrow (``chains``), xa and each dL/dxa_i come from the same kernel (``dual.chain``: U = P E^T
summed from the tiles of P that P Q reads, with E = A_k forward and E = s_i B_ik^T backward), not from a bmm that
reads x or g_i again; the backward's dL/dx is then sum_i (g_i W_i + dL/dxa_i A_i), member by member (C: the running
sum).
``Fused`` takes the arguments of ``merged._Merged`` with A in place of xa (it computes xa itself, and dL/dA). Used by
``merged.outputs`` on CUDA tensors where Triton is installed, by default where the blocks replay as CUDA graphs (see
``ENABLED``). The kernels are launched by ``lorainit.dual`` (written in ``lorainit.dual_kernels``); tests run them on
the CPU through Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
except ImportError:  # (CPU-only installs): merged.outputs keeps its bmm path
    triton = None

ENABLED: bool | None = None
"""Whether ``merged.outputs`` takes this kernel where it can (CUDA tensors, Triton installed): True always, False
never, None (the default) where the layer asks (``multi.MultiLoRALinear.kernel``: blocks replayed as CUDA graphs,
``multi.compile_blocks``), in bfloat16 or float16, on at least ``MIN_ROWS`` rows (all runs'). Measured on two H100s,
the SmolLM2 step compiled, K runs of 16 x 512 tokens (ms; bench/results/profile_step_h100_*graphs*):

- under CUDA graphs (compiled LM fine-tunes replay them by default), kernel vs merged bmm: K=8 214.6 / 214.8 vs
  227.1 / 225.2 (both card orders, a8a1d80); K=16 of 16 x 256 217.8 / 216.8 vs 229.1 / 228.8; K=4 114.4 vs 122.1;
  K=2 66.9 vs 67.7 (1248714): ahead from 32768 rows, even at 16384; K=1 (8192 rows; two H200s, both orders,
  ec6be0d: profile_step_h200_graphs_k1_*) 32.8 / 44.2 vs 31.3 / 44.7, GPU time 24.8 / 25.9 vs 24.7 / 24.6: not
  ahead, so left to the bmm. On the GPU alone (graph-replayed) the kernel took 1.64 ms over an 8-run layer's 8
  products vs 2.34 for the merged bmm with its cat and 1.16 for cuBLAS's x W^T alone
  (fused_kernel_h100_a8a1d80_gpu_alone.json);
- without graphs each product is a Python launch with descriptors (~360 a step): GPU time fell in every call
  (208.7-215.9 vs 218.6-219.3 ms) but wall time was ahead in two calls (221.6 vs 229.1 ms; 218.6 / 220.0 vs 227.8 /
  227.3) and behind in three (234.2 / 235.6 vs 229.1; 241.8 vs 228.0; 253.0 / 264.9 vs 231.0):
  profile_step_h100_k8_*_{235d5a0,9e58db3,55fcadc,cdd7df1,40ba945}_*. So not there."""
MIN_ROWS = 32768
"""The fewest rows (runs x tokens per run) for which ``ENABLED`` None takes the kernel: see there."""
CHAIN_FORWARD = True
"""Whether the forward computes xa = x A^T inside the kernel (``dual.chain``: from the tiles of x that x W^T reads)
instead of a bmm before it that reads x again, where ``chains``."""
CHAIN_BACKWARD = True
"""Whether the backward computes each member's dL/dxa_i = g_i (s_i B_i) inside its kernel for dL/dx (``dual.chain``,
from the tiles of g_i that g_i W_i reads) instead of a bmm that reads g_i again, where ``chains``."""
CHAIN_MAX_N = 768
"""The widest output (N columns) that ``chains``: every column tile of the output computes U again (R more columns
of products a tile), so a chained product pays off only over few column tiles. On the GPU alone (one H200, 8 runs
of 16 x 512 tokens, r = 16: bench/results/chain_kernel_h200_7863949.json), the chain vs bmm + kernel, ms: N = 576
(forward o, backward q, k, o, gate, up) 0.108 vs 0.125, 0.114 vs 0.125, 0.074 vs 0.081, 0.112 vs 0.126, 0.274 vs
0.293, 0.288 vs 0.307; forward down (N = 576, K1 = 1536) 0.292 vs 0.292; wider outputs: forward qkv (N = 960,
R = 48) 0.195 vs 0.190, backward down (N = 1536) 0.272 vs 0.253, forward gate+up (N = 3072) 0.572 vs 0.486."""


def chains(n: int, r: int) -> bool:
    """Whether a product of N = ``n`` output columns and U of R = ``r`` columns is chained (``dual.chain``): R at
    most ``dual.CHAIN_R``, N at most ``CHAIN_MAX_N``."""
    return r <= dual.CHAIN_R and n <= CHAIN_MAX_N


def usable(x: Tensor, dtype: torch.dtype, asked: bool = False) -> bool:
    """Whether the kernel computes this product (``ENABLED``; None: where ``asked``, in a half dtype, ``x`` (K, rows_k,
    in) of at least ``MIN_ROWS`` rows) and can, in ``dtype`` on ``x``'s device: CUDA with Triton, or any device under
    Triton's interpreter; bfloat16, float16 or float32 (float32 products in IEEE precision, not TF32, as torch's)."""
    rows = x.shape[0] * x.shape[1]
    wanted = (asked and dtype in (torch.bfloat16, torch.float16) and rows >= MIN_ROWS) if ENABLED is None else ENABLED
    if not wanted or triton is None:
        return False
    return (x.is_cuda or dual.INTERPRETED) and dtype in (torch.bfloat16, torch.float16, torch.float32)


if triton is not None:
    from . import dual

    @torch.library.custom_op("lorainit::dual_gemm", mutates_args=())
    def dual_gemm(
        p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        """P Q + U V + C + bias per batch: p (B, M, K1); q (K1, N) shared, or (B, K1, N); u (B, M, K2) and
        v (B, K2, N), both or neither; c (B, M, N) or None; bias (N,) or None. Output (B, M, N) in p's dtype."""
        return dual.gemm(p, q, u, v, c, bias)

    @dual_gemm.register_fake
    def _(p, q, u, v, c, bias):  # the output's shape for tracing (torch.compile), without running the kernel
        return p.new_empty(p.shape[0], p.shape[1], q.shape[-1])

    @torch.library.custom_op("lorainit::chain_gemm", mutates_args=())
    def chain_gemm(
        p: Tensor, q: Tensor, e: Tensor, v: Tensor, c: Tensor | None, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """(P Q + U V + C + bias, U) with U = P E^T per batch, in one kernel: e (B, R, K1), v (B, R, N), R at most
        ``dual.CHAIN_R``; the rest as ``dual_gemm``'s. U (B, M, R) in p's dtype."""
        return dual.chain(p, q, e, v, c, bias)

    @chain_gemm.register_fake
    def _(p, q, e, v, c, bias):
        return p.new_empty(p.shape[0], p.shape[1], q.shape[-1]), p.new_empty(p.shape[0], p.shape[1], e.shape[1])


class Fused(torch.autograd.Function):
    """[y_1 .. y_m] = x W^T + (x A^T) D + b per run (module docstring), returned as the members' parts."""

    @staticmethod
    def forward(ctx, x, A, weight, bias, outs: tuple[int, ...], *bts):
        # x (K, rows_k, in), A (K, R, in), weight (O, in), bias (O,) or None, bts[i] = s_i B_i^T (K, r_i, out_i)
        from .merged import _block_diagonal

        ctx.set_materialize_grads(False)  # (a part no member used has no gradient: None, not zeros)
        if CHAIN_FORWARD and chains(weight.shape[0], A.shape[1]):  # xa from the kernel's own tiles of x
            y, xa = chain_gemm(x, weight.t(), A, _block_diagonal(bts), None, bias)  # (K, rows_k, O), (K, rows_k, R)
        else:
            xa = torch.bmm(x, A.transpose(1, 2))  # (K, rows_k, R)
            y = dual_gemm(x, weight.t(), xa, _block_diagonal(bts), None, bias)  # (K, rows_k, O)
        ctx.save_for_backward(x, A, xa, weight, *bts)
        ctx.outs = outs
        return y.split(outs, -1)  # each (K, rows_k, out_i)

    @staticmethod
    def backward(ctx, *grads):
        x, A, xa, weight, *bts = ctx.saved_tensors
        ranks = [b.shape[1] for b in bts]
        want_x = ctx.needs_input_grad[0]
        chained = want_x and CHAIN_BACKWARD and chains(weight.shape[1], max(ranks))
        gx, gxa, gbts = None, [], []
        for g, w, b, xa_i, a_i in zip(grads, weight.split(ctx.outs), bts, xa.split(ranks, -1), A.split(ranks, 1)):
            if g is None:
                gxa.append(torch.zeros_like(xa_i))
                gbts.append(None)
                continue
            if chained:  # dL/dx += g_i W_i + dL/dxa_i A_i, dL/dxa_i = g_i b^T computed in the same kernel
                gx, gxa_i = chain_gemm(g, w, b, a_i, gx, None)  # (K, rows_k, in), (K, rows_k, r_i)
                gxa.append(gxa_i)
            else:
                gxa.append(torch.bmm(g, b.transpose(1, 2)))  # (K, rows_k, r_i)
            gbts.append(torch.bmm(xa_i.transpose(1, 2), g))  # (K, r_i, out_i)
        gxa = torch.cat(gxa, -1)  # (K, rows_k, R)
        gA = torch.bmm(gxa.transpose(1, 2), x) if ctx.needs_input_grad[1] else None  # (K, R, in)
        if want_x and not chained:
            for g, w in zip(grads, weight.split(ctx.outs)):  # w (out_i, in)
                if g is None:
                    continue
                if gx is None:  # the first member's product with LoRA's input gradient, in one kernel
                    gx = dual_gemm(g, w, gxa, A, None, None)  # (K, rows_k, in)
                else:
                    gx = dual_gemm(g, w, None, None, gx, None)
        return gx, gA, None, None, None, *gbts
