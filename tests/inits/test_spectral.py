"""PiSSA and the target oracle: closed-form checks, randomized vs full SVD, refusals."""

import pytest
import torch

from lorainit.inits import get
from lorainit.inits.spectral import _small_svd, orthonormal_basis, pissa_stack, top_svd


def low_rank_plus_noise(m=60, n=40, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    S = torch.tensor([10.0, 8, 6, 4, 2, 1], dtype=torch.float64)[:k]
    return U @ torch.diag(S) @ V.T + 0.01 * torch.randn(m, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("scaling", [1.0, 2.0])
def test_pissa_adapter_is_the_top_r_part_of_W(scaling):
    W = low_rank_plus_noise()
    f = get("pissa")(W, 3, scaling=scaling)
    U, S, Vh = torch.linalg.svd(W)
    top = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    torch.testing.assert_close(scaling * f.B @ f.A, top)
    torch.testing.assert_close(f.residual, W - top)
    torch.testing.assert_close(f.A @ f.A.T, torch.diag(S[:3] / scaling))  # A = sqrt(S/s) V^T


def subspace_gap(V1, V2):
    """Largest principal-angle sine between the row spaces of V1 and V2 (orthonormal rows)."""
    return torch.linalg.matrix_norm(V1.T @ V1 - V2.T @ V2, ord=2).item()


@pytest.mark.parametrize("niter", [1, 4])
def test_randomized_svd_agrees_with_full_svd_on_the_top_r_subspace(niter):
    W = low_rank_plus_noise()
    _, S, Vh = top_svd(W, 3)
    _, Sr, Vhr = top_svd(W, 3, niter=niter, generator=torch.Generator().manual_seed(0))
    assert subspace_gap(Vh, Vhr) < 1e-3
    torch.testing.assert_close(Sr, S, rtol=1e-4, atol=0)


def test_randomized_pissa_uses_the_generator_and_is_close_to_full():
    W = low_rank_plus_noise().float()
    full = get("pissa")(W, 3)
    a = get("pissa")(W, 3, niter=2, generator=torch.Generator().manual_seed(0))
    b = get("pissa")(W, 3, niter=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.B @ a.A, full.B @ full.A, atol=1e-3, rtol=1e-3)
    assert not torch.equal(a.A, b.A) or not torch.equal(a.B, b.B)


def test_svd_schemes_refuse_quantized_and_non_finite_weights():
    with pytest.raises(TypeError, match="quantized or packed"):
        get("pissa")(torch.zeros(8, 8, dtype=torch.uint8), 2)
    W = torch.randn(8, 8)
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        get("pissa")(W, 2)


def test_target_spans_the_top_right_singular_directions():
    M = torch.zeros(32, 32)
    M[:12, :12] = torch.eye(12) * torch.linspace(3, 1, 12)
    f = get("target")(torch.zeros(32, 32), 2, target=M)
    torch.testing.assert_close(f.A.abs(), torch.eye(32)[:2], atol=1e-6, rtol=0)
    assert torch.count_nonzero(f.B) == 0
    with pytest.raises(ValueError, match="shape"):
        get("target")(torch.zeros(32, 32), 2, target=torch.zeros(3, 3))


def stack_of(L=3, seed=0):
    return torch.stack([low_rank_plus_noise(seed=seed + i) for i in range(L)])  # (L, 60, 40) float64


@pytest.mark.parametrize("niter", [None, 2])
def test_a_stack_decomposes_each_matrix_as_alone(niter):
    M = stack_of()
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    U, S, Vh = top_svd(M, 3, niter=niter, generator=gens())
    assert U.shape == (3, 60, 3) and S.shape == (3, 3) and Vh.shape == (3, 3, 40)
    for i, g in enumerate(gens()):
        u, s, vh = top_svd(M[i], 3, niter=niter, generator=g)
        torch.testing.assert_close(S[i], s)
        torch.testing.assert_close(U[i] * S[i] @ Vh[i], u * s @ vh)  # singular vectors up to sign


def test_a_stack_needs_one_generator_per_matrix():
    with pytest.raises(ValueError, match="needs as many generators"):
        top_svd(stack_of(), 3, niter=1, generator=[torch.Generator()])


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(4, 50, 6, generator=g),  # well conditioned: CholeskyQR2
        lambda g: torch.randn(4, 50, 6, generator=g) * torch.logspace(0, -7, 6),  # cond 1e7: Householder
        lambda g: torch.cat([torch.randn(4, 50, 5, generator=g), torch.zeros(4, 50, 1)], -1),  # rank-deficient
    ],
)
def test_orthonormal_basis_is_orthonormal_and_spans_y(make):
    Y = make(torch.Generator().manual_seed(0)).double()
    Q = orthonormal_basis(Y)
    eye = torch.eye(6, dtype=Y.dtype).expand(4, 6, 6)
    torch.testing.assert_close(Q.mT @ Q, eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(Q @ (Q.mT @ Y), Y, atol=1e-10, rtol=0)  # Y's columns lie in span(Q)


def test_orthonormal_basis_takes_choleskyqr_only_when_well_conditioned(monkeypatch):
    calls = []
    real = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda Y: calls.append(1) or real(Y))
    g = torch.Generator().manual_seed(0)
    orthonormal_basis(torch.randn(2, 30, 4, generator=g))
    assert calls == []
    orthonormal_basis(torch.randn(2, 30, 4, generator=g) * torch.tensor([1, 1, 1, 1e-7]))
    assert calls == [1]


@pytest.mark.parametrize("degenerate", [None, "kept", "dropped"])
def test_small_svd_equals_the_svd(degenerate, monkeypatch):
    Bm = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if degenerate:
        Bm[1, 4] = Bm[1, 3]  # rank 4 of 5: the last singular value is 0
    keep = 5 if degenerate == "kept" else 4
    calls = []
    real = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    U, S, Vh = _small_svd(Bm, keep)
    assert calls == ([1] if degenerate == "kept" else [])  # the full SVD only where a kept value is 0
    u, s, vh = real(Bm, full_matrices=False)
    torch.testing.assert_close(S, s[..., :keep])
    torch.testing.assert_close(U * S[..., None, :] @ Vh, u[..., :keep] * s[..., None, :keep] @ vh[..., :keep, :])
    eye = torch.eye(keep, dtype=Bm.dtype).expand(3, keep, keep)
    torch.testing.assert_close(Vh @ Vh.mT, eye)  # orthonormal rows, even at S = 0
    torch.testing.assert_close((U.mT @ u[..., :keep]).abs(), eye, atol=1e-6, rtol=0)


@pytest.mark.parametrize("niter", [None, 3])
def test_pissa_stack_equals_pissa_per_layer(niter):
    W = stack_of().float()
    fs = pissa_stack(W, 3, generators=[torch.Generator().manual_seed(i) for i in range(3)], scaling=2.0, niter=niter)
    for i, f in enumerate(fs):
        one = get("pissa")(W[i], 3, generator=torch.Generator().manual_seed(i), scaling=2.0, niter=niter)
        torch.testing.assert_close(f.B @ f.A, one.B @ one.A, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(f.residual, one.residual, atol=1e-5, rtol=1e-5)


def test_randomized_pissa_of_a_zero_weight_is_zero():
    f = get("pissa")(torch.zeros(20, 12), 3, niter=2, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(f.A) == 0 and torch.count_nonzero(f.B) == 0 and torch.count_nonzero(f.residual) == 0
