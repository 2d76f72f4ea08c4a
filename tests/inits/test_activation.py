"""EVA (inits/activation.py): the principal directions of a layer's inputs, from the inputs or from a square root of
their centred scatter matrix."""

import pytest
import torch

from lorainit.inits import get


def inputs(seed=0):
    """4000 inputs of 20 features with principal directions basis[:, 0..2] (scales 5, 3, 2) and a mean of 7."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    scales = torch.tensor([5.0, 3.0, 2.0] + [0.1] * 17, dtype=torch.float64)
    return (
        torch.randn(4000, 20, generator=g, dtype=torch.float64) * scales
    ) @ basis.T + 7.0, basis  # offset: centring matters


def test_eva_takes_the_principal_directions_of_the_centred_inputs():
    X, basis = inputs()
    f = get("eva")(torch.zeros(8, 20, dtype=torch.float64), 3, activations=X)
    for i in range(3):
        assert abs(float(f.A[i] @ basis[:, i])) > 0.99
    assert torch.count_nonzero(f.B) == 0
    w = get("eva")(torch.zeros(8, 20, dtype=torch.float64), 3, activations=X, whiten=True)
    assert torch.linalg.norm(w.A[0]) < torch.linalg.norm(w.A[2])  # 1/sqrt(s_i) grows down the spectrum
    with pytest.raises(ValueError, match="features"):
        get("eva")(torch.zeros(8, 21), 3, activations=X.float())
    with pytest.raises(ValueError, match="collect more data"):
        get("eva")(torch.zeros(8, 20), 3, activations=X[:3].float())


def test_a_square_root_of_the_centred_scatter_gives_the_same_directions_as_the_inputs():
    X, _ = inputs(1)
    W = torch.zeros(8, 20, dtype=torch.float64)
    Xc = X - X.mean(0)
    lam, V = torch.linalg.eigh(Xc.T @ Xc)  # ascending
    lam, V = lam.flip(0), V.flip(1)
    R = lam.sqrt()[:, None] * V.T  # (20, 20): R^T R = Xc^T Xc
    torch.testing.assert_close(R.T @ R, Xc.T @ Xc)
    direct = get("eva")(W, 3, activations=X)
    for rows in (R, R[:5]):  # the whole root, or its k = 5 >= r leading rows (stats.activation_scatter(keep=r))
        f = get("eva")(W, 3, activations=rows, center=False)
        torch.testing.assert_close((f.A * direct.A).sum(1).abs(), torch.ones(3, dtype=torch.float64))  # same directions
        fw = get("eva")(W, 3, activations=rows, center=False, whiten=True)
        w = get("eva")(W, 3, activations=X, whiten=True)
        torch.testing.assert_close(fw.A.abs(), w.A.abs())  # and the same singular values (whiten divides by sqrt(s_i))
    with pytest.raises(ValueError, match="collect more data"):
        get("eva")(W, 3, activations=R[:2], center=False)  # 2 rows span at most 2 directions
