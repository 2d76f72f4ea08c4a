"""PiSSA and the target oracle: closed-form checks, randomized vs full SVD, refusals."""
import pytest
import torch

from lorainit.inits import get
from lorainit.inits.spectral import top_svd


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
