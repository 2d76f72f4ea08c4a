"""HRP's init from a preheated product (reconstruction of Chen et al. 2025, see inits/hrp.py)."""

import pytest
import torch

from lorainit.inits import Factors, get


def preheated(out=20, inp=30, r_p=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Factors(
        A=torch.randn(r_p, inp, generator=g, dtype=torch.float64),
        B=torch.randn(out, r_p, generator=g, dtype=torch.float64),
    )


def test_a_is_the_top_right_singular_directions_of_the_product_with_unit_rows():
    p = preheated()
    W = torch.zeros(20, 30, dtype=torch.float64)
    f = get("hrp")(W, 2, preheated=p)
    _, _, Vh = torch.linalg.svd(p.B @ p.A)
    torch.testing.assert_close(f.A @ f.A.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close((f.A.T @ f.A), Vh[:2].T @ Vh[:2])  # same row space (signs aside)
    assert torch.count_nonzero(f.B) == 0 and f.residual is None


def test_sqrt_s_scaling_and_seeded_b_keep_the_output():
    p = preheated()
    W = torch.randn(20, 30, dtype=torch.float64)
    S = torch.linalg.svdvals(p.B @ p.A)
    f = get("hrp")(W, 2, preheated=p, a_scale="sqrt_s")
    torch.testing.assert_close(torch.linalg.norm(f.A, dim=1), S[:2].sqrt())
    g = get("hrp")(W, 2, preheated=p, seed_b=True, scaling=2.0)
    U, S2, Vh = torch.linalg.svd(p.B @ p.A)
    torch.testing.assert_close(2.0 * g.B @ g.A, U[:, :2] @ torch.diag(S2[:2]) @ Vh[:2])
    torch.testing.assert_close(g.residual + 2.0 * g.B @ g.A, W)


def test_refusals():
    W = torch.zeros(20, 30)
    with pytest.raises(ValueError, match="preheat rank 2 is below the LoRA rank 3"):
        get("hrp")(W, 3, preheated=preheated(r_p=2))
    with pytest.raises(ValueError, match="do not fit"):
        get("hrp")(torch.zeros(30, 20), 2, preheated=preheated())
    with pytest.raises(ValueError, match="a_scale"):
        get("hrp")(W, 2, preheated=preheated(), a_scale="big")


def test_factored_svd_equals_the_svd_of_the_product():
    from lorainit.inits.hrp import factored_svd

    p = preheated(out=50, inp=70, r_p=6)
    U, S, Vh = factored_svd(p.B, p.A, 4)
    U2, S2, Vh2 = torch.linalg.svd(p.B @ p.A)
    torch.testing.assert_close(S, S2[:4])
    torch.testing.assert_close(U @ torch.diag(S) @ Vh, U2[:, :4] @ torch.diag(S2[:4]) @ Vh2[:4])
    torch.testing.assert_close(Vh @ Vh.T, torch.eye(4, dtype=torch.float64))
