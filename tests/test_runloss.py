"""Per-run losses of K stacked runs equal each run's own loss; the divergence record is per optimizer step."""

import math

import pytest
import torch

from lorainit import multi, runloss


def lm_batch(seed, T=10, pad=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (2, T), generator=g)
    labels = ids.clone()
    mask = torch.ones_like(ids)
    if pad:
        labels[:, T - pad :], mask[:, T - pad :] = -100, 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("plain_head", [True, False])
def test_lm_losses_of_stacked_runs_equal_each_runs_model_loss(tiny_llama, plain_head):
    model = tiny_llama()
    if not plain_head:  # a model whose head the chunked loss does not handle: its own logits
        model.config.model_type = "other"
    batches = [lm_batch(1), lm_batch(2, pad=3), lm_batch(3)]
    got = runloss.run_losses(model, multi.stack_batches(batches), 3, "lm")
    want = torch.stack([model(**b).loss for b in batches])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_classification_losses_of_stacked_runs(tiny_bert):
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(0, 64, (2, T), generator=g),
            "attention_mask": torch.ones(2, T, dtype=torch.long),
            "labels": torch.randint(0, 3, (2,), generator=g),
        }
        for T in (7, 9)
    ]
    got = runloss.run_losses(model, multi.stack_batches(batches), 2, "classify")
    want = torch.stack([model(**b).loss for b in batches])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_history_is_per_optimizer_step_and_divergence_names_the_step(monkeypatch):
    losses = runloss.RunLosses(2, "lm", grad_accum=2, diverge_factor=1e3)
    values = iter([[1.0, 2.0], [3.0, 4.0], [1.0, math.nan], [2.0, 5.0], [1.0, 1.0], [1.0, 1.0]])
    monkeypatch.setattr(runloss, "run_losses", lambda *a: torch.tensor(next(values)))
    totals = [losses(None, None).item() for _ in range(6)]
    losses.settle()  # (the last call's values are judged at the next call, or here)
    assert losses.history == [[2.0, 3.0], [1.5, None], [1.0, None]]  # per step: the mean of its two micro-batches
    assert losses.diverged_step == [None, 1] and losses.reason == [None, "non-finite loss"]
    assert totals == [3.0, 7.0, 1.0, 2.0, 1.0, 1.0]  # a dead run leaves the sum from the micro-batch it died on
    assert losses.record() == {"run_loss": [1.0, None]} and not losses.all_diverged
    again = runloss.RunLosses(2, "lm", grad_accum=2)
    again.load_checkpoint_state(losses.checkpoint_state())
    assert (again.history, again.calls, again.diverged_step) == (losses.history, 6, losses.diverged_step)
    with pytest.raises(ValueError, match="holds 2 runs' losses, this loop 3"):
        runloss.RunLosses(3, "lm").load_checkpoint_state(losses.checkpoint_state())


def test_a_loss_above_the_factor_times_the_first_is_divergence(monkeypatch):
    losses = runloss.RunLosses(1, "lm", diverge_factor=10.0)
    values = iter([[1.0], [9.0], [11.0]])
    monkeypatch.setattr(runloss, "run_losses", lambda *a: torch.tensor(next(values)))
    for _ in range(3):
        losses(None, None)
    assert losses.diverged_step == [None]  # judged one call late: the host did not wait for the GPU
    losses.settle()
    assert losses.diverged_step == [2] and losses.reason == ["loss exploded"] and losses.all_diverged


def test_a_run_dying_by_the_factor_trains_on_that_micro_batch_and_leaves_the_sum_after(monkeypatch):
    """Judged one call late: a finite loss above the factor is in the sum once; a non-finite one never is."""
    losses = runloss.RunLosses(2, "lm", diverge_factor=10.0)
    values = iter([[1.0, 1.0], [20.0, 1.0], [1.0, 2.0], [1.0, math.inf], [1.0, 1.0]])
    monkeypatch.setattr(runloss, "run_losses", lambda *a: torch.tensor(next(values)))
    totals = [losses(None, None).item() for _ in range(5)]
    assert totals == [2.0, 21.0, 2.0, 0.0, 0.0]
    assert losses.record() == {"run_loss": [None, None]} and losses.all_diverged
    assert losses.diverged_step == [1, 3] and losses.reason == ["loss exploded", "non-finite loss"]
    assert losses.history[:3] == [[1.0, 1.0], [None, 1.0], [None, 2.0]]
