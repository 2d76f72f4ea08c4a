r"""The Triton kernels of ``lorainit.dual`` (Y_b = P_b Q + U_b V_b + C_b + bias per batch; with HAS_E, U_b = P_b E_b^T
computed in the same tiles, ``dual.chain``) and their autotuner configs: ``_tma_kernel`` through tensor descriptors
(Hopper), ``_pointer_kernel`` through pointers with masks. ``lorainit.dual`` checks operands and launches them. Each
kernel's tuning results are kept per machine (``lorainit.autotune_store``): a shape is tuned once, not per process."""

from __future__ import annotations

import os
from pathlib import Path

import triton
import triton.language as tl

from . import autotune_store

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _configs(tiles, pre_hook=None) -> list:
    """The autotuner's configs: (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) each; under the interpreter one small
    tile, no tuning."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}, pre_hook=pre_hook)]
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w, pre_hook=pre_hook
        )
        for m, n, k, s, w in tiles
    ]


def _pointer_configs():
    tiles = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 4), (128, 128, 64, 3, 8)]
    tiles += [(64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (256, 128, 64, 3, 8), (64, 256, 64, 3, 8)]
    tiles += [(128, 128, 64, 5, 4), (256, 64, 64, 4, 8)]
    return _configs(tiles)


@triton.jit
def _tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Program ``pid``'s tile (row block, column block), bands of GROUP_M row blocks walked column by column (each
    column of Q read by GROUP_M tiles in turn: L2 reuse)."""
    group = GROUP_M * num_n  # tiles in a band
    first = (pid // group) * GROUP_M
    size = min(num_m - first, GROUP_M)
    return first + (pid % group) % size, (pid % group) // size


@triton.autotune(configs=_pointer_configs(), key=["M", "N", "K1", "K2", "HAS_UV", "HAS_E", "HAS_C"])
@triton.heuristics(  # whole tiles: loads without masks (a mask along the contiguous dimension stops vector loads)
    {"EVEN_M": lambda a: a["M"] % a["BLOCK_M"] == 0, "EVEN_K": lambda a: a["K1"] % a["BLOCK_K"] == 0}
)
@triton.jit
def _pointer_kernel(
    P, Q, U, V, C, BIAS, Y, E, M, N, K1, K2,
    spb, spm, spk, sqb, sqk, sqn, sub, sum_, suk, svb, svk, svn, scb, scm, scn, syb, sym, syn, seb, ser, sek,
    HAS_UV: tl.constexpr, HAS_E: tl.constexpr, HAS_C: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_M: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    # HAS_E: U_b = P_b E_b^T accumulated beside P_b Q (BLOCK_R covers all of R), stored to U by column tile 0
    b = tl.program_id(1).to(tl.int64)  # (a tile of Y_b)
    pid_m, pid_n = _tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of Y_b
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) columns
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    rk = tl.arange(0, BLOCK_K)
    p = P + b * spb + rm[:, None] * spm + rk[None, :] * spk  # (BLOCK_M, BLOCK_K) pointers into P_b
    q = Q + b * sqb + rk[:, None] * sqk + rn[None, :] * sqn  # (BLOCK_K, BLOCK_N) into Q_b
    rr = tl.arange(0, BLOCK_R)
    e = E + b * seb + rr[None, :] * ser + rk[:, None] * sek  # (BLOCK_K, BLOCK_R) into E_b^T
    ue = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k in range(0, K1, BLOCK_K):  # P_b Q_b (and P_b E_b^T)
        if EVEN_M and EVEN_K:
            a = tl.load(p)
        else:
            a = tl.load(p, mask=(rm[:, None] < M) & (rk[None, :] < K1 - k), other=0.0)
        if EVEN_K:
            w = tl.load(q, mask=rn[None, :] < N, other=0.0)
        else:
            w = tl.load(q, mask=(rk[:, None] < K1 - k) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if HAS_E:
            et = tl.load(e, mask=(rk[:, None] < K1 - k) & (rr[None, :] < K2), other=0.0)
            ue = tl.dot(a, et, ue, input_precision=PRECISION)
            e += BLOCK_K * sek
        p += BLOCK_K * spk
        q += BLOCK_K * sqk
    if HAS_E:  # + U_b V_b with the U_b just computed, rounded to the output's dtype as a stored U would be
        u16 = ue.to(Y.dtype.element_ty)
        if pid_n == 0:
            tl.store(
                U + b * sub + rm[:, None] * sum_ + rr[None, :] * suk, u16, mask=(rm[:, None] < M) & (rr[None, :] < K2)
            )
        w = tl.load(
            V + b * svb + rr[:, None] * svk + rn[None, :] * svn, mask=(rr[:, None] < K2) & (rn[None, :] < N), other=0.0
        )
        acc = tl.dot(u16, w, acc, input_precision=PRECISION)
    if HAS_UV:  # + U_b V_b: the inner dimension R in blocks of BLOCK_R
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


def _tma_configs():
    tiles = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 8), (128, 128, 64, 3, 4)]
    tiles += [(128, 64, 64, 4, 4), (256, 128, 64, 3, 8), (64, 256, 64, 4, 4), (128, 128, 64, 5, 8)]
    tiles += [(128, 128, 128, 3, 8), (128, 256, 128, 2, 8), (256, 128, 128, 2, 8)]  # (fewer steps over a short K1)
    return _configs(tiles, pre_hook=_blocks)


