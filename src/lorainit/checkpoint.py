"""Checkpoints of the training loop (``lorainit.train``): the optimizer's trainable tensors and AdamW moments as
safetensors plus the loop's state as JSON, in a folder written aside and renamed into place, so a crash at any
moment leaves the previous checkpoint whole (a save killed between its two renames is undone by
``recover_checkpoint``). The tensors are copied to the host first, so the write can run in a background thread
(``Writer``) while the next steps train on the GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

import torch
from torch import nn


def save_checkpoint(path: Path, model: nn.Module, opt, step: int, extra: dict, *, writer: Writer | None = None) -> None:
    """The optimizer's parameters and moments (``opt.state_tensors()`` where it has them, else per named tensor),
    copied to the host here; written here, or by ``writer`` in its thread while training goes on."""
    tensors = (
        {k: v.contiguous() for k, v in opt.state_tensors().items()}
        if hasattr(opt, "state_tensors")
        else _named_state(opt)
    )  # (copies on the host: the optimizer's later steps do not touch them)
    meta = {"step": step, **extra}
    if writer is None:
        _write(path, tensors, meta)
    else:
        writer.submit(lambda: _write(path, tensors, meta))


def _write(path: Path, tensors: dict, meta: dict) -> None:
    """A checkpoint folder, written aside and renamed into place: a crash leaves the previous one whole."""
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".checkpoint."))
    try:
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        old = path.parent / ".checkpoint.old"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Writer:
    """One background thread at a time writing a checkpoint (a batch of 16 SmolLM2 runs' moments is ~0.9 GB: over a
    second of disk writes that the GPU would otherwise wait through). ``submit`` waits for the previous write first,
    so checkpoints land in order; ``join`` waits for the last and raises its error, if any."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.join()

        def run():
            try:
                write()
            except BaseException as e:  # (raised in the training thread, at its next join)
                self._error = e

        self._thread = threading.Thread(target=run, name="lorainit-checkpoint")
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            e, self._error = self._error, None
            raise e


def _named_state(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """A torch optimizer's trainable tensors and AdamW moments, by the names its groups carry."""
    tensors = {  # (copies even from CPU tensors: a checkpoint written in the background must not see later steps)
        f"param.{n}": p.detach().to("cpu", copy=True).contiguous()
        for g in opt.param_groups
        for n, p in zip(g["names"], g["params"])
    }
    for g in opt.param_groups:
        for n, p in zip(g["names"], g["params"]):
            st = opt.state.get(p)
            if st:
                tensors[f"exp_avg.{n}"] = st["exp_avg"].to("cpu", copy=True).contiguous()
                tensors[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].to("cpu", copy=True).contiguous()
                tensors[f"step.{n}"] = torch.as_tensor(st["step"]).reshape(1).float().to("cpu", copy=True)
    return tensors


def recover_checkpoint(path: Path) -> None:
    """Undo a save killed between its two renames: the previous checkpoint, moved aside to .checkpoint.old, comes back."""
    old = Path(path).parent / ".checkpoint.old"
    if old.is_dir() and (old / "state.json").exists():
        if Path(path).exists():
            shutil.rmtree(old)  # the new one landed: the old one is what was left to delete
        else:
            os.replace(old, path)


def load_checkpoint(path: Path, opt) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(path / "state.safetensors")
    if hasattr(opt, "load_state_tensors"):
        opt.load_state_tensors(tensors)
        return json.loads((path / "state.json").read_text())
    with torch.no_grad():
        for g in opt.param_groups:
            for n, p in zip(g["names"], g["params"]):
                p.copy_(tensors[f"param.{n}"])
                if f"exp_avg.{n}" in tensors:
                    step = tensors[f"step.{n}"].reshape(())  # the fused kernel keeps it beside the parameter
                    opt.state[p] = {
                        "step": step.to(p.device) if opt.defaults.get("fused") else step.clone(),
                        "exp_avg": tensors[f"exp_avg.{n}"].to(p.device),
                        "exp_avg_sq": tensors[f"exp_avg_sq.{n}"].to(p.device),
                    }
    return json.loads((path / "state.json").read_text())
