"""LoRA-GA and LoRA-One: closed forms on gradients with a known spectrum."""

import pytest
import torch

from lorainit.inits import get


def known_svd(m=40, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    S = torch.linspace(10, 1, min(m, n), dtype=torch.float64)
    return U[:, :n] @ torch.diag(S) @ V.T, U[:, :n], S, V.T


def same_rows_up_to_sign(X, Y):
    torch.testing.assert_close((X * Y).sum(1).abs(), (X * X).sum(1).sqrt() * (Y * Y).sum(1).sqrt())


def test_lora_ga_takes_a_from_the_top_r_and_b_from_the_next_r_and_shifts_the_base():
    G, U, S, Vh = known_svd()
    W = torch.randn(40, 30, dtype=torch.float64)
    f = get("lora_ga")(W, 3, grad=G, scaling=2.0, stable_gamma=4.0)
    c = 40**0.25 / 2.0
    same_rows_up_to_sign(f.A, c * Vh[:3])
    same_rows_up_to_sign(f.B.T, c * U[:, 3:6].T)
    torch.testing.assert_close(f.residual + 2.0 * f.B @ f.A, W)
    g = get("lora_ga")(W, 3, grad=G, direction="A2rBr", scale="unit")
    same_rows_up_to_sign(g.A, Vh[3:6])
    with pytest.raises(ValueError, match="2r = 32"):
        get("lora_ga")(W, 16, grad=G)


def test_lora_one_is_a_normalized_top_r_gradient_step_and_keeps_the_base():
    G, U, S, Vh = known_svd()
    W = torch.randn(40, 30, dtype=torch.float64)
    f = get("lora_one")(W, 3, grad=G, gamma=8.0)
    top = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    torch.testing.assert_close(f.B @ f.A, -top / (8.0 * S[0]))
    assert f.residual is None
    with pytest.raises(ValueError, match="gradient is zero"):
        get("lora_one")(W, 3, grad=torch.zeros_like(W))


@pytest.mark.parametrize("name", ["lora_ga", "lora_one"])
def test_gradient_of_the_wrong_shape_is_refused(name):
    with pytest.raises(ValueError, match="gradient has shape"):
        get(name)(torch.zeros(8, 6), 2, grad=torch.zeros(6, 8))
