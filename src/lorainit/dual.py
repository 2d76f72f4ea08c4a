r"""Y_b = P_b Q + U_b V_b + C_b + bias for b = 1..B in one Triton kernel: the two products of ``lorainit.fused``'s
layer (x W^T and (x A^T) D, or in the backward g W and (dL/dxa) A) accumulated in one fp32 tile, each operand read
where it lies. Two kernels compute it:

- ``_tma_kernel`` (Hopper and later; operands whose rows are 16-byte aligned and batches of whole 256-row tiles, as
  in every SmolLM2/Llama layer at a batch of whole sequences): the tiles come through tensor descriptors (TMA: the
  copy engine loads whole tiles into shared memory, zero-filled past an edge, so no masks), the path cuBLAS's Hopper
  GEMMs take;
- ``_pointer_kernel`` (anything else, a shared Q or one per batch): tiles loaded through pointers with masks.

Both accumulate in fp32 and round once to the output's dtype. ``gemm`` picks one (``TMA`` off: pointers only).
Measured on an H100 on the GPU alone (bench/fused_kernel.py, calls replayed from a CUDA graph;
bench/results/fused_kernel_h100_a8a1d80_gpu_alone.json), over the eight products of an 8-run SmolLM2 layer: 1.64 ms
with descriptors, 1.74 with pointers, 1.16 for cuBLAS's x W^T alone (the products without LoRA's); both compile to
wgmma. A persistent form of the descriptor kernel (a fixed grid walking the tiles, tile and K loops flattened, at
a8a1d80) took 1.59 ms there but no less in the step under CUDA graphs (218.0 vs 216.3 ms), and was removed.
"""

from __future__ import annotations

import collections
import functools
import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TMA = True
"""Whether ``gemm`` takes the descriptor kernel where it can (``tma_ok``)."""
POINTER_PRODUCTS: collections.Counter = collections.Counter()
"""The products ``gemm`` gave to the pointer kernel, counted by their operands' layouts (``_layout_key``): which
operand keeps a product off the descriptors (bench/profile_step.py writes them out). Under CUDA graphs a product is
counted when it is recorded, not at each replay."""


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
    if nargs["HAS_E"]:  # E_b and V_b whole (3-D: zero-filled past R within the batch), U's tile of all R columns
        nargs["e_desc"].block_shape = [1, bk, br] if nargs["E_T"] else [1, br, bk]
        nargs["u_desc"].block_shape = [bm, br]
        nargs["v_desc"].block_shape = [1, br, bn]
    else:
        nargs["e_desc"].block_shape = [bm, bk]  # (unused: P's)
        nargs["u_desc"].block_shape = [bm, br]
        nargs["v_desc"].block_shape = [br, bn]


