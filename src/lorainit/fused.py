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
``Fused`` takes the arguments of ``merged._Merged`` with A in place of xa (it computes xa itself, and dL/dA). Used by
``merged.outputs`` on CUDA tensors where Triton is installed (``ENABLED``, ``usable``); tests run the kernel on the
CPU through Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # (CPU-only installs): merged.outputs keeps its bmm path
    triton = None

ENABLED = True
"""Whether ``merged.outputs`` takes this kernel where it can (CUDA tensors, Triton installed)."""


def usable(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether the kernel can compute in ``dtype`` on ``x``'s device: CUDA with Triton, or any device under Triton's
    interpreter; bfloat16, float16 or float32 (float32 products in IEEE precision, not TF32, as torch's default)."""
    on = x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return ENABLED and triton is not None and on and dtype in (torch.bfloat16, torch.float16, torch.float32)


if triton is not None:

    def _configs():
        if os.environ.get("TRITON_INTERPRET") == "1":  # (the interpreter: one small tile, no tuning)
            return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})]
        tiles = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 4), (128, 128, 64, 3, 8)]
        tiles += [(64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (256, 128, 64, 3, 8), (64, 256, 64, 3, 8)]
        tiles += [(128, 128, 64, 5, 4), (256, 64, 64, 4, 8)]
        return [
            triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for m, n, k, s, w in tiles
        ]

    @triton.autotune(configs=_configs(), key=["M", "N", "K1", "K2", "HAS_UV", "HAS_C"])
    @triton.heuristics(  # whole tiles: loads without masks (a mask along the contiguous dimension stops vector loads)
        {"EVEN_M": lambda a: a["M"] % a["BLOCK_M"] == 0, "EVEN_K": lambda a: a["K1"] % a["BLOCK_K"] == 0}
    )
    @triton.jit
    def _dual_kernel(
        P, Q, U, V, C, BIAS, Y, M, N, K1, K2,
        spb, spm, spk, sqb, sqk, sqn, sub, sum_, suk, svb, svk, svn, scb, scm, scn, syb, sym, syn,
        HAS_UV: tl.constexpr, HAS_C: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        EVEN_M: tl.constexpr, EVEN_K: tl.constexpr,
    ):  # fmt: skip
        pid, b = tl.program_id(0), tl.program_id(1).to(tl.int64)  # (a tile of Y_b)
        num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = GROUP_M * num_n  # tiles in a band of GROUP_M row blocks: walked column by column (L2 reuse)
        first = (pid // group) * GROUP_M
        size = min(num_m - first, GROUP_M)
        pid_m, pid_n = first + (pid % group) % size, (pid % group) // size
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of Y_b
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) columns
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        rk = tl.arange(0, BLOCK_K)
        p = P + b * spb + rm[:, None] * spm + rk[None, :] * spk  # (BLOCK_M, BLOCK_K) pointers into P_b
        q = Q + b * sqb + rk[:, None] * sqk + rn[None, :] * sqn  # (BLOCK_K, BLOCK_N) into Q_b
        for k in range(0, K1, BLOCK_K):  # P_b Q_b
            if EVEN_M and EVEN_K:
                a = tl.load(p)
            else:
                a = tl.load(p, mask=(rm[:, None] < M) & (rk[None, :] < K1 - k), other=0.0)
            if EVEN_K:
                w = tl.load(q, mask=rn[None, :] < N, other=0.0)
            else:
                w = tl.load(q, mask=(rk[:, None] < K1 - k) & (rn[None, :] < N), other=0.0)
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
            p += BLOCK_K * spk
            q += BLOCK_K * sqk
        if HAS_UV:  # + U_b V_b: the inner dimension R in blocks of BLOCK_R
            rr = tl.arange(0, BLOCK_R)
            u = U + b * sub + rm[:, None] * sum_ + rr[None, :] * suk  # (BLOCK_M, BLOCK_R)
            v = V + b * svb + rr[:, None] * svk + rn[None, :] * svn  # (BLOCK_R, BLOCK_N)
            for k in range(0, K2, BLOCK_R):
                a = tl.load(u, mask=(rm[:, None] < M) & (rr[None, :] < K2 - k), other=0.0)
                w = tl.load(v, mask=(rr[:, None] < K2 - k) & (rn[None, :] < N), other=0.0)
                acc = tl.dot(a, w, acc, input_precision=PRECISION)
                u += BLOCK_R * suk
                v += BLOCK_R * svk
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if HAS_C:
            acc += tl.load(C + b * scb + rm[:, None] * scm + rn[None, :] * scn, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + b * syb + rm[:, None] * sym + rn[None, :] * syn, acc.to(Y.dtype.element_ty), mask=mask)

    @torch.library.custom_op("lorainit::dual_gemm", mutates_args=())
    def dual_gemm(
        p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        """P Q + U V + C + bias per batch: p (B, M, K1); q (K1, N) shared, or (B, K1, N); u (B, M, K2) and
        v (B, K2, N), both or neither; c (B, M, N) or None; bias (N,) or None. Output (B, M, N) in p's dtype."""
        nb, m, k1 = p.shape
        n = q.shape[-1]
        y = p.new_empty(nb, m, n)
        qs = (0, *q.stride()) if q.dim() == 2 else q.stride()
        has_uv = u is not None
        k2 = u.shape[-1] if has_uv else 0
        us, vs = (u.stride(), v.stride()) if has_uv else ((0, 0, 0), (0, 0, 0))
        cs = c.stride() if c is not None else (0, 0, 0)
        block_r = max(16, min(64, triton.next_power_of_2(max(k2, 1))))

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), nb)

        _dual_kernel[grid](
            p, q, u if has_uv else p, v if has_uv else p, p if c is None else c, p if bias is None else bias, y,
            m, n, k1, k2, *p.stride(), *qs, *us, *vs, *cs, *y.stride(),
            HAS_UV=has_uv, HAS_C=c is not None, HAS_BIAS=bias is not None, BLOCK_R=block_r,
            PRECISION="ieee" if p.dtype == torch.float32 else "tf32",
        )  # fmt: skip
        return y

    @dual_gemm.register_fake
    def _(p, q, u, v, c, bias):  # the output's shape for tracing (torch.compile), without running the kernel
        return p.new_empty(p.shape[0], p.shape[1], q.shape[-1])


