r"""Each of K stacked runs' training loss, and the one divergence rule of the fine-tunes.

For a batch of K runs' stacked micro-batches (``multi.stack_batches``), run k's loss is computed on its
own rows only, as its run alone would compute it:

- causal LM (``lm`` blocks, ``choice`` question + answer): the mean next-token cross-entropy over run k's
  target tokens (label -100 ignored), through the chunked frozen-head loss (``lorainit.lmloss``) where the
  model's head allows it, so the (K b, T, vocabulary) logits never exist at once;
- classification: the mean cross-entropy of run k's logits against its labels.

Divergence (``RunLosses``): a run that has diverged by ``lorainit.divergence``'s rule (``FINETUNE_FACTOR``) is
marked dead at that step with the reason and leaves the summed loss (its rows still compute,
its adapter gets no gradient), so the other runs go on exactly as they would alone. The host never waits for the
GPU to judge: a micro-batch's values are read back without a wait (``speed.Readback``) and judged at the next call
(or when the record is read), and on the device the sum leaves out every run judged dead so far and every
non-finite loss at once. So a run that dies by a non-finite loss leaves the sum from the micro-batch it died on, as
before; one that dies by the factor rule (a finite loss above factor x its first) trains on that micro-batch and
leaves the sum from the next one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import divergence, lmloss, speed

DIVERGE_FACTOR = divergence.FINETUNE_FACTOR


def run_losses(model, batch: dict, K: int, kind: str) -> torch.Tensor:
    """The (K,) losses of K stacked runs on ``batch`` (``kind``: the task's, "lm", "choice" or "classify")."""
    if kind == "classify":
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()  # (K b, classes)
        return F.cross_entropy(logits, batch["labels"], reduction="none").view(K, -1).mean(1)
    rows = batch["input_ids"].shape[0] // K
    plain = lmloss._plain_head(model)
    if plain is not None:
        decoder, weight = plain
        hidden = lmloss.last_hidden(decoder, batch)  # (K b, T, d)
        return torch.stack(
            [
                lmloss.next_token_loss(
                    hidden[k * rows : (k + 1) * rows], weight, batch["labels"][k * rows : (k + 1) * rows]
                )
                for k in range(K)
            ]
        )
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False).logits
    target = batch["labels"][:, 1:]  # position t predicts token t + 1
    nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none"
    )  # (K b, T-1)
    valid = (target != -100).view(K, -1).sum(1).clamp(min=1)
    return nll.view(K, -1).sum(1) / valid


class RunLosses:
    """The loss function of the training loop for K stacked runs: the sum of the live runs' losses.

    Keeps each run's loss per optimizer step (``history``: the mean over its ``grad_accum`` micro-batches,
    None once dead) and its divergence record (``diverged_step``, ``reason``), judged on every micro-batch, one call
    late (the module docstring); ``record()`` and ``checkpoint_state()`` judge what is still pending first.
    Under torch.distributed the per-run values are averaged over the processes before they are judged, so
    every process drops the same runs. The state is checkpointed with the loop (``lorainit.train``)."""

    def __init__(self, K: int, kind: str, *, grad_accum: int = 1, diverge_factor: float = DIVERGE_FACTOR):
        self.K, self.kind, self.grad_accum, self.factor = K, kind, grad_accum, diverge_factor
        self.calls = 0
        self.history: list[list[float | None]] = []
        self.first: list[float | None] = [None] * K
        self.diverged_step: list[int | None] = [None] * K
        self.reason: list[str | None] = [None] * K
        self._sum = [0.0] * K
        self._alive: torch.Tensor | None = None  # (K,) bool on the losses' device: not judged dead so far
        self._pending: tuple[int, int, speed.Readback] | None = None  # the last call's (step, micro, values)

    @property
    def all_diverged(self) -> bool:
        """Whether every run is dead, as judged so far (the last call's values may still be pending)."""
        return all(d is not None for d in self.diverged_step)

    def __call__(self, model, batch) -> torch.Tensor:
        self.settle()
        losses = run_losses(model, batch, self.K, self.kind)  # (K,)
        values = losses.detach().double()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(values)
            values /= torch.distributed.get_world_size()
        if self._alive is None or self._alive.device != losses.device:  # (again after a death: see settle)
            self._alive = torch.tensor([d is None for d in self.diverged_step], device=losses.device)
        step, micro = divmod(self.calls, self.grad_accum)
        self.calls += 1
        self._pending = (step, micro, speed.Readback(values))
        live = self._alive & torch.isfinite(values)  # (K,): a non-finite loss leaves the sum at once
        return torch.where(live, losses, torch.zeros_like(losses)).sum()

    def settle(self) -> None:
        """Judge the last call's values (waits, if at all, only for that call's forward on the GPU)."""
        if self._pending is None:
            return
        (step, micro, values), self._pending = self._pending, None
        died = False
        for k, v in enumerate(values.values()):
            if self.diverged_step[k] is not None:
                continue
            self.first[k] = v if self.first[k] is None else self.first[k]
            why = divergence.reason(v, self.first[k], self.factor)
            if why:
                self.diverged_step[k], self.reason[k], died = step, why, True
            self._sum[k] += v
        if micro == self.grad_accum - 1:
            self.history.append(
                [None if d is not None else s / self.grad_accum for d, s in zip(self.diverged_step, self._sum)]
            )
            self._sum = [0.0] * self.K
        if died:
            self._alive = None  # the next call builds the mask again

    def record(self) -> dict:
        """What the loop logs beside a step's summed loss: each run's loss at that step."""
        self.settle()
        return {"run_loss": self.history[-1]} if self.history else {}

    def checkpoint_state(self) -> dict:
        """What a resumed loop needs to go on judging each run as the uninterrupted one would (``train.train``)."""
        self.settle()
        return {
            "history": self.history,
            "first": self.first,
            "diverged_step": self.diverged_step,
            "reason": self.reason,
            "calls": self.calls,
        }

    def load_checkpoint_state(self, state: dict) -> None:
        if len(state["first"]) != self.K:
            raise ValueError(
                f"the checkpoint holds {len(state['first'])} runs' losses, this loop {self.K}: "
                "resume with the same runs or start in a new folder"
            )
        self.history, self.first = [list(h) for h in state["history"]], list(state["first"])
        self.diverged_step, self.reason = list(state["diverged_step"]), list(state["reason"])
        self.calls = state.get("calls", len(self.history) * self.grad_accum)
        self._alive, self._pending = None, None
