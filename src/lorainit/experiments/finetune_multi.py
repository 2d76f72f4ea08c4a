"""Several causal-LM fine-tunes sharing model, task and shapes, trained as one batched program.

The sweep's path for finetune trials that differ only in init (data-free, base-preserving schemes),
learning rate and seed: one frozen base, K adapters (``lorainit.multi``), each run with its own data
order (``Batches`` with its seed), AdamW groups and divergence record, through the one training loop
(``lorainit.train``: warmup/decay schedule, checkpoints, exact resume). Validation perplexity of every
run is measured every ``eval_every`` steps and test perplexity at the end, on the same blocks as
``lorainit finetune``; each run's rows see the same evaluation batch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from .. import data, inits, io, models, multi, speed, train
from .finetune import Batches, FinetuneConfig, blocks, collate, compiles, validate
from .finetune_run import _log_writer
from .toy import resolve_device


def batchable(init: str) -> bool:
    e = inits.entry(init)
    return not e.needs and not e.residual


def _eval_split(model, K: int, items: list, task, tok, cfg: FinetuneConfig, device) -> tuple[list[float], int]:
    """Mean next-token loss of each run on ``items`` (LM blocks); (K losses, tokens)."""
    model.eval()
    nll = torch.zeros(K, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for i in range(0, len(items), cfg.batch_size):
            b = collate(task, tok, items[i:i + cfg.batch_size], cfg.seq_len, device)
            n = int((b["labels"][:, 1:] != -100).sum())
            nll += multi.run_losses(model, multi.stack_batches([b] * K), K).double().cpu() * n
            count += n
    model.train()
    return (nll / max(count, 1)).tolist(), count


def run(cfg: FinetuneConfig, points: list[dict], out: Path, *, progress: bool = False) -> list[dict]:
    """Train every point (dicts with init, lr, seed) together; per point: val/test perplexity, history, divergence."""
    validate(cfg)
    task = data.load(cfg.task)
    if task.kind != "lm":
        raise ValueError(f"batched fine-tunes take language-modelling tasks (wiki or a text .jsonl); {cfg.task} is {task.kind}")
    for p in points:
        if not batchable(p["init"]):
            raise ValueError(f"init {p['init']!r} is data-dependent or changes the base: it cannot share a batched run")
    card = Path(out) / "batch_card.json"
    if card.exists() and io.read_json(card)["points"] == points:  # finished before its results were recorded
        return io.read_json(card)["outcomes"]
    device = resolve_device(cfg.device)
    model, tok, kind, default_targets = models.load(cfg.model, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    if kind == "encoder":
        raise ValueError(f"{cfg.task} needs a causal LM; {cfg.model} is an encoder")
    model.to(device)
    runs = [multi.Run(p["init"], p["lr"], p["seed"], cfg.loraplus_ratio) for p in points]
    layers = multi.attach(model, runs, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets or default_targets),
                          use_rslora=cfg.rslora)
    if compiles(cfg, device):
        speed.compile_blocks(model)
    batches = [Batches(task, tok, dataclasses.replace(cfg, seed=p["seed"]), device) for p in points]
    evals = {s: blocks(tok, task.splits[s], cfg.seq_len)[: cfg.max_eval or None] for s in ("val", "test")}
    K = len(points)
    losses = multi.RunLosses(K, diverge_factor=1e3)
    Path(out).mkdir(parents=True, exist_ok=True)
    ckpt = Path(out) / "checkpoint"
    resume = json.loads((ckpt / "state.json").read_text())["step"] if ckpt.exists() else 0
    log, logfile = _log_writer(Path(out) / "log.jsonl", resume)
    logged = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines() if line]
    history: list[dict] = [r for r in logged if "val_loss" in r]  # evaluations kept from before a resume

    def evaluate_fn(step: int) -> dict:
        with speed.eager():  # evaluation shapes and modes would each compile anew
            rec = {"val_loss": _eval_split(model, K, evals["val"], task, tok, cfg, device)[0]}
            if step == cfg.steps:
                rec["test_loss"] = _eval_split(model, K, evals["test"], task, tok, cfg, device)[0]
        history.append({"step": step, **rec})
        return rec

    loop = train.LoopConfig(steps=cfg.steps, lr=max(r.lr for r in runs), warmup_ratio=cfg.warmup_ratio, grad_accum=cfg.grad_accum,
                            eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                            diverge_factor=math.inf)  # each run's divergence is judged by RunLosses
    try:
        result = train.train(model, lambda s, m: multi.stack_batches([b(s, m) for b in batches]), losses, loop, out,
                             evaluate=evaluate_fn, progress=progress, log=log, groups=multi.param_groups(layers, runs))
    finally:
        logfile.close()
    final = history[-1]
    outcomes = []
    for k, p in enumerate(points):
        dead = losses.diverged_step[k]
        ppl = lambda v: math.exp(v) if v is not None and math.isfinite(v) and v < 700 else None  # noqa: E731
        outcomes.append({
            "val_perplexity": None if dead is not None else ppl(final["val_loss"][k]),
            "test_perplexity": None if dead is not None else ppl(final["test_loss"][k]),
            "val_history": [{"step": h["step"], "val": ppl(h["val_loss"][k])} for h in history],
            "diverged_step": None if dead is None else dead // cfg.grad_accum, "reason": losses.reason[k],
            "seconds": result["seconds"] / K, "tokens_per_second_all_runs": result["tokens"] / result["seconds"] if result["seconds"] else None})
    io.write_json(card, {"config": dataclasses.asdict(cfg), "points": points, "outcomes": outcomes,
                         "timing": result, "provenance": io.provenance()})
    shutil.rmtree(ckpt, ignore_errors=True)
    return outcomes
