"""lorainit.dual's kernels, run on the CPU by Triton's interpreter: Y = P Q + U V + C + bias per batch, through
pointers (any sizes and strides) and through TMA descriptors (aligned rows; edges zero-filled), with no tile reaching
into another batch's rows. The checks run in a child pytest with TRITON_INTERPRET=1 (``test_under_the_interpreter``),
since the interpreter is chosen when Triton is imported."""

import pytest
import torch
from helpers import INTERPRETED, run_interpreted
from helpers import interpreted as child

triton = pytest.importorskip("triton")


@pytest.mark.skipif(INTERPRETED, reason="the parent of the interpreted tests")
def test_under_the_interpreter():
    run_interpreted(__file__, passed=14)


def _rand(*shape, g):
    return torch.randn(*shape, generator=g)


@child
@pytest.mark.parametrize("k2", [5, 70])  # one block of R, and R over several blocks (BLOCK_R is at most 64)
@pytest.mark.parametrize("m,k1", [(37, 23), (32, 48)])  # sizes no tile divides; whole tiles (loads without masks)
def test_dual_gemm_is_pq_plus_uv_plus_c_plus_bias(k2, m, k1):
    from lorainit import dual

    g = torch.Generator().manual_seed(k2)
    p = _rand(2, m, k1, g=g)  # (B, M, K1)
    q = _rand(19, k1, g=g).t()  # (K1, N): shared by the batch, a transposed view
    u, v = _rand(2, k2, m, g=g).transpose(1, 2), _rand(2, k2, 19, g=g)  # u a strided view
    c, bias = _rand(2, m, 19, g=g), _rand(19, g=g)
    want = p @ q + u @ v + c + bias
    torch.testing.assert_close(dual.gemm(p, q, u, v, c, bias), want, rtol=1e-5, atol=1e-5)
    qb = _rand(2, k1, 19, g=g)  # (B, K1, N): one per batch
    torch.testing.assert_close(dual.gemm(p, qb, None, None, None, None), p @ qb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dual.gemm(p, q, None, None, c, None), p @ q + c, rtol=1e-5, atol=1e-5)


