"""Fine-tuning a real pretrained model with a chosen LoRA init (Hayou et al. 2024, Sec. 4 setups): the config
and the data a run trains on.

Batches are a function of the step (``Batches``: epoch-wise permutations seeded by (seed, epoch)), so a
resumed run sees exactly the data the uninterrupted one would. The runs themselves (K >= 1 on one frozen
base) are ``finetune_run``; their evaluation and feature monitor ``finetune_eval``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .. import io
from ..seeding import derive_seed


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA fine-tune of one model on one task with one init and one learning rate."""

    model: str = "smollm2-135m"
    """short name (smollm2-135m, minilm-l6), local folder or hub id"""
    task: str = "wiki"
    """wiki, mathqa, nli, sentiment, or a .jsonl file"""
    init: str = "init_a"
    """LoRA init scheme (lorainit.inits), or 'full': full fine-tuning, every weight trains (lorainit.full)"""
    lr: float = 2e-4
    """peak learning rate (lora_A and other trainable tensors)"""
    rank: int = 16
    """LoRA rank r"""
    alpha: float = 16.0
    """LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with --rslora)"""
    targets: tuple[str, ...] = ()
    """module names to adapt (default: every linear projection of the model's blocks)"""
    loraplus_ratio: float = 1.0
    """LoRA+: lora_B's learning rate is this times lr"""
    rslora: bool = False
    """rank-stabilized scaling alpha/sqrt(r)"""
    steps: int = 200
    """optimizer steps"""
    batch_size: int = 8
    """sequences per micro-batch, over all processes under torchrun (see --batch-per-process)"""
    batch_per_process: bool = False
    """under torchrun, --batch-size counts each process's sequences (weak scaling: the global batch is batch_size x
    processes, and a resumed run must use as many processes)"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    seq_len: int = 256
    """tokens per sequence (LM block length; truncation length otherwise)"""
    warmup_ratio: float = 0.03
    """fraction of steps with linear warmup"""
    eval_every: int = 50
    """evaluate on validation every this many steps"""
    checkpoint_every: int = 50
    """write a resumable checkpoint every this many steps"""
    max_train: int = 0
    """use only the first N training examples, or LM blocks (0: all)"""
    max_eval: int = 0
    """use only the first N validation and test examples, or LM blocks (0: all)"""
    init_batches: int = 2
    """training batches given to data-dependent inits"""
    seed: int = 0
    """seed of the init, the classifier head and the data order"""
    train_embeddings: bool = field(default=False, metadata={"identity": "when_set"})
    """with --init full: train the embedding tables too (token, position, type; a tied output layer with them); LoRA
    runs ignore it"""
    dropout: bool = False
    """keep the model's own dropout (off by default: with several runs in one batch, a run's dropout masks would
    depend on its batch neighbours, and a study's values would depend on how its points were batched)"""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'"""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile each transformer block on a GPU: about 30 s at the start, then about 2x the steps/s
    (bench/results/single_run_h100.json, multi_run_h100.json); 'auto': on from 500 steps (at 100 steps
    it lost: results/compile-check); ignored on CPU"""


COMPILE_FROM = 500  # steps from which 'auto' compiles (measured break-even: a few hundred steps)


def compiles(cfg: "FinetuneConfig", device) -> bool:
    """Whether this run's blocks are compiled."""
    return device.type == "cuda" and (cfg.compile == "on" or (cfg.compile == "auto" and cfg.steps >= COMPILE_FROM))


def autocast_dtype(device) -> torch.dtype | None:
    """The dtype a run's forward and backward compute in: bf16 autocast on a GPU, none (fp32) on CPU."""
    return torch.bfloat16 if device.type == "cuda" else None


POINT = ("init", "lr", "seed")  # the fields a point sets; the rest of the config is shared by the batch


def identity(cfg: FinetuneConfig, points: list[dict]) -> dict:
    """A batch's config.json: the shared config and its points (execution fields left out)."""
    return {**io.config_dict(cfg, drop=(*io.EXECUTION, *POINT)), "points": points}


def run_identity(cfg: FinetuneConfig, point: dict) -> dict:
    """One run's config, as its run card records it."""
    return {**io.config_dict(cfg, drop=(*io.EXECUTION, *POINT)), **{k: point[k] for k in POINT}}


def validate(cfg: FinetuneConfig) -> None:
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0; got {cfg.lr}")
    for name in ("rank", "steps", "batch_size", "grad_accum", "seq_len", "eval_every", "checkpoint_every", "init_batches"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {getattr(cfg, name)}")
    if not cfg.loraplus_ratio > 0 or not cfg.alpha > 0:
        raise ValueError("alpha and loraplus_ratio must be > 0")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1); got {cfg.warmup_ratio}")


class Batches:
    """Training examples of a task as micro-batches indexed by (step, micro): epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(self, task, tok, cfg: FinetuneConfig, device, rank: int = 0, world: int = 1, items: list | None = None):
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
        return collate(self.task, self.tok, [self.items[i] for i in self.indices(step, micro)], self.cfg.seq_len, self.device)

    def __call__(self, step: int, micro: int = 0) -> dict:
        """This process's contiguous shard of the global micro-batch."""
        idx = self.indices(step, micro)
        share = len(idx) // self.world
        idx = idx[self.rank * share:(self.rank + 1) * share]
        return collate(self.task, self.tok, [self.items[i] for i in idx], self.cfg.seq_len, self.device)


def train_items(task, tok, cfg: FinetuneConfig) -> list:
    """The training examples a run samples from: LM blocks of ``seq_len`` tokens, or examples; ``max_train`` at most."""
    train = task.splits["train"]
    return (blocks(tok, train, cfg.seq_len) if task.kind == "lm" else train)[: cfg.max_train or None]


def blocks(tok, examples: list[dict], seq_len: int) -> list[torch.Tensor]:
    """Texts joined with EOS and cut into seq_len-token blocks (the WikiText-style LM setup)."""
    ids = []
    for e in examples:
        ids += tok(e["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
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
        enc = tok([e["text"] for e in items], pairs if all(p is not None for p in pairs) else None, truncation=True,
                  max_length=seq_len, padding=True, return_tensors="pt")
        batch = {**enc, "labels": torch.tensor([e["label"] for e in items])}
    else:  # choice: train on question + correct answer
        enc = tok(["".join(choice_text(e)) + tok.eos_token for e in items], truncation=True, max_length=seq_len,
                  padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        batch = {**enc, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}
