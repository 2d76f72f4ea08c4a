"""Checkpoints (lorainit.checkpoint): written whole or not at all, recovered after a save killed between its renames,
and, written in the background, holding the state at their step."""

import pytest
import torch
from helpers import Tiny

from lorainit import checkpoint, train


def test_a_save_killed_between_its_renames_is_recovered(tmp_path):
    model = Tiny()
    opt = torch.optim.AdamW(train.param_groups(model, train.LoopConfig(steps=1, lr=0.1)), lr=0.1)
    checkpoint.save_checkpoint(tmp_path / "checkpoint", model, opt, 3, {"first_loss": 1.0})
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")  # killed after moving the old one aside
    checkpoint.recover_checkpoint(tmp_path / "checkpoint")
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint", opt)["step"] == 3
    assert not (tmp_path / ".checkpoint.old").exists()


def test_a_checkpoint_written_in_the_background_holds_the_state_at_its_step(tmp_path):
    """The tensors are copied before the write starts: the optimizer's later in-place steps do not reach the file."""
    model = Tiny()
    opt = torch.optim.AdamW(train.param_groups(model, train.LoopConfig(steps=1, lr=0.1)), lr=0.1)
    want = {n: p.detach().clone() for n, p in model.named_parameters()}
    writer = checkpoint.Writer()
    checkpoint.save_checkpoint(tmp_path / "checkpoint", model, opt, 3, {"first_loss": 1.0}, writer=writer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    writer.join()
    fresh = Tiny()
    opt2 = torch.optim.AdamW(train.param_groups(fresh, train.LoopConfig(steps=1, lr=0.1)), lr=0.1)
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint", opt2)["step"] == 3
    assert all(torch.equal(p, want[n]) for n, p in fresh.named_parameters())


def test_a_failed_background_write_is_raised_at_the_next_join(tmp_path):
    model = Tiny()
    opt = torch.optim.AdamW(train.param_groups(model, train.LoopConfig(steps=1, lr=0.1)), lr=0.1)
    writer = checkpoint.Writer()
    checkpoint.save_checkpoint(tmp_path / "missing" / "checkpoint", model, opt, 1, {}, writer=writer)
    with pytest.raises(FileNotFoundError):
        writer.join()
    writer.join()  # raised once
