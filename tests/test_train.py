"""The training loop (lorainit.train): the schedule its docstring states, LoRA+ groups, crash-safe checkpoints,
the divergence stop and exact resume, on a tiny model."""

import math

import pytest
import torch
from helpers import Tiny

from lorainit import train


def test_lr_factor_is_the_docstrings_warmup_then_linear_decay():
    cfg = train.LoopConfig(steps=100, lr=1.0, warmup_ratio=0.03)
    W, T = math.ceil(0.03 * 100), 100
    for t in range(T):
        want = (t + 1) / W if t < W else (T - t) / (T - W)
        assert train.lr_factor(t, cfg) == pytest.approx(want)
    assert train.lr_factor(W - 1, cfg) == 1.0 and train.lr_factor(T - 1, cfg) == pytest.approx(1 / (T - W))


def test_the_constant_schedule_keeps_the_lr_and_an_unknown_one_is_refused():
    assert {train.lr_factor(t, train.LoopConfig(steps=10, lr=1.0, schedule="constant")) for t in range(10)} == {1.0}
    with pytest.raises(ValueError, match="unknown schedule 'cosine'; use 'linear' or 'constant'"):
        train.lr_factor(0, train.LoopConfig(steps=10, lr=1.0, schedule="cosine"))


def test_param_groups_put_lora_b_at_lr_times_the_loraplus_ratio_and_leave_frozen_tensors_out():
    groups = train.param_groups(Tiny(), train.LoopConfig(steps=1, lr=0.01, loraplus_ratio=16))
    assert [(g["names"], g["lr"]) for g in groups] == [(["lora_A"], 0.01), (["lora_B"], 0.16)]


def loss_fn(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def batch_at(step, micro):
    g = torch.Generator().manual_seed(step * 7 + micro)
    x = torch.randn(4, 3, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True).expand(4, 3)}


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    cfg = train.LoopConfig(steps=8, lr=0.05, checkpoint_every=3, grad_accum=2)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    whole = Tiny()
    train.train(whole, batch_at, loss_fn, cfg, tmp_path / "a", progress=False)

    def dying(step, micro):  # the process dies during step 7: the step-6 checkpoint is there
        if step == 7:
            raise KeyboardInterrupt
        return batch_at(step, micro)

    with pytest.raises(KeyboardInterrupt):
        train.train(Tiny(), dying, loss_fn, cfg, tmp_path / "b", progress=False)
    again = Tiny()  # a fresh process: a fresh model, its trained tensors and moments read from the checkpoint
    res = train.train(again, batch_at, loss_fn, cfg, tmp_path / "b", progress=False)
    assert res["resumed_from"] == 6
    for p, q in zip(whole.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_a_diverging_loss_stops_the_run_with_its_reason_logged(tmp_path):
    records = []
    (tmp_path / "d").mkdir()
    with pytest.raises(FloatingPointError, match="loss exploded at step"):
        train.train(
            Tiny(),
            batch_at,
            lambda m, b: loss_fn(m, b) * 1e6 ** (m.lora_B.abs().sum() > 0).float(),
            train.LoopConfig(steps=5, lr=1.0),
            tmp_path / "d",
            progress=False,
            log=records.append,
        )
    assert records[-1]["diverged"] and records[-1]["reason"] == "loss exploded"
