"""A task's examples as the batches a fine-tune trains and evaluates on (the data layer beside ``lorainit.data``).

- ``train_items``: LM tasks as blocks of ``seq_len`` tokens (texts joined with EOS, the WikiText setup), other tasks
  as their examples; ``max_train`` at most.
- ``Batches``: micro-batches as a function of (step, micro): epoch-wise permutations seeded by (seed, epoch), so a
  resumed run sees exactly the data the uninterrupted one would, and each process of a data-parallel run takes its
  contiguous shard of the global micro-batch.
- ``collate``: examples to model inputs (LM: labels = inputs; classification: tokenized pairs and labels; choice:
  question + correct answer, padding masked out of the labels); ``choice_text`` the prompt / answer split.
- ``Encodings``: a task's training examples tokenized once per process, on first use (the same batches as
  ``collate``); ``to_device``: a batch to the GPU through pinned memory; ``Uploader``: the training loop's batches
  through pinned buffers it reuses.

``cfg`` is any config with ``seed``, ``batch_size``, ``grad_accum``, ``seq_len`` and ``max_train`` (the fine-tune's).
"""

from __future__ import annotations

import numpy as np
import torch

from .seeding import derive_seed


class Batches:
    """Training examples of a task as micro-batches indexed by (step, micro): epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(
        self,
        task,
        tok,
        cfg,
        device,
        rank: int = 0,
        world: int = 1,
        items: list | None = None,
        encodings: "Encodings | None" = None,
    ):
        self.task, self.tok, self.cfg, self.device, self.rank, self.world = task, tok, cfg, device, rank, world
        self.items = train_items(task, tok, cfg) if items is None else items
        self.encodings = encodings  # shared tokenized examples (non-LM tasks), else each batch is tokenized
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
        return self._collate(self.indices(step, micro))

    def __call__(self, step: int, micro: int = 0) -> dict:
        """This process's contiguous shard of the global micro-batch."""
        idx = self.indices(step, micro)
        share = len(idx) // self.world
        idx = idx[self.rank * share : (self.rank + 1) * share]
        return self._collate(idx)

    def _collate(self, idx: list[int]) -> dict:
        if self.encodings is not None:
            return self.encodings.collate(idx, self.device)
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


def _encode(task, tok, items: list, seq_len: int, **pad) -> dict:
    """Tokenize examples as the model reads them (classification: text and text pair; choice: question, correct
    answer and EOS), truncated to ``seq_len``; ``pad``: the tokenizer's padding arguments."""
    if task.kind == "classify":
        pairs = [e.get("text_pair") for e in items]
        texts, pairs = [e["text"] for e in items], pairs if all(p is not None for p in pairs) else None
        return tok(texts, pairs, truncation=True, max_length=seq_len, **pad)
    return tok(["".join(choice_text(e)) + tok.eos_token for e in items], truncation=True, max_length=seq_len, **pad)


def _labelled(task, enc: dict, items: list) -> dict:
    """A padded encoding with its labels: the class, or (choice) the tokens with padding set to -100."""
    if task.kind == "classify":
        return {**enc, "labels": torch.tensor([e["label"] for e in items])}
    return {**enc, "labels": enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)}


def collate(task, tok, items: list, seq_len: int, device) -> dict:
    if task.kind == "lm":
        ids = torch.stack(items)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    else:
        batch = _labelled(task, _encode(task, tok, items, seq_len, padding=True, return_tensors="pt"), items)
    return to_device(batch, device)