class Fused(torch.autograd.Function):
    """[y_1 .. y_m] = x W^T + (x A^T) D + b per run (module docstring), returned as the members' parts."""

    @staticmethod
    def forward(ctx, x, A, weight, bias, outs: tuple[int, ...], *bts):
        # x (K, rows_k, in), A (K, R, in), weight (O, in), bias (O,) or None, bts[i] = s_i B_i^T (K, r_i, out_i)
        from .merged import _block_diagonal

        ctx.set_materialize_grads(False)  # (a part no member used has no gradient: None, not zeros)
        xa = torch.bmm(x, A.transpose(1, 2))  # (K, rows_k, R)
        y = dual_gemm(x, weight.t(), xa, _block_diagonal(bts), None, bias)  # (K, rows_k, O)
        ctx.save_for_backward(x, A, xa, weight, *bts)
        ctx.outs = outs
        return y.split(outs, -1)  # each (K, rows_k, out_i)

    @staticmethod
    def backward(ctx, *grads):
        x, A, xa, weight, *bts = ctx.saved_tensors
        xas = xa.split([b.shape[1] for b in bts], -1)  # each (K, rows_k, r_i)
        gxa, gbts = [], []
        for g, b, xa_i in zip(grads, bts, xas):
            gxa.append(torch.zeros_like(xa_i) if g is None else torch.bmm(g, b.transpose(1, 2)))  # (K, rows_k, r_i)
            gbts.append(None if g is None else torch.bmm(xa_i.transpose(1, 2), g))  # (K, r_i, out_i)
        gxa = torch.cat(gxa, -1)  # (K, rows_k, R)
        gA = torch.bmm(gxa.transpose(1, 2), x) if ctx.needs_input_grad[1] else None  # (K, R, in)
        gx = None
        if ctx.needs_input_grad[0]:
            for g, w in zip(grads, weight.split(ctx.outs)):  # w (out_i, in)
                if g is None:
                    continue
                if gx is None:  # the first member's product with LoRA's input gradient, in one kernel
                    gx = dual_gemm(g, w, gxa, A, None, None)  # (K, rows_k, in)
                else:
                    gx = dual_gemm(g, w, None, None, gx, None)
        return gx, gA, None, None, None, *gbts
