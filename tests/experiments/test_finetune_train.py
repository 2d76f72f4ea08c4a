"""The loop's config for K runs and evaluation's context (the K runs training through it: test_finetune_run.py)."""

import math

import torch

from lorainit import multi
from lorainit.experiments import finetune_train
from lorainit.experiments.finetune import FinetuneConfig


def test_the_loop_peaks_at_the_largest_lr_leaves_divergence_to_each_run_and_seeds_from_the_first():
    cfg = FinetuneConfig(steps=7, warmup_ratio=0.25, grad_accum=2, eval_every=3, checkpoint_every=5)
    runs = [multi.Run("init_a", 1e-4, seed=3), multi.Run("init_b", 5e-3, seed=4)]
    loop = finetune_train.loop_config(cfg, runs)
    assert (loop.steps, loop.lr, loop.seed, loop.diverge_factor) == (7, 5e-3, 3, math.inf)
    assert (loop.warmup_ratio, loop.grad_accum, loop.eval_every, loop.checkpoint_every) == (0.25, 2, 3, 5)


def test_evaluation_runs_uncompiled_under_the_trainings_autocast_which_is_off_on_cpu():
    compiled = []

    def backend(gm, inputs):
        compiled.append(gm)
        return gm.forward

    f = torch.compile(lambda x: x * 2, backend=backend)
    with finetune_train.evaluating(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0)) and compiled == []
    f(torch.ones(2))
    assert len(compiled) == 1  # outside, the same function compiles