class Uploader:
    """The training loop's batches from CPU to a GPU without the host waiting: each batch is copied into pinned
    buffers this uploader keeps (``slots`` sets of them, used in turn; a set is reused once the copy out of it
    that was enqueued ``slots`` batches ago has finished), then to the GPU without a wait. ``Tensor.pin_memory()``
    per input, as ``to_device`` does, took 7.9 ms of host time per input on an H100 host
    (bench/results/profile_batch_wiki_k16_steps101_h100.txt), about 24 ms a K=16 wiki step. Elsewhere a plain copy."""

    def __init__(self, device, slots: int = 3):
        self.device = torch.device(device)
        self._buffers: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        self._done: list = [None] * slots  # per set: the event after its last copy to the GPU
        self._turn = 0

    def __call__(self, batch: dict) -> dict:
        if self.device.type != "cuda":
            return to_device(batch, self.device)
        i, self._turn = self._turn, (self._turn + 1) % len(self._buffers)
        if self._done[i] is not None:
            self._done[i].synchronize()
        bufs, out = self._buffers[i], {}
        for k, v in batch.items():
            buf = bufs.get(k)
            if buf is None or buf.dtype != v.dtype or buf.numel() < v.numel():
                buf = bufs[k] = torch.empty(v.numel(), dtype=v.dtype, pin_memory=True)  # (a padded batch may grow)
            staged = buf[: v.numel()].view(v.shape)
            stage(staged, v)
            out[k] = staged.to(self.device, non_blocking=True)
        self._done[i] = torch.cuda.Event()
        self._done[i].record()
        return out


def stage(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)`` for CPU tensors in one thread (numpy's copy; torch's own for a dtype numpy lacks, such as
    bfloat16). torch's ``copy_`` splits a batch of 64k tokens over its intra-op threads, whose wake-up and spinning
    then slowed the host thread launching the GPU's work: an 8-run compiled SmolLM2 step under CUDA graphs (two
    H200s, bench/results/profile_step_h200_k8_graphs_upload_*_b2a4359.json) took 172.8 ms with the staging copy
    by ``copy_``, 153.7 with a plain ``.to(device)`` and no staging, and 176.1 vs 153.1 with ``copy_`` under the
    default threads vs OMP_NUM_THREADS=1."""
    try:
        np.copyto(dst.numpy(), src.numpy())
    except TypeError:  # (numpy has no such dtype)
        dst.copy_(src)


def to_device(batch: dict, device) -> dict:
    """A batch on ``device``; from CPU to a GPU through pinned memory, without waiting for the copy."""
    device = torch.device(device)
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class Encodings:
    """A task's training examples (classification, multiple choice), tokenized on first use and kept: a batch
    tokenizes in one call only the examples no earlier batch of this process did, so K runs of one seed (one data
    order) tokenize a step's examples once, not K times, and a sweep worker's later batches reuse them (LM blocks
    are tokenized once up front instead). ``collate(items_idx, device)`` equals ``collate`` of those examples
    (tested): an example's tokens do not depend on its batch neighbours, and the padding is the tokenizer's (side,
    pad id), applied here to the kept tensors."""

    def __init__(self, task, tok, items: list, seq_len: int):
        self.task, self.tok, self.items, self.seq_len = task, tok, items, seq_len
        self._kept: dict[int, dict[str, torch.Tensor]] = {}  # example index -> its unpadded token tensors (int32)

    def collate(self, idx: list[int], device) -> dict:
        missing = list(dict.fromkeys(i for i in idx if i not in self._kept))
        if missing:
            enc = _encode(self.task, self.tok, [self.items[i] for i in missing], self.seq_len)
            for j, i in enumerate(missing):
                self._kept[i] = {k: torch.tensor(v[j], dtype=torch.int32) for k, v in enc.items()}
        rows = [self._kept[i] for i in idx]
        fill = {"input_ids": self.tok.pad_token_id, "token_type_ids": self.tok.pad_token_type_id}
        padded = {
            k: torch.nn.utils.rnn.pad_sequence(
                [r[k] for r in rows], batch_first=True, padding_value=fill.get(k, 0), padding_side=self.tok.padding_side
            ).long()  # (b, longest)
            for k in rows[0]
        }
        return to_device(_labelled(self.task, padded, [self.items[i] for i in idx]), device)
