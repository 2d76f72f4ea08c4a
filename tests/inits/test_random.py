"""Init[A] and Init[B] draw exactly the distributions their docstrings state (Kolmogorov-Smirnov tests)."""

import math

import pytest
import torch
from scipy import stats

from lorainit.inits import get


def ks_normal(x: torch.Tensor, std: float) -> float:
    return stats.kstest((x.flatten().double() / std).numpy(), "norm").pvalue


def test_init_a_is_B_zero_A_normal_with_variance_one_over_fan_in():
    W = torch.empty(300, 512)
    f = get("init_a")(W, 8, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(f.B) == 0
    assert ks_normal(f.A, 512**-0.5) > 1e-3
    assert f.A.var().item() == pytest.approx(1 / 512, rel=0.05)


def test_init_b_is_A_zero_B_normal_with_variance_one_over_rank():
    W = torch.empty(512, 300)
    f = get("init_b")(W, 8, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(f.A) == 0
    assert ks_normal(f.B, 8**-0.5) > 1e-3
    assert f.B.var().item() == pytest.approx(1 / 8, rel=0.05)


@pytest.mark.parametrize("name, factor", [("init_a", "A"), ("init_b", "B")])
def test_explicit_std_is_used(name, factor):
    f = get(name)(torch.empty(256, 256), 4, generator=torch.Generator().manual_seed(1), std=0.3)
    assert ks_normal(getattr(f, factor), 0.3) > 1e-3


def test_the_ks_check_can_fail():
    """Guard against a vacuous test: the wrong variance is rejected."""
    f = get("init_a")(torch.empty(300, 512), 8, generator=torch.Generator().manual_seed(0))
    assert ks_normal(f.A, 2 * 512**-0.5) < 1e-6


def test_same_factors_on_any_device_dtype():
    """Draws happen on the CPU in float32, then are cast: float64 factors equal the float32 ones."""
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a32 = get("init_a")(torch.empty(10, 20), 2, generator=g()).A
    a64 = get("init_a")(torch.empty(10, 20, dtype=torch.float64), 2, generator=g()).A
    assert torch.equal(a32.double(), a64)
    assert math.isclose(a32.std().item(), a64.std().item(), rel_tol=1e-6)


def test_peft_default_variant_is_kaiming_uniform():
    """PEFT's default A: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0."""
    f = get("init_a")(
        torch.empty(64, 400), 8, generator=torch.Generator().manual_seed(0), distribution="kaiming_uniform"
    )
    bound = 400**-0.5
    assert stats.kstest((f.A.flatten().double().numpy() + bound) / (2 * bound), "uniform").pvalue > 1e-3
    assert torch.count_nonzero(f.B) == 0
    with pytest.raises(ValueError, match="distribution"):
        get("init_a")(torch.empty(4, 4), 2, distribution="laplace")


def test_gaussian_matches_peft_std_one_over_r():
    f = get("gaussian")(torch.empty(64, 400), 8, generator=torch.Generator().manual_seed(0))
    assert ks_normal(f.A, 1 / 8) > 1e-3 and torch.count_nonzero(f.B) == 0


def test_orthogonal_rows_are_orthonormal_and_haar():
    f = get("orthogonal")(torch.empty(30, 50), 6, generator=torch.Generator().manual_seed(0), row_norm=2.0)
    torch.testing.assert_close(f.A @ f.A.T, 4.0 * torch.eye(6), atol=1e-5, rtol=0)
    assert torch.count_nonzero(f.B) == 0
    # Haar: a fixed coordinate of a uniformly random unit vector in R^50, times sqrt(50), is ~ N(0, 1)
    first = torch.stack(
        [
            get("orthogonal")(torch.empty(4, 50), 1, generator=torch.Generator().manual_seed(s)).A[0, 0]
            for s in range(400)
        ]
    )
    assert stats.kstest((first * 50**0.5).double().numpy(), "norm").pvalue > 1e-3
