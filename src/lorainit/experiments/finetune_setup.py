"""What K fine-tunes need before their first step, paid once: the model and task, and each run's start.

- ``load``: the base model, tokenizer and task, kept for the life of the process (a sweep worker trains
  batch after batch on one model: it loads the model and tokenizes the training data once, not per point).
  ``lorainit.multi.detach`` leaves the base as it was loaded after each batch.
- ``starts``: every run's initial factors (``lorainit.starts``). Runs of one (init, seed) share them, so
  a data-dependent init's data pass (gradients, input statistics, HRP's preheat) runs once for all the
  learning rates of that init; schemes that need the same statistic at one seed share one pass. The factors
  are cached as safetensors in ``cache_dir`` under a key of everything they depend on, so a resumed run or
  a sweep's later batches read them instead of computing them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from .. import data, inits, io, models, runloss, speed, starts
from ..batches import Batches, Encodings, train_items
from ..inits import Factors
from .finetune import FinetuneConfig

# config fields a run's initial factors depend on (with its init and seed); lr, steps, schedule and evaluation do not
START_FIELDS = (
    "model",
    "task",
    "rank",
    "alpha",
    "targets",
    "rslora",
    "batch_size",
    "grad_accum",
    "seq_len",
    "max_train",
    "init_batches",
    "dropout",
)


@dataclasses.dataclass
class Loaded:
    model: torch.nn.Module
    tok: object
    kind: str  # "causal" or "encoder"
    targets: tuple[str, ...]  # the model's default LoRA targets
    task: data.Task
    items: dict  # (seq_len, max_train) -> training examples or LM blocks
    fingerprint: str | None = None  # sha256 of the model's files as loaded (models.fingerprint)
    base: dict = dataclasses.field(default_factory=dict)  # (split, seq_len, max_eval, eval batch) -> base metrics
    encodings: dict = dataclasses.field(default_factory=dict)  # (seq_len, max_train) -> the examples' Encodings


_LOADED: dict[tuple, Loaded] = {}  # one model per process: a worker's batches all train on it


def load(cfg: FinetuneConfig, device: torch.device) -> Loaded:
    """The model and task of ``cfg`` on ``device``, loaded once per process (``cfg.dropout`` applied)."""
    key = (cfg.model, cfg.task, str(device), cfg.dropout)
    if key not in _LOADED:
        _LOADED.clear()
        task = data.load(cfg.task)
        _, known, _ = models.resolve(cfg.model)
        if known and known != task.model_kind:
            _refuse(cfg, task, known)
        model, tok, kind, targets = models.load(
            cfg.model,
            num_labels=len(task.labels) or None,
            dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        )
        if kind != task.model_kind:
            _refuse(cfg, task, kind)
        if not cfg.dropout:
            models.without_dropout(model)
        model.requires_grad_(False)  # the base is frozen from the start: every data pass sees it as training will
        _LOADED[key] = Loaded(model.to(device).eval(), tok, kind, targets, task, {}, models.fingerprint(cfg.model))
    return _LOADED[key]


def _refuse(cfg: FinetuneConfig, task: data.Task, kind: str):
    need = "an encoder (e.g. minilm-l6)" if task.model_kind == "encoder" else "a causal LM (e.g. smollm2-135m)"
    raise ValueError(
        f"task {cfg.task} needs {need}; {cfg.model} is {'an encoder' if kind == 'encoder' else 'a causal LM'}"
    )


def items(loaded: Loaded, cfg: FinetuneConfig) -> list:
    """The training examples (LM blocks: tokenized once per process)."""
    key = (cfg.seq_len, cfg.max_train)
    if key not in loaded.items:
        loaded.items[key] = train_items(loaded.task, loaded.tok, cfg)
        if not loaded.items[key]:
            raise ValueError(f"task {loaded.task.name} has no training examples left (max_train={cfg.max_train})")
    return loaded.items[key]


def encodings(loaded: Loaded, cfg: FinetuneConfig) -> Encodings | None:
    """The training examples' kept tokenization (one per process and data setting; None for LM tasks, whose
    blocks ``items`` tokenizes up front)."""
    if loaded.task.kind == "lm":
        return None
    key = (cfg.seq_len, cfg.max_train)
    if key not in loaded.encodings:
        loaded.encodings[key] = Encodings(loaded.task, loaded.tok, items(loaded, cfg), cfg.seq_len)
    return loaded.encodings[key]


def start_key(cfg: FinetuneConfig, init: str, seed: int, device: torch.device) -> str:
    """The cache key of one run's start: every config field it depends on, the init, seed and device type."""
    what = {k: v for k, v in io.config_dict(cfg).items() if k in START_FIELDS}
    what.update(init=init, seed=seed, device=device.type)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def starts_for(
    loaded: Loaded,
    cfg: FinetuneConfig,
    runs: list,
    linears: dict[str, torch.nn.Module],
    scaling: float,
    device: torch.device,
    cache_dir: Path | None,
    head: str | None,
) -> tuple[list[dict[str, Factors]], list[bool], dict]:
    """Each run's start (PEFT layer name -> Factors), whether it carries a frozen correction (a residual scheme),
    and what it cost: {"computed": [(init, seed)...], "cached": [...], "seconds"}."""
    t0 = time.perf_counter()
    layers = {starts.PEFT_PREFIX + n: m for n, m in linears.items()}
    found: dict[tuple[str, int], tuple[dict[str, Factors], bool]] = {}
    missing: dict[int, list[str]] = {}
    for r in runs:
        path = _cache_path(cache_dir, cfg, r.init, r.seed, device)
        if (r.init, r.seed) in found or r.init in missing.get(r.seed, []):
            continue
        if path is not None and path.exists():
            found[(r.init, r.seed)] = _read(path, device)
        else:
            missing.setdefault(r.seed, []).append(r.init)
    for seed, schemes in missing.items():
        fresh = _compute(loaded, cfg, layers, schemes, seed, scaling, head)
        for init, value in fresh.items():
            found[(init, seed)] = value
            if cache_dir is not None:
                _write(_cache_path(cache_dir, cfg, init, seed, device), *value)
    cost = {
        "computed": [[i, s] for s, ss in missing.items() for i in ss],
        "cached": [list(k) for k in found if k[0] not in missing.get(k[1], [])],
        "seconds": time.perf_counter() - t0,
    }
    return [found[(r.init, r.seed)][0] for r in runs], [found[(r.init, r.seed)][1] for r in runs], cost


