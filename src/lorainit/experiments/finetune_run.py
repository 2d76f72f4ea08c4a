"""``lorainit finetune`` and the finetune sweep: K >= 1 LoRA fine-tunes of one model on one task, one path.

K runs (points: init, lr, seed) train together on one frozen base (``lorainit.multi``): one forward and
backward per step for all of them, each with its own adapters, classifier head, data order, AdamW groups
and divergence record (``lorainit.runloss``), through the one loop (``lorainit.train``: warmup/decay
schedule, gradient accumulation, LoRA+, checkpoints and exact resume, torchrun data parallel; ``finetune_train``
drives it with the evaluations and the log).
``lorainit finetune`` is the case K = 1. Every registered init trains this way: starts come from
``finetune_setup`` (data passes shared and cached), residual schemes carry a frozen correction. A full
fine-tune (``--init full``, ``lorainit.full``) is K = 1 on a float32 copy of the base, through the same loop,
data, schedule, evaluation and checkpoints; it leaves model/ (a plain transformers folder) instead of adapter/.

Folders: ``out`` (the batch) holds config.json (the config and the points), log.jsonl (per step the
summed loss and each run's, per evaluation each run's metrics and features) and checkpoint/ while
unfinished. Each run's folder (``run_dirs``; ``out`` itself when K = 1) ends with adapter/ (plain PEFT),
run_card.json and features.png (``finetune_card``). Re-running resumes; a batch whose runs all have their cards is not
trained again.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import devices, full, io, models, multi, speed, train
from ..batches import Batches
from ..runfolder import CARD, CHECKPOINT, LOG, RunFolder
from . import finetune_card, finetune_setup, finetune_train
from .finetune import FinetuneConfig, compiles, graph_mode, identity, run_identity, validate


def finished(run_dir: Path, cfg: FinetuneConfig, point: dict) -> dict | None:
    """The run card in ``run_dir`` if it records this very run, else None."""
    card = RunFolder(run_dir).card()
    if card is not None and "config" in card and not io.config_diff(card["config"], run_identity(cfg, point)):
        return card
    return None


def run(
    cfg: FinetuneConfig,
    points: list[dict],
    out: Path,
    *,
    run_dirs: list[Path] | None = None,
    init_cache: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train the points (dicts with init, lr, seed) together; returns each run's card (see the module docstring).
    ``init_cache``: where starts are cached (default: ``out``/inits, removed when the batch is done)."""
    validate(cfg)
    for p in points:
        full.check(p["init"])  # a KeyError naming the closest scheme
        if not p["lr"] > 0:
            raise ValueError(f"lr must be > 0; got {p['lr']}")
    out, K = Path(out), len(points)
    if K > 1 and any(full.is_full(p["init"]) for p in points):
        raise ValueError(
            f"a full fine-tune shares no frozen base with other runs: train each '{full.FULL}' point in a "
            "batch of its own"
        )
    run_dirs = [Path(d) for d in run_dirs] if run_dirs else ([out] if K == 1 else [out / f"run{k}" for k in range(K)])
    wanted = identity(cfg, points)
    what = "a fine-tune run" if K == 1 else "a batch of fine-tune runs"
    io.check_folder(
        out, wanted, overwrite=overwrite, what=what
    )  # read-only: nothing is written before the setup succeeded
    cards = [None if overwrite else finished(d, cfg, p) for d, p in zip(run_dirs, points)]
    if all(cards):  # (killed after its last card: what it had not yet removed goes now)
        _tidy(out, run_dirs)
        return cards
    rank, world, device = _distributed(devices.resolve_device(cfg.device), cfg)
    if rank == 0:
        train.recover_checkpoint(
            RunFolder(out).checkpoint
        )  # (before the temporaries, .checkpoint.old among them, are cleaned)
    data_cfg = cfg  # what the data order and the starts follow: the global batch
    if cfg.batch_per_process:
        _same_processes(out, world)
        data_cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size * world, batch_per_process=False)
    t0 = time.perf_counter()
    loaded = finetune_setup.load(cfg, device)
    task = loaded.task
    runs = [multi.Run(p["init"], p["lr"], p["seed"], cfg.loraplus_ratio) for p in points]
    head = models.head_name(loaded.model) if loaded.kind == "encoder" else None
    loop = finetune_train.loop_config(cfg, runs)
    local_cache = init_cache is None
    trainee = memory = None
    try:
        if full.is_full(
            runs[0].init
        ):  # a float32 copy of the base trains (lorainit.full); the loaded base is untouched
            memory = full.memory(loaded.model, embeddings=cfg.train_embeddings)
            full.check_memory(memory, device, cfg.model)
            if progress and rank == 0:
                tqdm.write(full.describe(memory, cfg.model))
            model = trainee = full.prepare(
                loaded.model,
                embeddings=cfg.train_embeddings,
                head=head,
                head_module=models.seeded_head(loaded.model, head, runs[0].seed) if head else None,
            )
            opt = speed.adamw(
                train.param_groups(model, loop),
                lr=loop.lr,
                betas=(loop.beta1, loop.beta2),
                eps=loop.eps,
                weight_decay=loop.weight_decay,
            )
            scaling, corrected, init_cost, heads = None, [False], None, None
        else:  # K adapters on the one frozen base (lorainit.multi), detached again below
            model = loaded.model
            targets = list(cfg.targets or loaded.targets)
            linears = multi.targets_of(model, targets)
            for name, lin in linears.items():
                if cfg.rank > min(lin.weight.shape):
                    raise ValueError(
                        f"rank {cfg.rank} exceeds min(out, in) = {min(lin.weight.shape)} of layer {name}; "
                        f"choose rank <= {min(lin.weight.shape)} or leave that layer out of the targets"
                    )
            scaling = multi.scaling_of(cfg.rank, cfg.alpha, cfg.rslora)
            start, corrected, init_cost = finetune_setup.starts_for(
                loaded, data_cfg, runs, linears, scaling, device, out / "inits" if local_cache else init_cache, head
            )
            heads = [models.seeded_head(model, head, r.seed) for r in runs] if head else None
            multi.attach(
                model, runs, start, scaling=scaling, targets=targets, corrected=corrected, head=head, heads=heads
            )
            opt = multi.optimizer(
                model, runs, betas=(loop.beta1, loop.beta2), eps=loop.eps, weight_decay=loop.weight_decay
            )
        if world > 1:  # every process starts from rank 0's parameters
            for t in (
                [p.data for p in model.parameters() if p.requires_grad]
                if trainee is not None
                else [b["param"] for b in opt.buffers.values()]
            ):
                torch.distributed.broadcast(t, 0)
        compiled = compiles(cfg, device, task.kind)
        compile_mode = graph_mode(cfg.cuda_graphs, task.kind, trainee) if compiled else None  # (in the run cards)
        if compiled:
            speed.keep_graphs(  # a worker's later batch of this shape compiles nothing
                (cfg.model, cfg.rank, cfg.batch_size, cfg.seq_len, K, any(corrected), trainee is not None)
            )
            # (padded kinds: a new length each batch, so shapes symbolic)
            multi.compile_blocks(model, dynamic=task.kind != "lm", mode=compile_mode)  # (the kernel under graphs)
        if rank == 0:
            for folder in (out, *run_dirs):
                io.clean_temporaries(folder)
            # (the cached starts in inits/ are keyed by everything they depend on: never stale)
            io.claim_folder(
                out,
                wanted,
                overwrite=overwrite,
                what=what,
                stale=[LOG, CHECKPOINT, "run[0-9]*", "adapter", "model", CARD, "features.png"],
            )
        if world > 1:
            torch.distributed.barrier()
        setup = time.perf_counter() - t0
        batches = [
            Batches(  # on the CPU: the K runs' micro-batches go to the device stacked, one copy per input
                task,
                loaded.tok,
                dataclasses.replace(data_cfg, seed=r.seed),
                "cpu",
                rank,
                world,
                items=finetune_setup.items(loaded, cfg),
                encodings=finetune_setup.encodings(loaded, cfg),
            )
            for r in runs
        ]
        with speed.attention(padded=task.kind != "lm"):  # (evaluations included)
            trained = finetune_train.train_runs(
                cfg, model, runs, batches, loaded, out, device, rank, progress, loop, opt
            )
        params = {
            "parameters": sum(p.numel() for p in model.parameters())
            - sum(p.numel() for p in model.parameters() if p.requires_grad),
            "trainable_per_run": sum(p.numel() for p in model.parameters() if p.requires_grad) // K,
        }
        layers = {n: m for n, m in model.named_modules() if isinstance(m, multi.MultiLoRALinear)}
        head_states = [{f"{head}.{k}": v for k, v in h.state_dict().items()} for h in heads] if heads else [None] * K
    finally:
        multi.detach(loaded.model).eval()  # the base as loaded, for the process's next batch
    if rank:
        torch.distributed.barrier()
        return [{"rank": rank}] * K
    ctx = dict(
        cfg=cfg,
        loaded=loaded,
        device=device,
        world=world,
        scaling=scaling,
        params=params,
        init_cost=init_cost,
        setup=setup,
        compiled=compiled,
        compile_mode=compile_mode,
        wall=time.perf_counter() - t0,
        trained=trained,
        trainee=trainee,
        memory=memory,
    )
    cards = [
        finetune_card.finish(k, p, d, layers, head_states[k], corrected[k], **ctx)
        for k, (p, d) in enumerate(zip(points, run_dirs))
    ]
    _tidy(out, run_dirs, local_cache)
    if world > 1:
        torch.distributed.barrier()
    return cards


def _tidy(out: Path, run_dirs: list[Path], local_cache: bool = True) -> None:
    """A finished batch keeps its cards, adapters, figures and log: the checkpoint, a run-local start cache and any
    half-written temporaries go."""
    shutil.rmtree(RunFolder(out).checkpoint, ignore_errors=True)
    if local_cache:
        shutil.rmtree(out / "inits", ignore_errors=True)
    for folder in (out, *run_dirs):
        io.clean_temporaries(folder)


def _same_processes(out: Path, world: int) -> None:
    """With --batch-per-process the global batch depends on the number of processes: resume only with as many."""
    state = RunFolder(out).checkpoint_state()
    if state is not None and state.get("processes", world) != world:
        was = state["processes"]
        raise ValueError(
            f"{out} was checkpointed by {was} processes with --batch-per-process; resume it with "
            f"--nproc_per_node {was} (this is {world}) or start in a new folder"
        )


def _distributed(device: torch.device, cfg: FinetuneConfig) -> tuple[int, int, torch.device]:
    """(rank, world, device) under torchrun (``devices.join``), once the batch divides among the processes."""
    world = devices.world_size()
    if world > 1 and cfg.batch_size % world and not cfg.batch_per_process:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    return devices.join(device)
