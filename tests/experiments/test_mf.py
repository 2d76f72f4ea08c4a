"""Matrix factorization (HRP Fig. 1): closed forms, the asymmetric limit, and the findings on a small run."""

import dataclasses

import pytest
import torch

from lorainit.experiments import mf

SMALL = mf.MFConfig(seeds=3, steps=400, preheat_sweep=(30,))


def test_closed_forms():
    M = mf.target_matrix(mf.MFConfig())
    assert M.shape == (32, 32) and torch.equal(torch.diag(M)[:12], torch.ones(12, dtype=torch.float64))
    assert mf.optimal_loss(M, 2) == pytest.approx(5.0)
    M2 = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert mf.optimal_loss(M2, 1) == pytest.approx(0.5 * (4 + 1))


def test_asymmetric_limit_is_the_projection_loss():
    """With A frozen, GD on B ends at 1/2 ||M (I - P_A)||^2 (the module docstring's claim)."""
    cfg = mf.MFConfig()
    M = mf.target_matrix(cfg)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 2, 32, generator=g, dtype=torch.float64) / 32**0.5
    B = torch.zeros(4, 32, 2, dtype=torch.float64)
    losses, _, _ = mf.train(A, B, M, 3000, 0.2, freeze_A=True)
    for k in range(4):
        P = A[k].T @ torch.linalg.solve(A[k] @ A[k].T, A[k])  # projection onto A's row space
        assert losses[-1, k].item() == pytest.approx(
            0.5 * float(((M @ (torch.eye(32, dtype=torch.float64) - P)) ** 2).sum()), rel=1e-6
        )


def test_small_run_reproduces_the_figure_1_pattern():
    res = mf.run(SMALL)
    s = res["summary"]
    for name in ("hrp", "target"):
        assert s["asymmetric"][name]["final_loss_mean"] == pytest.approx(5.0, rel=1e-3)
    for name in ("gaussian", "orthogonal"):
        assert s["asymmetric"][name]["final_loss_mean"] > 5.2
    for name in s["classic"]:
        assert s["classic"][name]["final_loss_mean"] == pytest.approx(5.0, rel=1e-6)
    assert s["classic"]["hrp"]["steps_to_optimum_mean"] < s["classic"]["gaussian"]["steps_to_optimum_mean"]
    assert (
        s["classic"]["hrp"]["steps_to_optimum_mean_with_preheat"]
        == s["classic"]["hrp"]["steps_to_optimum_mean"] + SMALL.preheat_steps
    )
    assert set(res["hrp_preheat_sweep"]) == {"30"} and len(res["curves"]["classic"]["hrp"]) == 3


def test_runs_are_deterministic():
    cfg = dataclasses.replace(SMALL, steps=30, preheat_sweep=())
    assert mf.run(cfg)["curves"] == mf.run(cfg)["curves"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rank": 0}, "rank must be"),
        ({"ones": 40}, "ones must be"),
        ({"preheat_rank": 1}, "below rank"),
        ({"lr": 0.0}, "step sizes"),
        ({"inits": ("gausian",)}, "did you mean 'gaussian'"),
        ({"modes": ("both",)}, "unknown mode"),
    ],
)
def test_validation(change, message):
    with pytest.raises((ValueError, KeyError), match=message):
        mf.validate(dataclasses.replace(SMALL, **change))


def test_a_target_with_distinct_singular_values(tmp_path):
    cfg = mf.MFConfig(
        n=8,
        singular_values=(5.0, 4.0, 3.0, 2.0, 1.0),
        rank=2,
        seeds=2,
        steps=300,
        lr=0.02,
        preheat_steps=50,
        preheat_lr=0.02,
        preheat_sweep=(),
        modes=("asymmetric",),
        inits=("gaussian", "target"),
    )
    M = mf.target_matrix(cfg)
    assert torch.equal(torch.diag(M), torch.tensor([5.0, 4, 3, 2, 1, 0, 0, 0], dtype=torch.float64))
    assert mf.optimal_loss(M, 2) == pytest.approx(0.5 * (9 + 4 + 1))
    res = mf.run(cfg)
    s = res["summary"]["asymmetric"]
    assert s["target"]["final_loss_mean"] == pytest.approx(
        res["optimal_loss"], rel=1e-3
    )  # A spans M's top-2 directions
    assert s["gaussian"]["final_loss_mean"] > 1.05 * res["optimal_loss"]  # a random A does not
    from lorainit.experiments import mf_report

    assert "toward diag(5, 4, 3, 2, 1, 0_3), rank 2" in mf_report.findings(res, dataclasses.asdict(cfg))
    for bad in ((-1.0, 2.0), (0.0, 0.0), tuple([1.0] * 9)):
        with pytest.raises(ValueError, match="singular_values must be"):
            mf.validate(dataclasses.replace(cfg, singular_values=bad))
