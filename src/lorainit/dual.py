r"""Y_b = P_b Q + U_b V_b + C_b + bias for b = 1..B in one Triton kernel: the two products of ``lorainit.fused``'s
layer (x W^T and (x A^T) D, or in the backward g W and (dL/dxa) A) accumulated in one fp32 tile, each operand read
where it lies. Two kernels compute it:

- ``_tma_kernel`` (Hopper and later; operands whose rows are 16-byte aligned and batches of whole 256-row tiles, as
  in every SmolLM2/Llama layer at a batch of whole sequences): the tiles come through tensor descriptors (TMA: the
  copy engine loads whole tiles into shared memory, zero-filled past an edge, so no masks), the path cuBLAS's Hopper
  GEMMs take;
- ``_pointer_kernel`` (anything else, a shared Q or one per batch): tiles loaded through pointers with masks.

Both accumulate in fp32 and round once to the output's dtype. ``gemm`` picks one (``TMA`` off: pointers only).
``chain`` is the same product with U = P E^T computed inside the kernel (HAS_E: accumulated from the tiles of P that
P Q reads, rounded to P's dtype, then multiplied by V; the tiles of the first column block write U out), for
``lorainit.fused``'s narrow products. V and E are read per batch (3-D descriptors, zero-filled past R), either way
round (V or V^T, E or E^T: a single member's s B^T is stored transposed). The kernels are in
``lorainit.dual_kernels``.
Measured on an H100 on the GPU alone (bench/fused_kernel.py, calls replayed from a CUDA graph;
bench/results/fused_kernel_h100_a8a1d80_gpu_alone.json), over the eight products of an 8-run SmolLM2 layer: 1.64 ms
with descriptors, 1.74 with pointers, 1.16 for cuBLAS's x W^T alone (the products without LoRA's); both compile to
wgmma. A persistent form of the descriptor kernel (a fixed grid walking the tiles, tile and K loops flattened, at
a8a1d80) took 1.59 ms there but no less in the step under CUDA graphs (218.0 vs 216.3 ms), and was removed.
"""

from __future__ import annotations

import collections
import functools

import torch
import triton
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

from .dual_kernels import INTERPRETED, TALLEST, _pointer_kernel, _tma_kernel

TMA = True
"""Whether ``gemm`` takes the descriptor kernel where it can (``tma_ok``)."""
POINTER_PRODUCTS: collections.Counter = collections.Counter()
"""The products ``gemm`` gave to the pointer kernel, counted by their operands' layouts (``_layout_key``): which
operand keeps a product off the descriptors (bench/profile_step.py writes them out). Under CUDA graphs a product is
counted when it is recorded, not at each replay."""


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


def _layouts(p, q, u, v, c, e=None) -> list | None:
    """The (shape, strides) of P, Q (or Q^T), U, V, C, E (None where not given) if ``_tma_kernel`` can compute this
    product (``gemm``'s; ``chain``'s with ``e``, U then being its output), else None (see ``tma_ok``)."""
    if not TMA or q.dim() != 2 or p.shape[1] % TALLEST != 0 or (q.shape[-1] * p.element_size()) % 16:
        return None  # (Y's rows, N wide, must be 16-byte aligned too)
    if not INTERPRETED and (not p.is_cuda or _capability(p.device.index) < 9):
        return None
    r = e.shape[1] if e is not None else u.shape[-1] if u is not None else 0
    lu = ([p.shape[0] * p.shape[1], r], [r, 1]) if e is not None else _matrix(u) if u is not None else None
    if r * p.element_size() % 16:  # (U's rows, R wide, 16-byte aligned)
        return None
    lv = None if v is None else _batched(v, transposed=_per_batch_transposed(v))
    le = None if e is None else _batched(e, transposed=_per_batch_transposed(e))
    out = [_matrix(p), _matrix(q, transposed=_q_transposed(q)), lu, lv, None if c is None else _matrix(c), le]
    given = [m for m, t in zip(out, (p, q, r or None, v, c, e)) if t is not None]
    return None if any(m is None for m in given) else out


