"""The teacher-student model of Hayou et al. 2024 eq. (4) as tensors: teacher, students, the batched forward against
eq. (4) written one run at a time, Fig. 3's feature norms."""

import dataclasses

import pytest
import torch
from scipy import stats

from lorainit.experiments import toy, toy_model

from .test_toy import TINY


def test_teacher_follows_eq4_and_is_deterministic():
    a, b = toy_model.teacher_data(TINY), toy_model.teacher_data(TINY)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["X_train"].shape == (60, 5) and a["Y_test"].shape == (20,)
    c = toy_model.teacher_data(dataclasses.replace(TINY, data_seed=1))
    assert not torch.equal(a["Y_train"], c["Y_train"])


def test_teacher_weights_are_normal_with_variance_one_over_fan_in():
    w = toy_model.teacher_weights(toy.ToyConfig())  # d = 5, width 1000, rank 20
    for name, fan_in in (("W_in", 5), ("A", 1000), ("B", 20), ("W_out", 1000)):
        x = w[name].flatten() * fan_in**0.5
        assert stats.kstest(x.double().numpy(), "norm").pvalue > 1e-3, name
    assert w["W_in"].shape == (1000, 5) and w["A"].shape == (20, 1000) and w["B"].shape == (1000, 20)


def test_student_variances():
    """Frozen W_in ~ N(0, 1/d), W_h ~ N(0, 1/n): the precomputed pre-activations have the implied scale."""
    cfg = dataclasses.replace(TINY, seeds=1)
    X = {"train": torch.randn(4000, 5), "test": torch.randn(2, 5)}
    st = toy_model.students(cfg, 512, X, torch.device("cpu"))["train"]
    z = st.Z[0]  # relu(W_in x): E[z^2] = E[relu(N(0, |x|^2/d))^2] = 1/2 for |x|^2 ~ d
    assert (z**2).mean().item() == pytest.approx(0.5, rel=0.1)
    assert st.W_h[0].var().item() == pytest.approx(1 / 512, rel=0.05)
    assert st.w_out.var().item() == pytest.approx(1 / 512, rel=0.2)


def test_batched_forward_and_gradients_equal_the_reference(float64):
    cfg = dataclasses.replace(TINY, seeds=2)
    data = toy_model.teacher_data(cfg)
    st = toy_model.students(cfg, 32, {"train": data["X_train"], "test": data["X_test"]}, torch.device("cpu"))["train"]
    K = 2 * 3
    A = torch.randn(K, 2, 32, requires_grad=True)
    B = torch.randn(K, 32, 2, requires_grad=True)
    y = torch.randn(K, 60)
    out, _ = toy_model.forward(st, A, B, 0.7)
    ref = toy_model.forward_reference(st, A, B, 0.7)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(((out - y) ** 2).sum(), [A, B])
    g2 = torch.autograd.grad(((ref - y) ** 2).sum(), [A, B])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_feature_norms_follow_fig3_definition():
    Z_A = torch.randn(3, 10, 4)
    B = torch.randn(3, 8, 4)
    got = toy_model.feature_norms(Z_A, B)
    za = torch.stack([Z_A[k].norm(dim=1).mean() for k in range(3)])
    zb = torch.stack([(Z_A[k] @ B[k].T).norm(dim=1).mean() for k in range(3)])
    torch.testing.assert_close(got["za"], za)
    torch.testing.assert_close(got["zb"], zb)
