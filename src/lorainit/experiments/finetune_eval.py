"""Evaluation of K stacked fine-tunes in one pass per batch: every run's metric on the same examples.

Each evaluation batch is stacked K times (``multi.stack_batches``), run k's copy going through its own
adapters and head, so the K runs cost one forward per batch. Metrics (as the papers report them):

- ``lm``: perplexity exp(mean next-token NLL) over the split's ``seq_len`` blocks;
- ``classify``: accuracy of the argmax class;
- ``choice``: accuracy of the option with the highest total log-likelihood given the question; the question runs
  once and its options after it on its key/value cache (``_scores_shared``: a mathqa question is ~45 tokens, an
  option 1 to 4), or, where the model's head is not a plain output matrix or the tokenizer merges across the
  question's end, each question + option text whole.

Batches hold ``--eval-batch-size`` examples (``finetune.eval_batch``: default 64, or ``--batch-size`` where larger); one that does not fit the GPU's memory is
evaluated in halves (``_fitting``).

``features``: the monitor of Hayou et al. 2024, Fig. 3 on a real model: per run and LoRA layer, the mean
token norms |Z_A| = ||A z|| and |Z_B| = ||B A z|| on a fixed probe batch.
"""

from __future__ import annotations

import inspect
import math

import torch

from .. import lmloss, multi, runloss
from ..batches import blocks, choice_text, collate
from .finetune import eval_batch

ROWS = 256  # (option, run) rows per log-softmax chunk of the cached-prefix scorer: 256 x O x V fp32 at most


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
        b = eval_batch(cfg)
        if task.kind == "lm":
            total = torch.zeros(K + 1, dtype=torch.float64)  # each run's summed token nll, then the token count
            for i in range(0, len(items), b):
                total += _fitting(lambda c: _lm_sums(model, K, task, tok, c, cfg, device), items[i : i + b])
                progress and progress(len(items[i : i + b]))
            loss = (total[:K] / max(total[K].item(), 1)).tolist()
            return {f"{split}_loss": loss, f"{split}_perplexity": [math.exp(v) if v < 700 else math.inf for v in loss]}
        right = torch.zeros(K, dtype=torch.long)
        score = _classify if task.kind == "classify" else _choose
        for i in range(0, len(items), b):
            chunk = items[i : i + b]
            right += _fitting(lambda c: score(model, K, task, tok, c, cfg, device), chunk)
            progress and progress(len(chunk))
        return {f"{split}_accuracy": (right.double() / max(len(items), 1)).tolist()}
    finally:
        model.train(was)


def _fitting(fn, chunk: list) -> torch.Tensor:
    """``fn(chunk)``, or the sum of ``fn`` over the chunk's halves (and theirs) where it does not fit the GPU's
    memory: a large --eval-batch-size costs a slower evaluation, never the batch's training."""
    try:
        return fn(chunk)
    except torch.OutOfMemoryError:
        if len(chunk) == 1:
            raise
    torch.cuda.empty_cache()  # (outside the handler: the failed attempt's tensors are freed by now)
    half = len(chunk) // 2
    return _fitting(fn, chunk[:half]) + _fitting(fn, chunk[half:])


def _lm_sums(model, K: int, task, tok, chunk: list, cfg, device) -> torch.Tensor:
    """(K + 1,) float64: each run's token nll summed over ``chunk``'s blocks, then their token count."""
    batch = collate(task, tok, chunk, cfg.seq_len, device)
    n = int((batch["labels"][:, 1:] != -100).sum())
    nll = runloss.run_losses(model, _stacked(batch, K), K, "lm").double().cpu() * n  # (K,): mean loss x tokens
    return torch.cat([nll, torch.tensor([float(n)], dtype=torch.float64)])


def _classify(model, K: int, task, tok, chunk: list, cfg, device) -> torch.Tensor:
    """(K,) counts of correctly classified examples of ``chunk``."""
    batch = collate(task, tok, chunk, cfg.seq_len, device)
    logits = model(**_stacked({k: v for k, v in batch.items() if k != "labels"}, K)).logits  # (K b, classes)
    return (logits.argmax(-1).view(K, -1) == batch["labels"][None]).sum(1).cpu()


