"""A task's examples as the batches a fine-tune trains and evaluates on (the data layer beside ``lorainit.data``).

- ``train_items``: LM tasks as blocks of ``seq_len`` tokens (texts joined with EOS, the WikiText setup), other tasks
  as their examples; ``max_train`` at most.
- ``Batches``: micro-batches as a function of (step, micro): epoch-wise permutations seeded by (seed, epoch), so a
  resumed run sees exactly the data the uninterrupted one would, and each process of a data-parallel run takes its
  contiguous shard of the global micro-batch.
- ``collate``: examples to model inputs (LM: labels = inputs; classification: tokenized pairs and labels; choice:
  question + correct answer, padding masked out of the labels); ``choice_text`` the prompt / answer split.

``cfg`` is any config with ``seed``, ``batch_size``, ``grad_accum``, ``seq_len`` and ``max_train`` (the fine-tune's).
"""

from __future__ import annotations

import numpy as np
import torch

from .seeding import derive_seed


class Batches:
    """Training examples of a task as micro-batches indexed by (step, micro): epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(self, task, tok, cfg, device, rank: int = 0, world: int = 1, items: list | None = None):
        self.task, self.tok, self.cfg, self.device, self.rank, self.world = task, tok, cfg, device, rank, world
        self.items = train_items(task, tok, cfg) if items is None else items
        if len(self.items) == 0:
            raise ValueError(f"task {task.name} has no training examples left (max_train={cfg.max_train})")
        self._perm = {}

    def indices(self, step: int, micro: int) -> list[int]:
        n, b = len(self.items), self.cfg.batch_size
        start = (step * self.cfg.grad_accum + micro) * b
        out = []
        for g in range(start, start + b):
            epoch, i = divmod(g, n)
            if epoch not in self._perm:
                self._perm[epoch] = np.random.default_rng(derive_seed("data", self.cfg.seed, epoch)).permutation(n)
            out.append(int(self._perm[epoch][i]))
        return out

    def full(self, step: int, micro: int = 0) -> dict:
        """The whole global micro-batch (every process computes data-dependent inits on the same data)."""
        return collate(
            self.task, self.tok, [self.items[i] for i in self.indices(step, micro)], self.cfg.seq_len, self.device
        )

    def __call__(self, step: int, micro: int = 0) -> dict:
        """This process's contiguous shard of the global micro-batch."""
        idx = self.indices(step, micro)
        share = len(idx) // self.world
        idx = idx[self.rank * share : (self.rank + 1) * share]
        return collate(self.task, self.tok, [self.items[i] for i in idx], self.cfg.seq_len, self.device)


def train_items(task, tok, cfg) -> list:
    """The training examples a run samples from: LM blocks of ``seq_len`` tokens, or examples; ``max_train`` at most."""
    train = task.splits["train"]
    return (blocks(tok, train, cfg.seq_len) if task.kind == "lm" else train)[: cfg.max_train or None]


def blocks(tok, examples: list[dict], seq_len: int) -> list[torch.Tensor]:
    """Texts joined with EOS and cut into seq_len-token blocks (the WikiText-style LM setup). The texts are
    tokenized in one call (a fast tokenizer encodes them in parallel; each text's tokens are its own)."""
    ids = []
    for t in tok([e["text"] for e in examples], add_special_tokens=False)["input_ids"] if examples else []:
        ids += t + [tok.eos_token_id]
    n = len(ids) // seq_len
    return list(torch.tensor(ids[: n * seq_len]).view(n, seq_len))


def choice_text(e: dict, option: int | None = None) -> tuple[str, str]:
    return f"Question: {e['question']}\nAnswer:", f" {e['options'][e['answer'] if option is None else option]}"


def collate(task, tok, items: list, seq_len: int, device) -> dict:
    if task.kind == "lm":
        ids = torch.stack(items)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    elif task.kind == "classify":
        pairs = [e.get("text_pair") for e in items]
        enc = tok(
            [e["text"] for e in items],
            pairs if all(p is not None for p in pairs) else None,
            truncation=True,
            max_length=seq_len,
            padding=True,
            return_tensors="pt",
        )
        batch = {**enc, "labels": torch.tensor([e["label"] for e in items])}
    else:  # choice: train on question + correct answer
        enc = tok(
            ["".join(choice_text(e)) + tok.eos_token for e in items],
            truncation=True,
            max_length=seq_len,
            padding=True,
            return_tensors="pt",
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        batch = {**enc, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}