def tma_ok(p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None) -> bool:
    """Whether ``_tma_kernel`` can compute this product: Hopper or later (or the interpreter), rows per batch a
    multiple of every tile's height, Q shared (2-D) and contiguous either way (Q or Q^T), P, U, C ``_matrix``es, V
    ``_batched`` either way (V or V^T per batch)."""
    return _layouts(p, q, u, v, c) is not None


def _block_r(k2: int) -> int:
    """The tile of U V's inner dimension R: R rounded up to a power of 2, from 16 to 64 (R > 64 loops)."""
    return max(16, min(64, triton.next_power_of_2(max(k2, 1))))


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


def _per_batch_transposed(t: Tensor) -> bool:
    """Whether a (B, R, X) ``t`` (E or V) is stored as its transpose per batch (s B^T for a B (X x R) with
    contiguous rows)."""
    return t.stride(1) == 1 and t.stride(2) != 1


def gemm(p: Tensor, q: Tensor, u: Tensor | None, v: Tensor | None, c: Tensor | None, bias: Tensor | None) -> Tensor:
    """P Q + U V + C + bias per batch (shapes as ``fused.dual_gemm``'s), by ``_tma_kernel`` where ``tma_ok``."""
    y = p.new_empty(p.shape[0], p.shape[1], q.shape[-1])
    layouts = _layouts(p, q, u, v, c)
    if layouts is None:
        POINTER_PRODUCTS[_layout_key(p, q, u, v, c)] += 1
        return _pointers(p, q, u, v, c, bias, y, None)
    _tma(p, q, u, v, c, bias, y, None, layouts)
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
    layouts = _layouts(p, q, None, v, c, e)
    if layouts is None:
        POINTER_PRODUCTS[_layout_key(p, q, e, v, c)] += 1
        return _pointers(p, q, u, v, c, bias, y, e), u
    _tma(p, q, u, v, c, bias, y, e, layouts)
    return y, u


def _tma(p, q, u, v, c, bias, y, e, layouts) -> None:
    """``_tma_kernel`` into ``y`` over operands of ``_layouts`` (U: ``chain``'s output where ``e`` is given)."""
    nb, m, k1 = p.shape
    n, has_e, has_uv = q.shape[-1], e is not None, e is None and u is not None
    lp, lq, lu, lv, lc, le = layouts
    e_t, v_t = has_e and _per_batch_transposed(e), v is not None and _per_batch_transposed(v)

    def desc(t, layout, transposed=False):  # a new descriptor per operand (its tile is set by _blocks per config)
        return TensorDescriptor(t.transpose(1, 2) if transposed else t, *layout, [1] * len(layout[0]))

    def grid(meta):
        return (m // meta["BLOCK_M"] * triton.cdiv(n, meta["BLOCK_N"]), nb)

    k2 = lu[0][1] if lu is not None else 0
    ly = ([nb * m, n], [n, 1])
    flat = desc(p, ([1, *lp[0]], [lp[0][0] * lp[1][0], *lp[1]]))  # (V not given: P's as 3-D, as V is read)
    _tma_kernel[grid](  # (an operand not given: a descriptor of P, or of Y for C, never read)
        desc(p, lp), desc(q, lq), desc(u, lu) if lu else desc(p, lp), desc(v, lv, v_t) if lv else flat,
        desc(c, lc) if lc else desc(y, ly), desc(y, ly), desc(e, le, e_t) if has_e else desc(p, lp),
        p if bias is None else bias, m, n, k1, k2,
        HAS_UV=has_uv, HAS_E=has_e, HAS_C=c is not None, HAS_BIAS=bias is not None, Q_T=_q_transposed(q), E_T=e_t,
        V_T=v_t, BLOCK_R=_block_r(k2), PRECISION=_precision(p),
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
