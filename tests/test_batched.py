"""Batched AdamW equals torch.optim.AdamW run by run; diverged runs are recorded and isolated."""

import math

import pytest
import torch

from lorainit import batched


def regression(K, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 6, generator=g)
    Y = torch.randn(64, 3, generator=g)
    W0 = torch.randn(K, 6, 3, generator=g) * 0.1
    return X, Y, W0


def per_run_loss(X, Y):
    def loss_fn(params, log):
        (W,) = params  # (K, 6, 3)
        pred = torch.einsum("nd,kdo->kno", X, W)
        loss = ((pred - Y) ** 2).mean((1, 2))
        return loss, {"wnorm": W.detach().flatten(1).norm(dim=1)} if log else {}

    return loss_fn


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_torch_adamw_run_by_run(float64, wd):
    K, steps = 4, 30
    X, Y, W0 = regression(K)
    lrs = torch.tensor([1e-3, 1e-2, 3e-2, 1e-1])
    opt = batched.AdamW(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=wd)
    W = W0.clone().requires_grad_(True)
    hist = batched.fit([W], per_run_loss(X, Y), lrs, steps, opt=opt, log_every=1)
    assert hist.steps == list(range(steps + 1))
    for k in range(K):
        w = torch.nn.Parameter(W0[k].clone())
        ref = torch.optim.AdamW([w], lr=float(lrs[k]), betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
        losses = []
        for _ in range(steps):
            loss = ((X @ w - Y) ** 2).mean()
            losses.append(loss.item())
            ref.zero_grad()
            loss.backward()
            ref.step()
        losses.append(((X @ w - Y) ** 2).mean().item())
        torch.testing.assert_close(hist.train_loss[:, k], torch.tensor(losses), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(W[k].detach(), w.detach(), rtol=1e-10, atol=1e-12)
        assert hist.metrics["wnorm"][-1, k].item() == pytest.approx(w.detach().norm().item())


def test_sgd_matches_torch_sgd(float64):
    X, Y, W0 = regression(3)
    lrs = torch.tensor([1e-3, 1e-2, 1e-1])
    W = W0.clone().requires_grad_(True)
    hist = batched.fit([W], per_run_loss(X, Y), lrs, 15, opt=batched.SGD(), log_every=5)
    for k in range(3):
        w = torch.nn.Parameter(W0[k].clone())
        ref = torch.optim.SGD([w], lr=float(lrs[k]))
        for _ in range(15):
            ref.zero_grad()
            ((X @ w - Y) ** 2).mean().backward()
            ref.step()
        torch.testing.assert_close(W[k].detach(), w.detach(), rtol=1e-12, atol=1e-14)
    assert hist.steps == [0, 5, 10, 15]


def test_diverged_run_is_recorded_and_does_not_touch_the_others():
    K, steps = 3, 20
    X, Y, W0 = regression(K)
    lrs = torch.tensor([1e-2, 1e-2, 1e-2])

    def loss_fn(params, log):
        loss, aux = per_run_loss(X, Y)(params, log)
        blow = torch.zeros(K)
        blow[1] = float("nan") if params[0].grad is None else 0.0
        return loss + torch.where(
            torch.arange(K) == 1, torch.full((K,), 1.0) * (1e30 if _step[0] >= 5 else 0.0), blow * 0
        ), aux

    _step = [0]
    W = W0.clone().requires_grad_(True)
    hist = batched.fit(
        [W], loss_fn, lrs, steps, log_every=5, diverge_factor=1e6, on_step=lambda t: _step.__setitem__(0, t)
    )
    assert hist.diverged_step.tolist() == [-1, 5, -1]
    assert hist.reason == [None, "loss exploded", None]
    assert math.isnan(hist.train_loss[-1, 1]) and torch.isfinite(hist.train_loss[:, [0, 2]]).all()
    assert torch.count_nonzero(W[1]) == 0  # stopped runs are reset, nothing non-finite left behind
    ref = W0.clone().requires_grad_(True)
    alone = batched.fit([ref], per_run_loss(X, Y), lrs, steps, log_every=5)
    torch.testing.assert_close(hist.train_loss[:, [0, 2]], alone.train_loss[:, [0, 2]])


def test_non_finite_loss_is_recorded_as_such():
    X, Y, W0 = regression(2)
    W = W0.clone().requires_grad_(True)
    # lr 1e200 overflows to inf on the first step for run 1
    hist = batched.fit([W], per_run_loss(X, Y), torch.tensor([1e-2, 1e300], dtype=torch.float64).float(), 5)
    assert hist.diverged_step.tolist()[0] == -1
    assert hist.diverged_step.tolist()[1] >= 1
    assert hist.reason[1] == "non-finite loss"
    assert torch.isfinite(W).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_equals_eager_steps():
    X, Y, W0 = regression(4)
    X, Y, W0 = X.cuda(), Y.cuda(), W0.cuda()
    lrs = torch.tensor([1e-3, 1e-2, 3e-2, 1e9], device="cuda")  # the last run diverges after capture
    out = []
    for graph in (False, True):
        W = W0.clone().requires_grad_(True)
        h = batched.fit([W], per_run_loss(X, Y), lrs, 25, log_every=4, diverge_factor=1e3, cuda_graph=graph)
        out.append((h, W.detach().clone()))
    (a, Wa), (b, Wb) = out
    torch.testing.assert_close(a.train_loss, b.train_loss, equal_nan=True)
    torch.testing.assert_close(a.metrics["wnorm"], b.metrics["wnorm"], equal_nan=True)
    torch.testing.assert_close(Wa, Wb)
    assert a.diverged_step.tolist() == b.diverged_step.tolist() and a.reason == b.reason
