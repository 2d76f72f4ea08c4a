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
    assert train.LoopConfig(steps=1, lr=1.0).diverge_factor == runloss.DIVERGE_FACTOR == divergence.FINETUNE_FACTOR == 1e3
    assert toy.ToyConfig().diverge_factor == runners.DIVERGE_FACTOR == divergence.STUDY_FACTOR == 1e4
    assert batched.REASONS is divergence.REASONS


def test_batched_fit_records_the_rules_reasons():
    p = torch.zeros(3, 1, requires_grad=True)
    lr = torch.tensor([0.1, 1e6, math.inf])

    def loss_fn(params, log):  # loss 1 + x^2 per run; a huge step explodes it, an infinite one makes it NaN
        return 1 + (params[0][:, 0] - 1) ** 2, {}

    h = batched.fit([p], loss_fn, lr, 5, opt=batched.SGD(), diverge_factor=10.0)
    assert h.reason == [None, divergence.EXPLODED, divergence.NON_FINITE]