@child
@pytest.mark.parametrize("k1,k2", [(24, 16), (48, 80)])  # K1 past a whole tile, R over one and several blocks
@pytest.mark.parametrize("q_t", [True, False])  # Q = W^T (the forward's) or Q = W (the backward's)
def test_tma_kernel_is_pq_plus_uv_plus_c_plus_bias(k1, k2, q_t):
    """The descriptor kernel (zero-filled tiles past the edges: 20 columns, K1 and R past whole tiles; batches of
    whole row tiles) and the pointer kernel agree with torch on operands TMA can read (rows 16-byte aligned, last
    dimension contiguous, batches one after another)."""
    from lorainit import dual

    g = torch.Generator().manual_seed(k1 + k2)
    p, u, v = _rand(2, 48, k1, g=g), _rand(2, 48, k2, g=g), _rand(2, k2, 20, g=g)
    q = _rand(20, k1, g=g).t() if q_t else _rand(k1, 20, g=g)  # (K1, N)
    c, bias = _rand(2, 48, 20, g=g), _rand(20, g=g)
    want = p @ q + u @ v + c + bias
    assert dual.tma_ok(p, q, u, v, c)
    for tma in (True, False):
        dual.TMA = tma
        try:
            assert dual.tma_ok(p, q, u, v, c) == tma
            torch.testing.assert_close(dual.gemm(p, q, u, v, c, bias), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(dual.gemm(p, q, None, None, None, None), p @ q, rtol=1e-5, atol=1e-5)
        finally:
            dual.TMA = True
    v[1] = float("nan")  # batch 1's V (a diverged run's adapter) reaches no other batch's output
    y = dual.gemm(p, q, u, v, c, bias)
    torch.testing.assert_close(y[0], want[0], rtol=1e-5, atol=1e-5)
    assert y[1].isnan().all()
    v = _rand(2, k2, 20, g=g)  # (a fresh V, no NaN)
    dual.POINTER_PRODUCTS.clear()
    dual.gemm(p, q, u, v, c, bias)  # (the descriptors: not counted)
    u1, v1 = u[..., 1:13], v[:, 1:13]  # U's rows starting 4 bytes past 16: the pointer kernel
    for _ in range(2):
        torch.testing.assert_close(dual.gemm(p, q, u1, v1, c, bias), p @ q + u1 @ v1 + c + bias, rtol=1e-5, atol=1e-5)
    (key, calls), *others = dual.POINTER_PRODUCTS.items()
    assert calls == 2 and not others  # counted by layout: U and V of 12, with their strides and 16-byte offsets
    assert key[2] == ((2, 48, 12), (48 * k2, k2, 1), (u.data_ptr() + 4) % 16) and key[4] == (
        (2, 48, 20),
        (960, 20, 1),
        0,
    )
    vt = v.transpose(1, 2).contiguous().transpose(1, 2)  # V stored as V^T per batch (a single member's s B^T)
    for uu, vv in ((u[..., :12], v[:, :12]), (u, vt)):  # R of 12 (zero-filled to the tile, per batch); V^T
        assert dual.tma_ok(p, q, uu, vv, c) and dual._per_batch_transposed(vv) == (vv is vt)
        torch.testing.assert_close(dual.gemm(p, q, uu, vv, c, bias), p @ q + uu @ vv + c + bias, rtol=1e-5, atol=1e-5)
    assert not dual.tma_ok(p[:, :, 1:], q[1:], u, v, c)  # a row start off 16 bytes
    assert not dual.tma_ok(p[:, 1:], q, u[:, 1:], v, c[:, 1:])  # 47 rows a batch: a tile would cross batches
    assert not dual.tma_ok(p, q, u, v, c.transpose(0, 1).contiguous().transpose(0, 1))  # batches not in order


@child
@pytest.mark.parametrize("e_t", [False, True])  # E (B, R, K1) with rows contiguous (A), or stored as E^T (s B^T)
@pytest.mark.parametrize("m,k1,r,tma", [(48, 40, 12, True), (48, 24, 64, True), (37, 23, 5, False)])
def test_chain_computes_u_in_the_kernel_and_adds_its_product(e_t, m, k1, r, tma):
    """chain: U = P E^T and Y = P Q + U V + C + bias, by descriptors (E and V read per batch, R = 12 padded to a
    16-wide tile with zeros, not with the next batch's rows: a NaN in batch 1 stays there) or pointers (sizes no
    tile divides)."""
    from lorainit import dual

    g = torch.Generator().manual_seed(m + r)
    p, q = _rand(2, m, k1, g=g), _rand(20, k1, g=g).t()
    e = _rand(2, k1, r, g=g).transpose(1, 2) if e_t else _rand(2, r, k1, g=g)
    v, c, bias = _rand(2, r, 20, g=g), _rand(2, m, 20, g=g), _rand(20, g=g)
    assert dual._per_batch_transposed(e) == e_t and (dual._layouts(p, q, None, v, c, e) is not None) == tma
    u_want = p @ e.transpose(1, 2)
    y, u = dual.chain(p, q, e, v, c, bias)
    torch.testing.assert_close(u, u_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, p @ q + u_want @ v + c + bias, rtol=1e-4, atol=1e-4)
    y, u = dual.chain(p, q[:, :7], e, v[:, :, :7], None, None)  # (7 columns: one column tile)
    torch.testing.assert_close(u, u_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, p @ q[:, :7] + u_want @ v[:, :, :7], rtol=1e-4, atol=1e-4)
    e[1], v[1] = float("nan"), float("nan")  # batch 1's adapters (a diverged run's) reach no other batch's rows
    y, u = dual.chain(p, q, e, v, c, bias)
    torch.testing.assert_close(y[0], (p @ q + u_want @ v + c + bias)[0], rtol=1e-4, atol=1e-4)
    assert y[1].isnan().all() and u[1].isnan().all() and not u[0].isnan().any()
    with pytest.raises(ValueError, match="CHAIN_R"):
        dual.chain(p, q, _rand(2, 65, k1, g=g), _rand(2, 65, 20, g=g), None, None)
