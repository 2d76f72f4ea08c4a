"""Evaluation of K stacked fine-tunes in one pass per batch: every run's metric on the same examples.

Each evaluation batch is stacked K times (``multi.stack_batches``), run k's copy going through its own
adapters and head, so the K runs cost one forward per batch. Metrics (as the papers report them):

- ``lm``: perplexity exp(mean next-token NLL) over the split's ``seq_len`` blocks;
- ``classify``: accuracy of the argmax class;
- ``choice``: accuracy of the option with the highest total log-likelihood given the question.

``features``: the monitor of Hayou et al. 2024, Fig. 3 on a real model: per run and LoRA layer, the mean
token norms |Z_A| = ||A z|| and |Z_B| = ||B A z|| on a fixed probe batch.
"""

from __future__ import annotations

import math

import torch

from .. import lmloss, multi, runloss
from ..batches import blocks, choice_text, collate


def _stacked(batch: dict, K: int) -> dict:
    return multi.stack_batches([batch] * K)


@torch.no_grad()
def evaluate(model, K: int, task, tok, split: str, cfg, device, *, progress=None) -> dict[str, list[float]]:
    """Each run's metric on ``split`` (``cfg.max_eval`` examples or blocks at most): {"<split>_<metric>": [K values]}
    and for LM tasks also "<split>_loss". ``progress(n)`` is told each batch's size."""
    was = model.training
    model.eval()
    try:
        items = (blocks(tok, task.splits[split], cfg.seq_len) if task.kind == "lm" else task.splits[split])[
            : cfg.max_eval or None
        ]
        b = cfg.batch_size
        if task.kind == "lm":
            nll, count = torch.zeros(K, dtype=torch.float64), 0
            for i in range(0, len(items), b):
                batch = collate(task, tok, items[i : i + b], cfg.seq_len, device)
                n = int((batch["labels"][:, 1:] != -100).sum())
                nll += runloss.run_losses(model, _stacked(batch, K), K, "lm").double().cpu() * n
                count += n
                progress and progress(len(items[i : i + b]))
            loss = (nll / max(count, 1)).tolist()
            return {f"{split}_loss": loss, f"{split}_perplexity": [math.exp(v) if v < 700 else math.inf for v in loss]}
        right = torch.zeros(K, dtype=torch.long)
        for i in range(0, len(items), b):
            chunk = items[i : i + b]
            right += (_classify if task.kind == "classify" else _choose)(model, K, task, tok, chunk, cfg, device)
            progress and progress(len(chunk))
        return {f"{split}_accuracy": (right.double() / max(len(items), 1)).tolist()}
    finally:
        model.train(was)


def _classify(model, K: int, task, tok, chunk: list, cfg, device) -> torch.Tensor:
    """(K,) counts of correctly classified examples of ``chunk``."""
    batch = collate(task, tok, chunk, cfg.seq_len, device)
    logits = model(**_stacked({k: v for k, v in batch.items() if k != "labels"}, K)).logits  # (K b, classes)
    return (logits.argmax(-1).view(K, -1) == batch["labels"][None]).sum(1).cpu()


def _choose(model, K: int, task, tok, chunk: list, cfg, device) -> torch.Tensor:
    """(K,) counts of questions of ``chunk`` whose most likely option is the answer."""
    texts, owner, starts = [], [], []
    for q, e in enumerate(chunk):
        prompt, _ = choice_text(e)
        n_prompt = len(tok(prompt)["input_ids"])
        for o in range(len(e["options"])):
            texts.append(prompt + choice_text(e, o)[1])
            owner.append(q)
            starts.append(n_prompt - 1)  # logp index n predicts token n + 1: options start at n_prompt
    enc = dict(tok(texts, padding=True, return_tensors="pt").to(device))
    logp = lmloss.token_logprobs(model, _stacked(enc, K)).view(K, len(texts), -1)  # (K, options, T-1)
    mask = enc["attention_mask"][:, 1:].clone()
    mask[torch.arange(mask.shape[1], device=device)[None, :] < torch.tensor(starts, device=device)[:, None]] = 0
    score = (logp * mask[None]).sum(-1).cpu()  # (K, options): one total per (example, option)
    owner_t = torch.tensor(owner)
    right = torch.zeros(K, dtype=torch.long)
    for q, e in enumerate(chunk):
        mine = score[:, owner_t == q]  # (K, options of question q)
        right += (mine.argmax(1) == e["answer"]).long()
    return right


@torch.no_grad()
def features(model, K: int, probe: dict) -> list[dict[str, list[float]]]:
    """Per run, {layer: [|Z_A|, |Z_B|]} on ``probe`` (stacked K times), for every ``MultiLoRALinear``."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, multi.MultiLoRALinear)}
    if not layers:  # a full fine-tune: no adapter, no Z_A / Z_B
        return [{} for _ in range(K)]
    norms: dict[str, tuple[list[float], list[float]]] = {}
    handles = [
        m.register_forward_hook(lambda m, args, out, n=n: norms.__setitem__(n, m.feature_norms(args[0])))
        for n, m in layers.items()
    ]
    was = model.training
    try:
        model.eval()
        inputs = _stacked({k: v for k, v in probe.items() if k != "labels"}, K)
        if hasattr(model, "get_decoder"):  # a causal LM: the blocks are all the monitor needs, not the vocabulary
            lmloss.last_hidden(model.get_decoder(), inputs)
        else:
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return [{n: [za[k], zb[k]] for n, (za, zb) in norms.items()} for k in range(K)]
