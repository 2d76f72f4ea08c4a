r"""The LoRA-adapted hidden layer of the teacher-student model (Hayou, Ghosh, Yu 2024, eq. (4)) for K runs.

    out_k = relu(P_s + Z_A,k B_k^T) w_out,s          run k on seed s = k // M, M = K // S

with Z_A,k = scaling * relu(W_in x) A_k^T (K, N, r), B (K, n, r), P (S, N, n) the frozen part of the
pre-activation and w_out (S, n). With the 0/1 mask D_k = [P_s + Z_A,k B_k^T > 0] (N, n) and the
upstream gradient g (K, N):

    dL/dZ_A,k = g_k[:, None] * (D_k @ (w_out,s[:, None] * B_k))       (N, r)
    dL/dB_k   = w_out,s[:, None] * (D_k^T @ (g_k[:, None] * Z_A,k))   (n, r)

Two implementations of that one function:
  - ``_HeadBmm``: batched matmuls with a hand-written backward; one (K, N, n) buffer serves as the
    pre-activation, then (in place) as the mask D. Any device and dtype.
  - ``_HeadFused``: three Triton kernels (forward, dZ_A, dB) tiled over (N, n) that recompute the
    pre-activation tile by tile from P, Z_A and B, so no (K, N, n) tensor ever exists. At width 8192
    the bmm form moves several (K, N, n) fp32 tensors through memory per step; the kernels read P
    (shared by the M runs of a seed, neighbouring programs hitting it in L2) and little else.
    Used for float32 CUDA tensors when Triton is installed; tested on the CPU through Triton's
    interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU wheel of torch comes without Triton; the bmm form serves
    triton = None

BN, BJ, WARPS = 64, 64, 4  # tile of (N, n) per program step


class _HeadBmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Z_A: Tensor, B: Tensor, P: Tensor, w_out: Tensor) -> Tensor:
        S, N, n = P.shape
        K = Z_A.shape[0]
        pre = torch.bmm(Z_A, B.transpose(1, 2))  # (K, N, n) = Z_B
        pre.view(S, K // S, N, n).add_(P.unsqueeze(1)).relu_()
        w = w_out.repeat_interleave(K // S, dim=0).unsqueeze(-1)  # (K, n, 1)
        out = torch.bmm(pre, w).view(
            K, N
        )  # (K, N); per run, not per seed: a run's sum must not depend on its seed's company
        ctx.save_for_backward(pre.gt_(0), Z_A, B, w_out)  # pre becomes the 0/1 mask D in place
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        D, Z_A, B, w_out = ctx.saved_tensors
        K = D.shape[0]
        S = w_out.shape[0]
        w = w_out.repeat_interleave(K // S, dim=0).unsqueeze(-1)  # (K, n, 1)
        g_ZA = g.unsqueeze(-1) * torch.bmm(D, w * B)  # (K, N, r)
        g_B = w * torch.bmm(D.transpose(1, 2), g.unsqueeze(-1) * Z_A)  # (K, n, r)
        return g_ZA, g_B, None, None


if triton is not None:
    # Dots as 3xTF32 (a = a_hi + a_lo in TF32, three tensor-core products): float32-level accuracy. Plain
    # float32 ("ieee") dots run on the FMA units with the rank padded to 16 and bound the kernels.
    PRECISION = tl.constexpr("tf32x3")

    @triton.jit
    def _pre_tile(za, b_ptr, p_ptr, k, s, i, j, N, n, R: tl.constexpr, RP: tl.constexpr):
        """P_s[i, j] + Z_A,k[i] B_k[j]^T for a tile: za (BN, RP) zero-padded beyond R -> (BN, BJ)."""
        rr = tl.arange(0, RP)
        bt = tl.load(
            b_ptr + k * n * R + j[None, :] * R + rr[:, None], mask=(j[None, :] < n) & (rr[:, None] < R), other=0.0
        )  # (RP, BJ)
        p = tl.load(
            p_ptr + s.to(tl.int64) * N * n + i[:, None] * n + j[None, :],
            mask=(i[:, None] < N) & (j[None, :] < n),
            other=0.0,
        )
        return p + tl.dot(za, bt, input_precision=PRECISION), bt

    @triton.jit
    def _load_za(za_ptr, k, i, N, R: tl.constexpr, RP: tl.constexpr):
        rr = tl.arange(0, RP)
        return tl.load(
            za_ptr + k * N * R + i[:, None] * R + rr[None, :], mask=(i[:, None] < N) & (rr[None, :] < R), other=0.0
        )

    @triton.jit
    def _fwd_kernel(
        za_ptr,
        b_ptr,
        p_ptr,
        w_ptr,
        out_ptr,
        N,
        n,
        M,
        R: tl.constexpr,
        RP: tl.constexpr,
        BN: tl.constexpr,
        BJ: tl.constexpr,
    ):
        k = tl.program_id(0)  # runs vary fastest: the M runs of a seed read the same P tile
        s = k // M
        i = tl.program_id(1) * BN + tl.arange(0, BN)
        za = _load_za(za_ptr, k, i, N, R, RP)  # (BN, RP)
        acc = tl.zeros([BN], dtype=tl.float32)
        for j0 in range(0, n, BJ):
            j = j0 + tl.arange(0, BJ)
            pre, _ = _pre_tile(za, b_ptr, p_ptr, k, s, i, j, N, n, R, RP)
            w = tl.load(w_ptr + s * n + j, mask=j < n, other=0.0)
            acc += tl.sum(tl.maximum(pre, 0.0) * w[None, :], axis=1)
        tl.store(out_ptr + k * N + i, acc, mask=i < N)

    @triton.jit
    def _grad_za_kernel(
        za_ptr,
        b_ptr,
        p_ptr,
        w_ptr,
        g_ptr,
        gza_ptr,
        N,
        n,
        M,
        R: tl.constexpr,
        RP: tl.constexpr,
        BN: tl.constexpr,
        BJ: tl.constexpr,
    ):
        k = tl.program_id(0)
        s = k // M
        i = tl.program_id(1) * BN + tl.arange(0, BN)
        za = _load_za(za_ptr, k, i, N, R, RP)
        acc = tl.zeros([BN, RP], dtype=tl.float32)  # D_k @ (w_out * B_k) for these rows
        for j0 in range(0, n, BJ):
            j = j0 + tl.arange(0, BJ)
            pre, bt = _pre_tile(za, b_ptr, p_ptr, k, s, i, j, N, n, R, RP)
            w = tl.load(w_ptr + s * n + j, mask=j < n, other=0.0)
            acc += tl.dot(tl.where(pre > 0, w[None, :], 0.0), tl.trans(bt), input_precision=PRECISION)
        g = tl.load(g_ptr + k * N + i, mask=i < N, other=0.0)
        rr = tl.arange(0, RP)
        tl.store(
            gza_ptr + k * N * R + i[:, None] * R + rr[None, :],
            g[:, None] * acc,
            mask=(i[:, None] < N) & (rr[None, :] < R),
        )

    @triton.jit
    def _grad_b_kernel(
        za_ptr,
        b_ptr,
        p_ptr,
        w_ptr,
        g_ptr,
        gb_ptr,
        N,
        n,
        M,
        R: tl.constexpr,
        RP: tl.constexpr,
        BN: tl.constexpr,
        BJ: tl.constexpr,
    ):
        k = tl.program_id(0)
        s = k // M
        j = tl.program_id(1) * BJ + tl.arange(0, BJ)
        acc = tl.zeros([RP, BJ], dtype=tl.float32)  # (g_k Z_A,k)^T D_k for these columns
        for i0 in range(0, N, BN):
            i = i0 + tl.arange(0, BN)
            za = _load_za(za_ptr, k, i, N, R, RP)
            pre, _ = _pre_tile(za, b_ptr, p_ptr, k, s, i, j, N, n, R, RP)
            g = tl.load(g_ptr + k * N + i, mask=i < N, other=0.0)
            acc += tl.dot(tl.trans(za * g[:, None]), (pre > 0).to(tl.float32), input_precision=PRECISION)
        w = tl.load(w_ptr + s * n + j, mask=j < n, other=0.0)
        rr = tl.arange(0, RP)
        tl.store(
            gb_ptr + k * n * R + j[None, :] * R + rr[:, None],
            acc * w[None, :],
            mask=(j[None, :] < n) & (rr[:, None] < R),
        )


def _shape(Z_A: Tensor, P: Tensor) -> tuple[int, int, int, int, int, int]:
    S, N, n = P.shape
    K, _, R = Z_A.shape
    return K, N, n, K // S, R, max(16, triton.next_power_of_2(R))  # tl.dot needs every dim >= 16


class _HeadFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Z_A: Tensor, B: Tensor, P: Tensor, w_out: Tensor) -> Tensor:
        Z_A, B, P, w_out = (t.contiguous() for t in (Z_A, B, P, w_out))
        K, N, n, M, R, RP = _shape(Z_A, P)
        out = torch.empty(K, N, dtype=Z_A.dtype, device=Z_A.device)
        _fwd_kernel[(K, triton.cdiv(N, BN))](Z_A, B, P, w_out, out, N, n, M, R=R, RP=RP, BN=BN, BJ=BJ, num_warps=WARPS)
        ctx.save_for_backward(Z_A, B, P, w_out)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        Z_A, B, P, w_out = ctx.saved_tensors
        g = g.contiguous()
        K, N, n, M, R, RP = _shape(Z_A, P)
        g_ZA, g_B = torch.empty_like(Z_A), torch.empty_like(B)
        args = dict(R=R, RP=RP, BN=BN, BJ=BJ, num_warps=WARPS)
        _grad_za_kernel[(K, triton.cdiv(N, BN))](Z_A, B, P, w_out, g, g_ZA, N, n, M, **args)
        _grad_b_kernel[(K, triton.cdiv(n, BJ))](Z_A, B, P, w_out, g, g_B, N, n, M, **args)
        return g_ZA, g_B, None, None


_RUNS_HERE: dict[torch.device, bool] = {}  # device -> whether the kernels compiled and agreed with the bmm form


def fused_available(x: Tensor) -> bool:
    """Whether the Triton kernels serve tensors like ``x``: float32 on a CUDA device, Triton installed, and
    the kernels compiled there and matched the bmm form on a small problem (checked once per device: a
    machine without the C compiler Triton needs, say, gets a warning and the bmm form)."""
    if triton is None or not x.is_cuda or x.dtype != torch.float32:
        return False
    if x.device not in _RUNS_HERE:
        _RUNS_HERE[x.device] = _self_check(x.device)
    return _RUNS_HERE[x.device]


def _self_check(device: torch.device) -> bool:
    g = torch.Generator(device=device).manual_seed(0)
    S, M, N, n, r = 2, 2, 40, 72, 3
    inputs = [
        torch.randn(*shape, generator=g, device=device) for shape in ((S * M, N, r), (S * M, n, r), (S, N, n), (S, n))
    ]
    try:
        with torch.enable_grad():
            got, want = [], []
            for fn, acc in ((_HeadFused, got), (_HeadBmm, want)):
                z, b = (t.clone().requires_grad_(True) for t in inputs[:2])
                y = fn.apply(z, b, *inputs[2:])
                acc += [y, *torch.autograd.grad(y.sum(), [z, b])]
        bad = [i for i, (a, e) in enumerate(zip(got, want)) if not torch.allclose(a, e, rtol=1e-4, atol=1e-4)]
        if bad:
            raise ArithmeticError(
                f"results differ from the bmm form ({', '.join(['out', 'dZ_A', 'dB'][i] for i in bad)})"
            )
    except Exception as e:  # noqa: BLE001 - any failure to compile or run means: use the bmm form
        warnings.warn(
            f"the toy's Triton kernels do not run on {device} ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); using batched matmuls instead"
        )
        return False
    return True


def head(Z_A: Tensor, B: Tensor, P: Tensor, w_out: Tensor, fused: bool | None = None) -> Tensor:
    """relu(P + Z_A B^T) w_out per run: (K, N). Z_A (K, N, r) already scaled, B (K, n, r), P (S, N, n),
    w_out (S, n), K a multiple of S. ``fused`` None picks the Triton kernels where available."""
    if fused is None:
        fused = fused_available(P)
    if fused and triton is None:
        raise RuntimeError("fused=True needs Triton (pip install triton); leave fused unset to use batched matmuls")
    return (_HeadFused if fused else _HeadBmm).apply(Z_A, B, P, w_out)
