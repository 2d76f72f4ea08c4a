"""``lorainit finetune``: one resumable fine-tune, from config to adapter and run card.

The output folder holds ``config.json``, ``log.jsonl`` (one record per step and per evaluation),
``checkpoint/`` while the run is unfinished, and at the end ``adapter/`` (PEFT format),
``run_card.json`` (config, versions, split hash, metrics, timing) and ``features.png`` (the monitor).
Re-running the same config resumes from the checkpoint; a finished run is not trained again.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch

from .. import apply, data, io, models, plots, speed, train
from .toy import resolve_device
from .finetune import Batches, FeatureMonitor, FinetuneConfig, collate, compiles, evaluate, loss_fn, validate


def _log_writer(path: Path, resume_step: int):
    """Append records to log.jsonl; on resume, first drop records from steps the checkpoint does not cover."""
    keep = []
    if path.exists() and resume_step:
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) < resume_step]
    io.write_text(path, "".join(line + "\n" for line in keep))
    f = open(path, "a")

    def log(rec: dict) -> None:
        f.write(json.dumps(rec) + "\n")
        f.flush()

    return log, f


def run(cfg: FinetuneConfig, out: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    validate(cfg)
    out = Path(out)
    wanted = io.config_dict(cfg, drop=io.EXECUTION)
    io.check_folder(out, wanted, overwrite=overwrite)  # read-only: nothing is written before the setup succeeded
    if not overwrite and (out / "run_card.json").exists():
        return io.read_json(out / "run_card.json")
    rank, world, device = _distributed(resolve_device(cfg.device), cfg)
    task = data.load(cfg.task)
    model, tok, kind, default_targets = models.load(cfg.model, num_labels=len(task.labels) or None,
                                                    dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    if task.model_kind != kind:
        need = "an encoder (e.g. minilm-l6)" if task.model_kind == "encoder" else "a causal LM (e.g. smollm2-135m)"
        raise ValueError(f"task {cfg.task} needs {need}; {cfg.model} is {'an encoder' if kind == 'encoder' else 'a causal LM'}")
    model.to(device)
    batches = Batches(task, tok, cfg, device, rank, world)
    needs_data = bool(apply.inits.entry(cfg.init).needs)
    applied = apply.apply(model, cfg.init, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets or default_targets) or None,
                          data=[batches.full(s) for s in range(cfg.init_batches)] if needs_data else None, seed=cfg.seed,
                          use_rslora=cfg.rslora, task_type="SEQ_CLS" if kind == "encoder" else None)
    peft_model = applied.model
    if _autocast(device) is not None:  # LoRA inputs stay in the autocast dtype (speed.autocast_lora)
        speed.autocast_lora(peft_model)
    if compiles(cfg, device):
        speed.compile_blocks(peft_model)
    if rank == 0:
        io.claim_folder(out, wanted, overwrite=overwrite, stale=["log.jsonl", "run_card.json", "checkpoint", "adapter", "*.png"])
    if world > 1:
        torch.distributed.barrier()
        return _train_other_rank(peft_model, batches, cfg, out, device) if rank else _rank0(
            cfg, out, task, tok, kind, device, applied, batches, wanted, progress, world)
    return _rank0(cfg, out, task, tok, kind, device, applied, batches, wanted, progress, 1)


def _distributed(device: torch.device, cfg: FinetuneConfig) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); (rank, world, device)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return torch.distributed.get_rank(), world, device


def _loop(cfg: FinetuneConfig) -> train.LoopConfig:
    return train.LoopConfig(steps=cfg.steps, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio, grad_accum=cfg.grad_accum,
                            loraplus_ratio=cfg.loraplus_ratio, eval_every=cfg.eval_every,
                            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed)


def _autocast(device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" else None


def _evaluating(device):
    """Evaluation's context: the training's autocast, modules uncompiled (``speed.eager``)."""
    amp = _autocast(device)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=amp, enabled=amp is not None))
    stack.enter_context(speed.eager())
    return stack


def _train_other_rank(peft_model, batches, cfg: FinetuneConfig, out: Path, device) -> dict:
    """A process other than rank 0: trains its shards, evaluates and writes nothing."""
    result = train.train(peft_model, batches, loss_fn, _loop(cfg), out,
                         progress=False, autocast=_autocast(device))
    torch.distributed.barrier()
    return {"rank": torch.distributed.get_rank(), **result}


def _rank0(cfg, out, task, tok, kind, device, applied, batches, wanted, progress, world) -> dict:
    peft_model = applied.model
    monitor = FeatureMonitor(peft_model, apply.lora_layers(peft_model))
    probe = collate(task, tok, (batches.items if task.kind == "lm" else task.splits["val"])[: cfg.batch_size], cfg.seq_len, device)
    ckpt = out / "checkpoint"
    resume = json.loads((ckpt / "state.json").read_text())["step"] if ckpt.exists() else 0
    log, logfile = _log_writer(out / "log.jsonl", resume)
    base = None
    if not resume:
        with _evaluating(device):
            base = evaluate(peft_model, task, tok, "test", cfg, device)
        log({"step": 0, "base": base})

    def evaluate_fn(step: int) -> dict:
        with _evaluating(device):
            rec = evaluate(peft_model, task, tok, "val", cfg, device)
            if step == cfg.steps:
                rec.update(evaluate(peft_model, task, tok, "test", cfg, device))
            return {**rec, "features": monitor(probe)}

    try:
        result = train.train(peft_model, batches, loss_fn, _loop(cfg), out, evaluate=evaluate_fn,
                             progress=progress, log=log, autocast=_autocast(device))
    finally:
        logfile.close()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    base = base or next(r["base"] for r in records if "base" in r)
    evals = [r for r in records if "features" in r]
    saved = apply.save(applied, out / "adapter", overwrite=True)
    import peft
    import transformers

    card = {
        "config": wanted, "provenance": io.provenance(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "task": {"name": task.name, "metric": task.metric, "split_hash": task.split_hash,
                 "sizes": {k: len(v) for k, v in task.splits.items()}, "max_train": cfg.max_train, "max_eval": cfg.max_eval},
        "model": {"name": cfg.model, "kind": kind, "parameters": sum(p.numel() for p in peft_model.parameters()),
                  "trainable": sum(p.numel() for p in peft_model.parameters() if p.requires_grad)},
        "metrics": {"base_test": base, "final": {k: v for k, v in evals[-1].items() if k not in ("features", "step")},
                    "val_history": [{k: v for k, v in r.items() if k != "features"} for r in evals]},
        "execution": {"device": str(device), "compile": compiles(cfg, device), "autocast": str(_autocast(device))},
        "timing": {**result, "tokens_per_second": result["tokens"] / result["seconds"] if result["seconds"] else None},
        "adapter": saved,
    }
    io.write_json(out / "run_card.json", card)
    _feature_plot(evals, out / "features.png")
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    if world > 1:
        torch.distributed.barrier()
    return card


def _feature_plot(evals: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [r["step"] for r in evals]
    layers = list(evals[0]["features"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (ax, title) in enumerate(zip(axes, ("|Z_A| = mean ||A z||", "|Z_B| = mean ||B A z||"))):
        values = np.array([[r["features"][name][k] for name in layers] for r in evals])  # (evals, layers)
        ax.plot(steps, values, color="gray", lw=0.5, alpha=0.5)
        ax.plot(steps, values.mean(1), color="k", lw=2, label=f"mean over {len(layers)} LoRA layers")
        ax.set(xlabel="step", title=title, yscale="log" if (values > 0).all() else "linear")
        ax.legend(fontsize=7)
    fig.tight_layout()
    plots.save(fig, path)