def _choose(model, K: int, task, tok, chunk: list, cfg, device) -> torch.Tensor:
    """(K,) counts of questions of ``chunk`` whose most likely option is the answer."""
    owner, prompts, options = [], [], []  # per (question, option) pair; per question its prompt's tokens
    for q, e in enumerate(chunk):
        prompt, _ = choice_text(e)
        prompts.append(tok(prompt)["input_ids"])
        for o in range(len(e["options"])):
            owner.append(q)
            options.append(tok(prompt + choice_text(e, o)[1])["input_ids"])
    shared = lmloss._plain_head(model) is not None and all(
        ids[: len(prompts[q])] == prompts[q] for q, ids in zip(owner, options)
    )  # (a tokenizer that merged across the prompt's end would change the context: score each text whole)
    score = (_scores_shared if shared else _scores_whole)(model, K, tok, prompts, owner, options, device)  # (K, pairs)
    owner_t = torch.tensor(owner)
    right = torch.zeros(K, dtype=torch.long)
    for q, e in enumerate(chunk):
        mine = score[:, owner_t == q]  # (K, options of question q)
        right += (mine.argmax(1) == e["answer"]).long()
    return right


def _scores_whole(model, K: int, tok, prompts, owner, options, device) -> torch.Tensor:
    """(K, pairs): each option's total log-likelihood, each prompt + option scored as one text (the prompt's tokens
    once per option)."""
    enc = tok.pad({"input_ids": options}, return_tensors="pt").to(device)
    enc = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    starts = torch.tensor([len(prompts[q]) - 1 for q in owner], device=device)  # logp n predicts token n + 1
    logp = lmloss.token_logprobs(model, _stacked(enc, K)).view(K, len(options), -1)  # (K, pairs, T-1)
    mask = enc["attention_mask"][:, 1:].clone()
    mask[torch.arange(mask.shape[1], device=device)[None, :] < starts[:, None]] = 0
    return (logp * mask[None]).sum(-1).float().cpu()


def _scores_shared(model, K: int, tok, prompts, owner, options, device) -> torch.Tensor:
    """(K, pairs): as ``_scores_whole``, the prompts run once (a key/value cache) and the options after them.
    Pass 1: the b prompts, right-padded, K times: the cache, and at each prompt's last token the distribution of
    every option's first token. Pass 2: each pair's remaining option tokens on its prompt's cache rows (run k's
    pairs on run k's rows), at the positions they have in the whole text, the prompt's padding masked."""
    decoder, weight = lmloss._plain_head(model)
    b, n = len(prompts), len(owner)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    pe = tok.pad({"input_ids": prompts}, return_tensors="pt").to(device)
    out = decoder(
        input_ids=pe["input_ids"].repeat(K, 1), attention_mask=pe["attention_mask"].repeat(K, 1), use_cache=True
    )
    last = out.last_hidden_state[torch.arange(K * b, device=device), (lens - 1).repeat(K)]  # (K b, d)
    first_lp = (last @ weight.T).float().log_softmax(-1)  # (K b, V): run k's prompt q at row k b + q
    tails = [ids[len(prompts[q]) :] for q, ids in zip(owner, options)]  # each option's tokens (>= 1)
    rows = torch.tensor([k * b + q for k in range(K) for q in owner], device=device)  # (K n,) cache row per pair
    first = torch.tensor([t[0] for t in tails], device=device).repeat(K)
    score = first_lp[rows, first].view(K, n)  # (K, pairs): log p(first option token | prompt)
    O = max(len(t) for t in tails)
    if O == 1:
        return score.cpu()
    te = tok.pad({"input_ids": [t[:-1] for t in tails]}, return_tensors="pt").to(device)  # (n, O-1): inputs
    cache = getattr(out, "cache", None) or out.past_key_values  # (transformers >= 5.2x names it 'cache')
    cache.batch_select_indices(rows)
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    mask = torch.cat([pe["attention_mask"][torch.tensor(owner, device=device)], te["attention_mask"]], 1).repeat(K, 1)
    pos = (lens[torch.tensor(owner, device=device)][:, None] + torch.arange(O - 1, device=device)).repeat(K, 1)
    h = decoder(
        input_ids=te["input_ids"].repeat(K, 1),
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        **{name: cache},
    ).last_hidden_state  # (K n, O-1, d): position j predicts option token j + 1
    target = torch.tensor([t[1:] + [0] * (O - len(t)) for t in tails], device=device).repeat(K, 1)  # (K n, O-1)
    lp = torch.cat(  # (K n, O-1): in chunks of rows, so that the fp32 log-softmax over the vocabulary stays small
        [
            (hc @ weight.T).float().log_softmax(-1).gather(-1, tc[..., None])[..., 0]
            for hc, tc in zip(h.split(ROWS), target.split(ROWS))
        ]
    )
    return (score + (lp * te["attention_mask"].repeat(K, 1)).sum(-1).view(K, n)).cpu()


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
