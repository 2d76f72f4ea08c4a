"""Training the teacher-student model of Hayou et al. 2024 eq. (4): batched runs equal runs trained one at a time."""

import dataclasses

import pytest
import torch
from helpers import TINY_TOY

from lorainit.experiments import toy, toy_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

TINY = dataclasses.replace(TINY_TOY, steps=12)


def reference_run(cfg, width, seed, init, lr, data, device="cpu"):
    """One run trained alone: plain autograd on eq. (4) and torch.optim.AdamW."""
    X = {"train": data["X_train"], "test": data["X_test"]}
    st = toy_model.students(dataclasses.replace(cfg, seeds=seed + 1), width, X, torch.device(device))["train"]
    g = toy.generator("toy-lora-init", cfg.data_seed, seed, width, init)
    f = toy.inits.get(init)(st.W_h[seed], cfg.rank, generator=g)
    A, B = torch.nn.Parameter(f.A.clone()), torch.nn.Parameter(f.B.clone())
    opt = torch.optim.AdamW([A, B], lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0.0)
    losses = []
    for t in range(cfg.steps + 1):
        h = st.P[seed] + cfg.scaling * (st.Z[seed] @ A.T) @ B.T
        loss = ((torch.relu(h) @ st.w_out[seed] - data["Y_train"].to(device)) ** 2).mean()
        losses.append(loss.item())
        if t < cfg.steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return losses


@pytest.mark.parametrize("device", DEVICES)
def test_batched_runs_equal_runs_trained_one_at_a_time(float64, device):
    """On CUDA this goes through the captured graph (steps > batched.WARMUP)."""
    data = toy_model.teacher_data(TINY)
    res = toy.train_width(TINY, 32, data, torch.device(device))
    assert len(res["runs"]) == 2 * 2 * 3 and res["steps"] == [0, 3, 6, 9, 12]
    for run in res["runs"]:
        ref = reference_run(TINY, 32, run["seed"], run["init"], run["lr"], data, device)
        logged = [ref[t] for t in res["steps"]]
        assert run["train_loss"] == pytest.approx(logged, rel=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_results_bitwise(device):
    data = toy_model.teacher_data(TINY)
    a = toy.train_width(TINY, 16, data, torch.device(device))
    b = toy.train_width(TINY, 16, data, torch.device(device))
    assert a["runs"] == b["runs"] and a["steps"] == b["steps"]


def test_init_is_shared_across_learning_rates():
    data = toy_model.teacher_data(TINY)
    X = {"train": data["X_train"], "test": data["X_test"]}
    st = toy_model.students(TINY, 16, X, torch.device("cpu"))["train"]
    A, B = toy.init_factors(TINY, 16, st, torch.device("cpu"))  # runs: seed, init, lr (3 LRs)
    assert torch.equal(A[0], A[1]) and torch.equal(A[0], A[2])  # seed 0, init_a, three LRs
    assert torch.count_nonzero(B[:3]) == 0 and torch.count_nonzero(A[3:6]) == 0  # init_a then init_b
    assert not torch.equal(A[0], A[6])  # another seed, another draw


def test_a_huge_learning_rate_diverges_without_crashing():
    cfg = dataclasses.replace(TINY, lrs=(1e-2, 1e6), seeds=1, steps=20, diverge_factor=100.0)
    res = toy.train_width(cfg, 16, toy_model.teacher_data(cfg), torch.device("cpu"))
    by_lr = {(r["init"], r["lr"]): r for r in res["runs"]}
    assert by_lr["init_a", 1e6]["diverged_step"] is not None
    assert by_lr["init_a", 1e6]["diverged_reason"] in ("loss exploded", "non-finite loss")
    assert by_lr["init_a", 1e-2]["diverged_step"] is None
    assert by_lr["init_a", 1e-2]["train_loss"][-1] < by_lr["init_a", 1e-2]["train_loss"][0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"widths": ()}, "widths is empty"),
        ({"widths": (16, -4)}, "positive"),
        ({"rank": 0}, "rank must be"),
        ({"rank": 64}, "exceeds the smallest width"),
        ({"lrs": ()}, "grid is empty"),
        ({"lrs": (1e-3, 0.0)}, "> 0"),
        ({"inits": ("init_c",)}, "unknown init"),
        ({"steps": 0}, "steps must be"),
        ({"seeds": 0}, "seeds must be"),
    ],
)
def test_validation(change, message):
    with pytest.raises((ValueError, KeyError), match=message):
        toy.validate(dataclasses.replace(TINY, **change))


def test_a_width_whose_frozen_students_cannot_fit_is_refused_naming_the_need(monkeypatch):
    cfg = dataclasses.replace(TINY_TOY, widths=(16, 1000), seeds=2, n_train=20, n_test=5, device="cpu")
    assert toy.frozen_bytes(cfg, 1000) == 4 * 2 * (1000 * 1000 + 2 * 25 * 1000)  # W_h, and Z and P per example
    monkeypatch.setattr(toy.devices, "free_bytes", lambda device: toy.frozen_bytes(cfg, 1000))
    toy.check_fits(cfg)  # exactly enough
    monkeypatch.setattr(toy.devices, "free_bytes", lambda device: toy.frozen_bytes(cfg, 1000) - 1)
    with pytest.raises(ValueError, match=r"width 1000 needs at least 0.0 GiB .* choose smaller --widths"):
        toy.check_fits(cfg)