def _compute(
    loaded: Loaded, cfg: FinetuneConfig, layers: dict, schemes: list[str], seed: int, scaling: float, head: str | None
) -> dict[str, tuple[dict[str, Factors], bool]]:
    """The starts of ``schemes`` at ``seed``: one data pass per needed statistic, on the first ``init_batches``
    global batches of the seed's data order, with the seed's classifier head in place (its gradients depend on it).
    The blocks run uncompiled (``speed.eager``) even where a worker's earlier batch compiled them (CUDA graphs on a
    GPU, whose outputs a later replay overwrites): a start does not depend on which batch computed it."""
    model, task = loaded.model, loaded.task
    needs = any(inits.entry(s).needs for s in schemes)
    batches = Batches(
        task,
        loaded.tok,
        dataclasses.replace(cfg, seed=seed),
        next(model.parameters()).device,
        items=items(loaded, cfg),
        encodings=encodings(loaded, cfg),
    )
    batch_data = [batches.full(s) for s in range(cfg.init_batches)] if needs else None
    original = model.get_submodule(head) if head else None
    if head:
        starts_head = models.seeded_head(model, head, seed).to(next(original.parameters()).device)
        setattr(model, head, starts_head)
    out: dict[str, tuple[dict[str, Factors], bool]] = {s: ({}, False) for s in schemes}
    try:
        with speed.eager():  # (uncompiled: see the docstring)
            for scheme, name, f in starts.draw_all(
                model,
                layers,
                schemes,
                seed=seed,
                ranks={n: cfg.rank for n in layers},
                scalings={n: scaling for n in layers},
                data=batch_data,
                loss_fn=lambda m, b: runloss.run_losses(m, b, 1, task.kind)[0],
            ):
                out[scheme][0][name] = Factors(
                    A=f.A.detach(), B=f.B.detach()
                )  # a residual base is not kept: the run carries a correction
                if f.residual is not None:
                    out[scheme] = (out[scheme][0], True)
    finally:
        if head:
            setattr(model, head, original)
    return out


def _cache_path(cache_dir: Path | None, cfg: FinetuneConfig, init: str, seed: int, device) -> Path | None:
    return (
        None
        if cache_dir is None
        else Path(cache_dir) / f"{init}-seed{seed}-{start_key(cfg, init, seed, device)}.safetensors"
    )


def _write(path: Path, factors: dict[str, Factors], corrected: bool) -> None:
    from safetensors.torch import save_file

    tensors = {f"{k}.{n}": getattr(f, k).float().contiguous().cpu() for n, f in factors.items() for k in ("A", "B")}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"corrected": str(int(corrected))})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read(path: Path, device) -> tuple[dict[str, Factors], bool]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device=str(device)) as f:
        corrected = f.metadata().get("corrected") == "1"
        t = {k: f.get_tensor(k) for k in f.keys()}
    names = {k.split(".", 1)[1] for k in t}
    return {n: Factors(A=t[f"A.{n}"], B=t[f"B.{n}"]) for n in names}, corrected
