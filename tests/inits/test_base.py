"""The one signature's pieces (inits.base): the factors' shapes and delta, rank checks, and the seeded CPU draw."""

import pytest
import torch

from lorainit.inits import base


def test_delta_is_b_times_a():
    A, B = torch.randn(2, 5), torch.randn(4, 2)
    f = base.Factors(A=A, B=B)
    assert f.delta().shape == (4, 5) and torch.equal(f.delta(), B @ A) and f.residual is None


@pytest.mark.parametrize(
    "shape, rank, message",
    [
        ((4, 5), 0, "rank must be a positive integer"),
        ((4, 5), True, "positive integer"),
        ((4, 5), 5, "rank 5 exceeds min\\(out, in\\) = 4"),
        ((4,), 1, "needs a 2-d weight"),
    ],
)
def test_check_rank_refuses_what_cannot_be_a_lora_rank(shape, rank, message):
    with pytest.raises(ValueError, match=message):
        base.check_rank(torch.zeros(shape), rank)


def test_normal_draws_on_the_cpu_with_the_given_std_and_returns_like_the_weight():
    like = torch.zeros(1, dtype=torch.float64)
    a = base.normal((4000,), 0.5, like, torch.Generator().manual_seed(3))
    b = base.normal((4000,), 0.5, like, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float64
    assert a.std().item() == pytest.approx(0.5, rel=0.05) and abs(a.mean().item()) < 0.03