@triton.autotune(configs=_tma_configs(), key=["M", "N", "K1", "K2", "HAS_UV", "HAS_E", "HAS_C", "Q_T", "E_T"])
@triton.jit
def _tma_kernel(
    p_desc, q_desc, u_desc, v_desc, c_desc, y_desc, e_desc, BIAS, M, N, K1, K2,
    HAS_UV: tl.constexpr, HAS_E: tl.constexpr, HAS_C: tl.constexpr, HAS_BIAS: tl.constexpr, Q_T: tl.constexpr,
    E_T: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # P, U, C, Y are 2-D over all batches' rows (B*M x .), V over all batches' R rows (B*K2 x N): a tile of Y_b
    # starts at row b*M + om and its V rows at b*K2; M is a multiple of BLOCK_M and K2 of BLOCK_R, so no tile
    # crosses a batch (a diverged run's NaN stays in its own rows)
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
        acc = tl.dot(u16, v_desc.load([b, 0, on]).reshape(BLOCK_R, BLOCK_N), acc, input_precision=PRECISION)
    if HAS_UV:  # + U_b V_b
        for k in range(0, K2, BLOCK_R):
            acc = tl.dot(u_desc.load([om, k]), v_desc.load([b * K2 + k, on]), acc, input_precision=PRECISION)
    if HAS_C:
        acc += c_desc.load([om, on]).to(tl.float32)
    if HAS_BIAS:
        rn = on + tl.arange(0, BLOCK_N)
        acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    y_desc.store([om, on], acc.to(y_desc.dtype))


_TALLEST = max(c.kwargs["BLOCK_M"] for c in _tma_configs())  # (rows a batch must be a multiple of)


@functools.cache
def _capability(index: int | None) -> int:
    """The CUDA device's major compute capability (9: Hopper), asked once per device (this runs at every call)."""
    return torch.cuda.get_device_capability(index)[0]


def _matrix(t: Tensor, transposed: bool = False) -> tuple[list[int], list[int]] | None:
    """(shape, strides) of ``t`` as one matrix TMA can read, else None: a (B, rows, cols) tensor as (B*rows, cols)
    (batches one after another), a 2-D one as itself (``transposed``: t^T, for a Q = W^T with W contiguous); rows
    contiguous, row stride and start 16-byte aligned. Arithmetic on sizes only (no views: this runs at each call)."""
    shape, strides = list(t.shape), list(t.stride())
    if transposed:
        shape, strides = shape[::-1], strides[::-1]
    if len(shape) == 3:
        if shape[0] > 1 and strides[0] != shape[1] * strides[1]:
            return None
        shape, strides = [shape[0] * shape[1], shape[2]], strides[1:]
    if strides[1] != 1 or strides[0] * t.element_size() % 16 or t.data_ptr() % 16:
        return None
    return shape, strides


def _q_transposed(q: Tensor) -> bool:
    """Whether Q (K1 x N) is W^T for a W (N x K1) with contiguous rows (the forward's Q), not Q's own rows."""
    return q.stride(0) == 1 and q.stride(1) != 1


def _precision(p: Tensor) -> str:
    """tl.dot's input precision: float32 products in IEEE precision (torch's default), not TF32."""
    return "ieee" if p.dtype == torch.float32 else "tf32"


def _layouts(p, q, u, v, c) -> list | None:
    """Each operand's ``_matrix`` (P, Q or Q^T, then U, V, C where given) if ``_tma_kernel`` can compute this
    product, else None (see ``tma_ok``)."""
    if not TMA or q.dim() != 2 or p.shape[1] % _TALLEST != 0 or (q.shape[-1] * p.element_size()) % 16:
        return None  # (Y's rows, N wide, must be 16-byte aligned too)
    if u is not None and u.shape[-1] % 16 != 0:  # (R in whole tiles of BLOCK_R)
        return None
    if not INTERPRETED and (not p.is_cuda or _capability(p.device.index) < 9):
        return None
    out = [_matrix(p), _matrix(q, transposed=_q_transposed(q))]
    out += [_matrix(t) for t in (u, v, c) if t is not None]
    return None if any(m is None for m in out) else out


def tma_ok(p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None) -> bool:
    """Whether ``_tma_kernel`` can compute this product: Hopper or later (or the interpreter), rows per batch a
    multiple of every tile's height, R of 16, Q shared (2-D) and contiguous either way (Q or Q^T), every operand a
    ``_matrix``."""
    return _layouts(p, q, u, v, c) is not None


def _block_r(k2: int) -> int:
    """The tile of U V's inner dimension R: R rounded up to a power of 2, from 16 to 64 (R > 64 loops)."""
    return max(16, min(64, triton.next_power_of_2(max(k2, 1))))


def _block_r_whole(k2: int) -> int:
    """The largest of 64, 32, 16 that divides R (a multiple of 16): whole tiles of V within each batch."""
    return next(b for b in (64, 32, 16) if k2 % b == 0)


def _layout_key(*operands) -> tuple:
    """Each operand's (shape, strides, start offset modulo 16 bytes), None where not given."""
    return tuple(None if t is None else (tuple(t.shape), t.stride(), t.data_ptr() % 16) for t in operands)


def _batched(t: Tensor, transposed: bool = False) -> tuple[list[int], list[int]] | None:
    """(shape, strides) of a (B, rows, cols) ``t`` (``transposed``: of t^T per batch) as a 3-D tensor TMA can read,
    batches anywhere: rows contiguous, batch and row strides and start 16-byte aligned; else None."""
    shape, strides = list(t.shape), list(t.stride())
    if transposed:
        shape[1:], strides[1:] = shape[:0:-1], strides[:0:-1]
    if strides[2] != 1 or (strides[0] * t.element_size()) % 16 or (strides[1] * t.element_size()) % 16:
        return None
    return (shape, strides) if t.data_ptr() % 16 == 0 else None


def _chain_layouts(p, q, e, v, c) -> list | None:
    """P's, Q's (or Q^T's), E's (or E^T's, ``_e_transposed``), V's and C's layouts if ``_tma_kernel`` can compute
    ``chain``'s product, else None: as ``_layouts``, with E and V read per batch (3-D) and U written in whole rows."""
    if not TMA or q.dim() != 2 or p.shape[1] % _TALLEST != 0 or (q.shape[-1] * p.element_size()) % 16:
        return None
    if (e.shape[1] * p.element_size()) % 16:  # (U's rows, R wide)
        return None
    if not INTERPRETED and (not p.is_cuda or _capability(p.device.index) < 9):
        return None
    out = [_matrix(p), _matrix(q, transposed=_q_transposed(q))]
    out += [_batched(e, transposed=_e_transposed(e)), _batched(v)] + ([_matrix(c)] if c is not None else [])
    return None if any(m is None for m in out) else out


def _e_transposed(e: Tensor) -> bool:
    """Whether E (B, R, K1) is stored as its transpose per batch (s B^T for a B (K1 x R) with contiguous rows)."""
    return e.stride(1) == 1 and e.stride(2) != 1


def gemm(p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None, bias: Tensor | None) -> Tensor:
    """P Q + U V + C + bias per batch (shapes as ``fused.dual_gemm``'s), by ``_tma_kernel`` where ``tma_ok``."""
    y = p.new_empty(p.shape[0], p.shape[1], q.shape[-1])
    layouts = _layouts(p, q, u, v, c)
    if layouts is None:
        POINTER_PRODUCTS[_layout_key(p, q, u, v, c)] += 1
        return _pointers(p, q, u, v, c, bias, y, None)
    lp, lq, *rest = layouts  # (shape, strides) of P, Q, then U, V, C where given
    lu, lv = (rest[0], rest[1]) if u is not None else (lp, lp)
    _tma(p, q, u, v, c, bias, y, None, lp, lq, lu, lv, rest[-1] if c is not None else None, None)
    return y


CHAIN_R = 64
"""The widest R that ``chain`` takes (its U is one tile of the kernel, beside the output's)."""


def chain(p: Tensor, q: Tensor, e: Tensor, v: Tensor, c: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """(Y, U) with U = P E^T and Y = P Q + U V + C + bias per batch, U computed in the same kernel from the tiles of
    P that P Q reads (its fp32 sum rounded to P's dtype, as a stored U, before U V): e (B, R, K1), v (B, R, N),
    R <= ``CHAIN_R``; the rest as ``gemm``'s. U (B, M, R) is written by the tiles of Y's first column block."""
    nb, m, _ = p.shape
    if e.shape[1] > CHAIN_R:
        raise ValueError(f"chain: R = {e.shape[1]} is wider than CHAIN_R = {CHAIN_R}; use gemm with U given")
    y, u = p.new_empty(nb, m, q.shape[-1]), p.new_empty(nb, m, e.shape[1])
    layouts = _chain_layouts(p, q, e, v, c)
    if layouts is None:
        POINTER_PRODUCTS[_layout_key(p, q, e, v, c)] += 1
        return _pointers(p, q, u, v, c, bias, y, e), u
    lp, lq, le, lv, *lc = layouts
    lu = ([nb * m, e.shape[1]], [e.shape[1], 1])
    _tma(p, q, u, v, c, bias, y, e, lp, lq, lu, lv, lc[0] if lc else None, le)
    return y, u


def _tma(p, q, u, v, c, bias, y, e, lp, lq, lu, lv, lc, le) -> None:
    """``_tma_kernel`` over operands of layouts ``l*`` ((shape, strides) each; unused ones None) into ``y``."""
    nb, m, k1 = p.shape
    n, has_e, has_uv = q.shape[-1], e is not None, e is None and u is not None
    k2 = e.shape[1] if has_e else u.shape[-1] if has_uv else 0
    ly = ([nb * m, n], [n, 1])

    def desc(t, layout):  # a new descriptor per operand (its tile is set by _blocks for each config)
        return TensorDescriptor(t, *layout, [1] * len(layout[0]))

    def grid(meta):
        return (m // meta["BLOCK_M"] * triton.cdiv(n, meta["BLOCK_N"]), nb)

    e_t = has_e and _e_transposed(e)
    block_r = _block_r(k2) if has_e else _block_r_whole(k2 or 16)
    _tma_kernel[grid](
        desc(p, lp), desc(q, lq), desc(u, lu) if has_e or has_uv else desc(p, lp),
        desc(v, lv) if has_e or has_uv else desc(p, lp), desc(c, lc) if c is not None else desc(y, ly),
        desc(y, ly), desc(e.transpose(1, 2) if e_t else e, le) if has_e else desc(p, lp),
        p if bias is None else bias, m, n, k1, k2,
        HAS_UV=has_uv, HAS_E=has_e, HAS_C=c is not None, HAS_BIAS=bias is not None, Q_T=_q_transposed(q), E_T=e_t,
        BLOCK_R=block_r, PRECISION=_precision(p),
    )  # fmt: skip


def _pointers(p, q, u, v, c, bias, y, e) -> Tensor:
    """``gemm`` (``e`` None) or ``chain`` (U written to ``u``) by ``_pointer_kernel`` into ``y``."""
    nb, m, k1 = p.shape
    n = q.shape[-1]
    qs = (0, *q.stride()) if q.dim() == 2 else q.stride()
    has_e, has_uv = e is not None, e is None and u is not None
    k2 = e.shape[1] if has_e else u.shape[-1] if has_uv else 0
    us, vs = (u.stride(), v.stride()) if has_e or has_uv else ((0, 0, 0), (0, 0, 0))
    cs = c.stride() if c is not None else (0, 0, 0)
    es = e.stride() if has_e else (0, 0, 0)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), nb)

    _pointer_kernel[grid](
        p, q, p if u is None else u, p if v is None else v, p if c is None else c, p if bias is None else bias, y,
        p if e is None else e, m, n, k1, k2, *p.stride(), *qs, *us, *vs, *cs, *y.stride(), *es,
        HAS_UV=has_uv, HAS_E=has_e, HAS_C=c is not None, HAS_BIAS=bias is not None, BLOCK_R=_block_r(k2),
        PRECISION=_precision(p),
    )  # fmt: skip
    return y
