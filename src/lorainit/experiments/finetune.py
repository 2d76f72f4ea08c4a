"""Fine-tuning a real pretrained model with a chosen LoRA init (Hayou et al. 2024, Sec. 4 setups).

Batches are a function of the step (``batch_at``), the init comes from the registry through
``lorainit.apply``, the loop is ``lorainit.train``. Validation is evaluated every ``eval_every`` steps
(for choosing the LR), the test split once before training (the untuned base) and once at the end.
A feature monitor logs, per LoRA layer, the mean token norms of Z_A = A z and Z_B = B A z on a fixed
probe batch (the internal-instability picture of Hayou et al. 2024, Fig. 3, on a real model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .. import lmloss
from ..seeding import derive_seed


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA fine-tune of one model on one task with one init and one learning rate."""

    model: str = "smollm2-135m"
    """short name (smollm2-135m, minilm-l6), local folder or hub id"""
    task: str = "wiki"
    """wiki, mathqa, nli, sentiment, or a .jsonl file"""
    init: str = "init_a"
    """LoRA init scheme (lorainit.inits)"""
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
    """sequences per micro-batch, over all processes under torchrun"""
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
    """seed of the init, data order and dropout"""
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

    def __init__(self, task, tok, cfg: FinetuneConfig, device, rank: int = 0, world: int = 1):
        self.task, self.tok, self.cfg, self.device, self.rank, self.world = task, tok, cfg, device, rank, world
        train = task.splits["train"]
        self.items = (blocks(tok, train, cfg.seq_len) if task.kind == "lm" else train)[: cfg.max_train or None]
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


def loss_fn(model, batch) -> torch.Tensor:
    """The model's training loss; a causal LM's goes through the chunked frozen-head cross-entropy (same value)."""
    return lmloss.causal_lm_loss(model, batch)


@torch.no_grad()
def evaluate(model, task, tok, split: str, cfg: FinetuneConfig, device) -> dict:
    """The task's metric on ``split``: perplexity (lm) or accuracy (classify, choice)."""
    model.eval()
    ex = task.splits[split][: cfg.max_eval or None] if task.kind != "lm" else None
    b = cfg.batch_size
    if task.kind == "lm":
        nll, count = 0.0, 0
        items = blocks(tok, task.splits[split], cfg.seq_len)[: cfg.max_eval or None]
        for i in range(0, len(items), b):
            batch = collate(task, tok, items[i:i + b], cfg.seq_len, device)
            logits = model(input_ids=batch["input_ids"]).logits[:, :-1].float()
            target = batch["input_ids"][:, 1:]
            nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
            count += target.numel()
        return {f"{split}_loss": nll / count, f"{split}_perplexity": math.exp(nll / count)}
    if task.kind == "classify":
        right = 0
        for i in range(0, len(ex), b):
            batch = collate(task, tok, ex[i:i + b], cfg.seq_len, device)
            right += (model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1) == batch["labels"]).sum().item()
        return {f"{split}_accuracy": right / len(ex)}
    right = 0
    for i in range(0, len(ex), b):  # choice: the option with the highest total log-likelihood given the question
        chunk = ex[i:i + b]
        texts, owner, starts = [], [], []
        for k, e in enumerate(chunk):
            prompt, _ = choice_text(e)
            n_prompt = len(tok(prompt)["input_ids"])
            for o in range(len(e["options"])):
                texts.append(prompt + choice_text(e, o)[1])
                owner.append(k)
                starts.append(n_prompt - 1)  # logp index n predicts token n + 1: options start at n_prompt
        enc = tok(texts, padding=True, return_tensors="pt").to(device)
        logp = model(**enc).logits[:, :-1].float().log_softmax(-1).gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
        mask = enc["attention_mask"][:, 1:].clone()
        mask[torch.arange(mask.shape[1], device=device)[None, :] < torch.tensor(starts, device=device)[:, None]] = 0
        score = (logp * mask).sum(1).tolist()  # one total per (example, option)
        for k, e in enumerate(chunk):
            mine = [sc for sc, w in zip(score, owner) if w == k]
            right += int(max(range(len(mine)), key=mine.__getitem__) == e["answer"])
    return {f"{split}_accuracy": right / len(ex)}


class FeatureMonitor:
    """Mean token norms ||A z|| and ||B A z|| of every LoRA layer on a fixed probe batch."""

    def __init__(self, model, layers: dict, adapter: str = "default"):
        self.model, self.layers, self.adapter = model, layers, adapter

    @torch.no_grad()
    def __call__(self, probe: dict) -> dict[str, list[float]]:
        norms, handles = {}, []
        for name, layer in self.layers.items():
            short = name.split("model.", 1)[-1]
            handles.append(layer.lora_A[self.adapter].register_forward_hook(
                lambda m, i, o, s=short: norms.setdefault(s, [0.0, 0.0]).__setitem__(0, o.float().norm(dim=-1).mean().item())))
            handles.append(layer.lora_B[self.adapter].register_forward_hook(
                lambda m, i, o, s=short: norms.setdefault(s, [0.0, 0.0]).__setitem__(1, o.float().norm(dim=-1).mean().item())))
        try:
            self.model.eval()
            self.model(**{k: v for k, v in probe.items() if k != "labels"})
        finally:
            for h in handles:
                h.remove()
        return norms
