"""The loop's config for K runs, evaluation's context and the step-0 test's one pass of the base model (the K runs
training through it: test_finetune_run.py)."""

import math

import pytest
import torch

from lorainit import multi, starts
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


def test_the_base_is_shared_only_by_adapted_output_preserving_runs_without_heads():
    from helpers import tiny_llama

    from lorainit import data

    lm, cls = data.Task("t", "lm", {}), data.Task("t", "classify", {})
    model = tiny_llama()
    linears = multi.targets_of(model, ["q_proj"])
    runs = [multi.Run("init_a", 1e-3), multi.Run("pissa", 1e-3, seed=1)]
    assert not finetune_train.base_is_shared(model, runs, lm)  # no adapters: a full fine-tune's trainee
    f = {
        starts.PEFT_PREFIX + n: starts.draw("init_a", m.weight, 2, seed=0, layer=n, layer_scaling=1.0)
        for n, m in linears.items()
    }
    multi.attach(model, runs, [f, f], scaling=1.0, targets=["q_proj"])
    assert finetune_train.base_is_shared(model, runs, lm)
    assert not finetune_train.base_is_shared(model, runs, cls)  # seeded heads differ per run
    assert not finetune_train.base_is_shared(model, [*runs, multi.Run("lora_one", 1e-3)], lm)  # B A != 0 at the start


@pytest.mark.slow
def test_the_base_model_evaluated_once_equals_the_k_stacked_step_0_runs():
    from lorainit import data, models
    from lorainit.experiments import finetune_eval

    cfg = FinetuneConfig(batch_size=3, seq_len=32, max_eval=4, device="cpu")
    task = data.load("mathqa")
    model, tok, _, _ = models.load("smollm2-135m")
    linears = multi.targets_of(model, ["q_proj", "v_proj"])
    runs = [multi.Run(s, 1e-3, seed=k) for k, s in enumerate(["init_a", "init_b", "gaussian"])]
    fs = [
        {
            starts.PEFT_PREFIX + n: starts.draw(r.init, m.weight, 2, seed=r.seed, layer=n, layer_scaling=1.0)
            for n, m in linears.items()
        }
        for r in runs
    ]
    multi.attach(model, runs, fs, scaling=1.0, targets=["q_proj", "v_proj"])
    stacked = finetune_eval.evaluate(model, 3, task, tok, "test", cfg, "cpu")
    with multi.base_only(model):
        assert not any(isinstance(m, multi.MultiLoRALinear) for m in model.modules())
        once = finetune_eval.evaluate(model, 1, task, tok, "test", cfg, "cpu")
    assert sum(isinstance(m, multi.MultiLoRALinear) for m in model.modules()) == 2 * len(model.model.layers)
    assert {k: v * 3 for k, v in once.items()} == stacked  # B A = 0 exactly: the same numbers, bit for bit


@pytest.mark.slow
def test_a_workers_later_batches_reuse_the_base_models_step_0_test(tmp_path, monkeypatch):
    """Two batches in one process (as a sweep worker runs them) evaluate the base model once, both logging it."""
    from lorainit.experiments import finetune_eval, finetune_run, finetune_setup
    from lorainit.runfolder import RunFolder

    monkeypatch.setattr(finetune_setup, "_LOADED", {})  # a fresh worker process: nothing loaded or evaluated yet
    calls, inner = [], finetune_eval.evaluate
    monkeypatch.setattr(finetune_eval, "evaluate", lambda m, K, *a, **kw: calls.append(K) or inner(m, K, *a, **kw))
    cfg = FinetuneConfig(task="wiki", steps=2, batch_size=2, seq_len=32, max_eval=2, eval_every=2, device="cpu")
    bases = []
    for k, lrs in enumerate(([1e-3, 2e-3], [3e-3, 4e-3])):
        finetune_run.run(
            cfg, [{"init": "init_a", "lr": lr, "seed": 0} for lr in lrs], tmp_path / f"b{k}", progress=False
        )
        bases.append(next(r["base"] for r in RunFolder(tmp_path / f"b{k}").records() if "base" in r))
    assert calls.count(1) == 1  # the one base pass (the K-run evaluations are the validation and final tests)
    assert bases[1] == bases[0] and len(bases[0]["test_loss"]) == 2  # the same numbers, for each run of each batch
