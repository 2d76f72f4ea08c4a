"""The one divergence rule (lorainit.divergence): non-finite, or above factor x the first loss; scalar and batched
forms agree, and the loops use it."""

import math

import torch

from lorainit import batched, divergence, runloss, train
from lorainit.experiments import toy
from lorainit.sweeps import runners


def test_the_rule_and_its_batched_form_agree():
    cases = [(1.0, 1.0), (999.0, 1.0), (1000.0, 1.0), (1000.5, 1.0), (math.inf, 1.0), (math.nan, 1.0), (-math.inf, 2.0)]
    got = divergence.codes(torch.tensor([c[0] for c in cases]), torch.tensor([c[1] for c in cases]), 1e3).tolist()
    assert [divergence.REASONS[c] for c in got] == [divergence.reason(loss, first, 1e3) for loss, first in cases]
    assert got == [0, 0, 0, 2, 1, 1, 1]


def test_every_loop_takes_its_factor_from_the_one_module():
    assert (
        train.LoopConfig(steps=1, lr=1.0).diverge_factor == runloss.DIVERGE_FACTOR == divergence.FINETUNE_FACTOR == 1e3
    )
    assert toy.ToyConfig().diverge_factor == runners.DIVERGE_FACTOR == divergence.STUDY_FACTOR == 1e4
    assert batched.REASONS is divergence.REASONS


def test_batched_fit_records_the_rules_reasons():
    p = torch.zeros(3, 1, requires_grad=True)
    lr = torch.tensor([0.1, 1e6, math.inf])

    def loss_fn(params, log):  # loss 1 + x^2 per run; a huge step explodes it, an infinite one makes it NaN
        return 1 + (params[0][:, 0] - 1) ** 2, {}

    h = batched.fit([p], loss_fn, lr, 5, opt=batched.SGD(), diverge_factor=10.0)
    assert h.reason == [None, divergence.EXPLODED, divergence.NON_FINITE]


def test_hrps_preheat_stops_on_the_rule(tiny_llama):
    """A preheat whose loss turns non-finite (at its 4th step here: a tiny model's normalized logits cannot blow up
    however large the LR) raises, naming the step and the fix; a sane one is unchanged by the judge (it only reads
    the loss)."""
    import pytest

    from lorainit import multi, starts, stats

    model = tiny_llama()
    layers = {starts.PEFT_PREFIX + n: m for n, m in multi.targets_of(model, ["q_proj", "down_proj"]).items()}
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": (ids := torch.randint(0, 64, (2, 12), generator=g)), "labels": ids} for _ in range(2)]
    calls = []
    loss = lambda m, b: calls.append(1) or m(**b).loss * (math.nan if len(calls) > 3 else 1.0)  # noqa: E731
    with pytest.raises(
        FloatingPointError,
        match="HRP's preheat: non-finite loss at step 3 \\(lr 0.001\\): the run diverged; lower the "
        "learning rate \\(here the learning rate is preheat_lr\\)",
    ):
        stats.preheat(model, layers, data, loss, rank=8, steps=40, lr=1e-3)
    assert len(calls) == 4  # it stopped there
    a = stats.preheat(model, layers, data, rank=8, steps=3, lr=1e-3)
    b = stats.preheat(model, layers, data, rank=8, steps=3, lr=1e-3)
    assert all(torch.equal(a[n].A, b[n].A) and torch.equal(a[n].B, b[n].B) for n in layers)
