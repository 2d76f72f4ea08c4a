"""K fine-tunes through the one training loop (``lorainit.train``): the loop's config for K runs (each run's
divergence judged by ``runloss.RunLosses``, not the loop), the step's batch (one run's, or K runs' stacked), and on
rank 0 the evaluations (base test at step 0, validation every ``eval_every`` steps, test at the end, the |Z_A|/|Z_B|
probe) under the training's autocast with modules uncompiled, logged to the batch's log.jsonl. The step-0 test is
one pass of the base model, not K, where every run starts as the base model (``base_is_shared``), and one per
process: the loaded model keeps it for a sweep worker's later batches."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import inits, multi, runloss, speed, train
from ..batches import Uploader, collate
from ..runfolder import RunFolder
from . import finetune_eval, finetune_setup
from .finetune import FinetuneConfig, autocast_dtype, eval_batch


def evaluating(device):
    """Evaluation's context: the training's autocast, modules uncompiled (``speed.eager``)."""
    amp = autocast_dtype(device)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=amp, enabled=amp is not None))
    stack.enter_context(speed.eager())
    return stack


def loop_config(cfg: FinetuneConfig, runs: list) -> train.LoopConfig:
    return train.LoopConfig(
        steps=cfg.steps,
        lr=max(r.lr for r in runs),
        warmup_ratio=cfg.warmup_ratio,
        grad_accum=cfg.grad_accum,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        seed=runs[0].seed,
        diverge_factor=math.inf,
    )  # each run's divergence is judged by RunLosses


def base_is_shared(model, runs, task) -> bool:
    """Whether every run's step-0 model computes the base model's function: LoRA runs (not a full fine-tune's
    trainee, which has no adapters) of output-preserving inits (``inits.Scheme.preserves_output``) on a task with
    no per-run head (a classifier's seeded heads differ). Residual runs (pissa, lora_ga) are the base up to the
    rounding of their cancelling correction."""
    adapted = any(isinstance(m, multi.MultiLoRALinear) for m in model.modules())
    return adapted and task.kind != "classify" and all(inits.entry(r.init).preserves_output for r in runs)


def train_runs(cfg, model, runs, batches, loaded, out: Path, device, rank: int, progress: bool, loop, opt) -> dict:
    """The loop over K runs; on rank 0 with evaluations and the log. Returns the loop's result, the losses'
    record, the base (step-0) test metrics and every evaluation."""
    K, task = len(runs), loaded.task
    losses = runloss.RunLosses(K, task.kind, grad_accum=cfg.grad_accum)

    upload = Uploader(device)

    def step_at(step: int, micro: int) -> dict:
        """The K runs' micro-batches: ``batches`` give CPU tensors, stacked there, then one copy per input."""
        parts = [b(step, micro) for b in batches]
        return upload(parts[0] if K == 1 else multi.stack_batches(parts))

    if rank:
        result = train.train(
            model, step_at, losses, loop, out, progress=False, autocast=autocast_dtype(device), optimizer=opt
        )
        return {"result": result, "losses": losses}
    folder = RunFolder(out)
    log, logfile, records = folder.open_log(folder.resume_step())
    probe = collate(
        task,
        loaded.tok,
        (finetune_setup.items(loaded, cfg) if task.kind == "lm" else task.splits["val"])[: cfg.batch_size],
        cfg.seq_len,
        device,
    )
    base = next((r["base"] for r in records if "base" in r), None)

    def evaluate(split: str, what: str) -> dict:
        size = min(len(task.splits[split]), cfg.max_eval or len(task.splits[split])) if task.kind != "lm" else None
        with (
            evaluating(device),
            tqdm(
                total=size,
                desc=f"{what}: {split}",
                unit="block" if size is None else "example",
                leave=False,
                disable=not progress,
            ) as bar,
        ):
            return finetune_eval.evaluate(model, K, task, loaded.tok, split, cfg, device, progress=bar.update)

    if base is None:
        if base_is_shared(model, runs, task):  # every run is the base model at step 0: evaluate it once, not K times
            key = ("test", cfg.seq_len, cfg.max_eval, eval_batch(cfg))
            if key not in loaded.base:  # and once per process: a sweep worker's later batches reuse it
                with evaluating(device), multi.base_only(model):
                    loaded.base[key] = finetune_eval.evaluate(model, 1, task, loaded.tok, "test", cfg, device)
            base = {k: v * K for k, v in loaded.base[key].items()}
        else:
            base = evaluate("test", "the start")
        log({"step": 0, "base": base})
    evals = [r for r in records if "features" in r]

    def evaluate_fn(step: int) -> dict:
        rec = evaluate("val", f"step {step}")
        if step == cfg.steps:
            rec.update(evaluate("test", f"step {step}"))
        with evaluating(device):
            rec["features"] = finetune_eval.features(model, K, probe)
        evals.append({"step": step, **rec})
        return rec

    try:
        result = train.train(
            model,
            step_at,
            losses,
            loop,
            out,
            evaluate=evaluate_fn,
            progress=progress,
            log=log,
            autocast=autocast_dtype(device),
            optimizer=opt,
        )
    finally:
        logfile.close()
    steps_logged = folder.steps()
    curves = [[r["run_loss"][k] if "run_loss" in r else r.get("loss") for r in steps_logged] for k in range(K)]
    return {"result": result, "losses": losses, "base": base, "evals": evals, "curves": curves}