def _blocks(nargs):
    """Each descriptor's tile for the config being run (the autotuner calls this before each launch)."""
    bm, bn, bk, br = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"], nargs["BLOCK_R"]
    nargs["p_desc"].block_shape = [bm, bk]
    nargs["q_desc"].block_shape = [bn, bk] if nargs["Q_T"] else [bk, bn]
    nargs["c_desc"].block_shape = [bm, bn]
    nargs["y_desc"].block_shape = [bm, bn]
    nargs["u_desc"].block_shape = [bm, br]
    nargs["v_desc"].block_shape = [1, bn, br] if nargs["V_T"] else [1, br, bn]  # (V per batch, zero-filled past R)
    if nargs["HAS_E"]:  # E_b whole (3-D: zero-filled past R within the batch)
        nargs["e_desc"].block_shape = [1, bk, br] if nargs["E_T"] else [1, br, bk]
    else:
        nargs["e_desc"].block_shape = [bm, bk]  # (unused: P's)


@triton.jit
def _v_tile(v_desc, b, k, on, V_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """V_b's (BLOCK_R, BLOCK_N) tile at (k, on), read from V_b^T (N x R, rows contiguous: s B^T for a B) if V_T."""
    if V_T:
        return v_desc.load([b, on, k]).reshape(BLOCK_N, BLOCK_R).T
    return v_desc.load([b, k, on]).reshape(BLOCK_R, BLOCK_N)


@triton.autotune(configs=_tma_configs(), key=["M", "N", "K1", "K2", "HAS_UV", "HAS_E", "HAS_C", "Q_T", "E_T", "V_T"])
@triton.jit
def _tma_kernel(
    p_desc, q_desc, u_desc, v_desc, c_desc, y_desc, e_desc, BIAS, M, N, K1, K2,
    HAS_UV: tl.constexpr, HAS_E: tl.constexpr, HAS_C: tl.constexpr, HAS_BIAS: tl.constexpr, Q_T: tl.constexpr,
    E_T: tl.constexpr, V_T: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # P, U, C, Y are 2-D over all batches' rows (B*M x .), V (and E) 3-D, read per batch: a tile of Y_b starts at
    # row b*M + om; M is a multiple of BLOCK_M and V's tiles are zero-filled past R, so no tile crosses a batch (a
    # diverged run's NaN stays in its own rows)
    b = tl.program_id(1)
    pid_m, pid_n = _tile(tl.program_id(0), M // BLOCK_M, tl.cdiv(N, BLOCK_N), GROUP_M)
    om, on = b * M + pid_m * BLOCK_M, pid_n * BLOCK_N  # the tile's first row (of all batches') and column
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    ue = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)  # (HAS_E: U_b's rows, all R columns)
    for k in range(0, K1, BLOCK_K):  # P_b Q (and P_b E_b^T)
        a = p_desc.load([om, k])
        if Q_T:  # Q given as its transpose (N x K1, rows contiguous: a weight W for Q = W^T)
            w = q_desc.load([on, k]).T  # (BLOCK_K, BLOCK_N)
        else:
            w = q_desc.load([k, on])
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if HAS_E:
            if E_T:  # E_b stored as its transpose (K1 x R, rows contiguous: a B_i for E = s B_i^T)
                et = e_desc.load([b, k, 0]).reshape(BLOCK_K, BLOCK_R)
            else:
                et = e_desc.load([b, 0, k]).reshape(BLOCK_R, BLOCK_K).T  # (BLOCK_K, BLOCK_R)
            ue = tl.dot(a, et, ue, input_precision=PRECISION)
    if HAS_E:  # + U_b V_b with the U_b just computed, rounded to the output's dtype as a stored U would be
        u16 = ue.to(y_desc.dtype)
        if pid_n == 0:
            u_desc.store([om, 0], u16)
        acc = tl.dot(u16, _v_tile(v_desc, b, 0, on, V_T, BLOCK_R, BLOCK_N), acc, input_precision=PRECISION)
    if HAS_UV:  # + U_b V_b
        for k in range(0, K2, BLOCK_R):
            acc = tl.dot(
                u_desc.load([om, k]), _v_tile(v_desc, b, k, on, V_T, BLOCK_R, BLOCK_N), acc, input_precision=PRECISION
            )
    if HAS_C:
        acc += c_desc.load([om, on]).to(tl.float32)
    if HAS_BIAS:
        rn = on + tl.arange(0, BLOCK_N)
        acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    y_desc.store([om, on], acc.to(y_desc.dtype))


TALLEST = max(c.kwargs["BLOCK_M"] for c in _tma_configs())
"""The rows a batch must be a multiple of for ``_tma_kernel`` (its tallest tile)."""


TUNED = (_pointer_kernel, _tma_kernel)
"""The autotuned kernels, each tuned once per machine, not once per process (``lorainit.autotune_store``)."""
_SOURCE = Path(__file__).read_text()  # (what their results depend on besides the shapes)
for _kernel in TUNED:
    autotune_store.keep(_kernel, _SOURCE)
