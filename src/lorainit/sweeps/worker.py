"""``lorainit sweep``: one worker's claim / run / record loop over a study's grid.

Every (extra dims x seed x init x LR) point of the grid is one Optuna trial (``store.py``). A worker
claims up to ``batch`` queued points that can train together, runs them through its experiment
(``experiment.py``; the built-in ones are in ``runners.py``), and records each outcome; it stops when every point
is finished (waiting while other workers still hold some) or after ``max_trials``. Start the same command again, on this or any
machine sharing the storage, to add workers or to resume after a crash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .. import inits, io
from . import experiment, gpus
from .grid import Grid
from .liveness import Heartbeat, process_age
from .storage import redact, sqlite_url
from .store import Store


@dataclass(frozen=True)
class SweepConfig:
    """The grid and the workers' settings (the experiment's own flags follow below)."""

    experiment: str = "toy"
    """toy (Hayou et al. teacher-student), mf (HRP matrix factorization) or finetune (a real model)"""
    inits: tuple[str, ...] = ()
    """init schemes to compare (default: toy/finetune init_a,init_b; mf gaussian,orthogonal,hrp,target); finetune also
    takes full (full fine-tuning at its own LRs, one run at a time beside the batched LoRA runs)"""
    lrs: tuple[float, ...] = ()
    """learning rates, 'LO:HI:N' (N log-spaced) or 'a,b,c' (default: the experiment's grid)"""
    seeds: int = 0
    """seeds per (init, LR) (0: the experiment's default: toy 2, mf 3, finetune 1)"""
    study: str = "sweep"
    """study name inside the storage"""
    storage: str = ""
    """Optuna storage URL: sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST/DB (default: sqlite:///OUT/study.db)"""
    batch: int = 0
    """points a worker claims and trains together as one batched program (toy: of one width, mf: of one mode,
    finetune: any points, K runs on one frozen base; a batch that does not fit the GPU is split); 0: the
    experiment's default (toy/mf 64, finetune 8)"""
    max_trials: int = 0
    """stop this worker after this many points (0: run until the study is finished)"""
    heartbeat: float = 10.0
    """seconds between a worker's heartbeats on its running trials"""
    grace: float = 120.0
    """a running trial of a worker on another host with no heartbeat for this long is re-queued"""
    db_patience: float = 120.0
    """seconds a worker waits out an unreachable study database (a server restart: retried with backoff) before it
    stops with one line, also at its start where the folder's sweep.json names that study (a new study's
    unreachable server is one line at once); nothing finished is lost either way"""
    widen: int = 0
    """once every point is finished, give each init (of each width or mode) whose selected LR is at an edge of its LRs
    the next LR beyond that edge (the grid's log step there), for that init alone at every seed, and go on; up to
    this many extra LRs per init (0: never; sweeps/widen.py)"""
    gpus: str = "all"
    """GPUs to run workers on, one worker process each: 'all' (every visible GPU), N (the first N), a list such as
    0,2, or 'none' (this process alone, as on a host without GPUs)"""


def grid_for(sweep: SweepConfig, cfg) -> Grid:
    runner = experiment.get(sweep.experiment)
    names = sweep.inits or runner.defaults["inits"]
    for name in names:
        if name not in runner.methods:  # a method that is no init scheme (finetune: full)
            inits.entry(name)  # KeyError naming the closest scheme
    lrs = sweep.lrs or runner.defaults["lrs"]
    if any(not lr > 0 for lr in lrs):
        raise ValueError(f"learning rates must be > 0; got {lrs}")
    seeds = sweep.seeds or runner.defaults["seeds"]
    if seeds < 0:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    config = io.config_dict(cfg, drop=(*runner.replaced, *io.EXECUTION))
    metric, direction = runner.metric(cfg)
    dims = {**runner.dims(cfg), "seed": list(range(seeds)), "init": list(names), "lr": [float(x) for x in lrs]}
    for (
        dim,
        values,
    ) in dims.items():  # a repeated value would make two trials of one point (and a worker wait on itself)
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            flag = {"init": "inits", "lr": "lrs", **runner.dim_flags}.get(dim, dim)
            shown = f"{twice:g}" if isinstance(twice, float) else twice
            raise ValueError(f"--{flag} lists {shown} more than once; give each value once")
    return Grid(sweep.experiment, dims, config, metric, direction)


def validate(sweep: SweepConfig) -> None:
    experiment.get(sweep.experiment)  # a ValueError naming the closest experiment
    if sweep.widen < 0:
        raise ValueError(f"--widen is how many extra LRs an init may get (0: none); got {sweep.widen}")
    if sweep.batch < 0:
        raise ValueError(f"batch must be a positive integer (or 0: the experiment's default); got {sweep.batch}")
    if (
        sweep.max_trials < 0
        or not sweep.heartbeat > 0
        or not sweep.grace > sweep.heartbeat
        or not sweep.db_patience >= 0
    ):
        raise ValueError("need max_trials >= 0, heartbeat > 0, grace > heartbeat and db_patience >= 0")


def _open(sweep: SweepConfig, cfg, out: Path) -> Store:
    """The study of this sweep, created (its points queued) if new; sweep.json names it, and a folder whose
    sweep.json names another study is refused (it would be repointed silently). A copied folder (sweep.json names
    an SQLite database elsewhere, the folder holds its own study.db) goes on in its own database, as ``report`` reads it."""
    grid = grid_for(sweep, cfg)
    url = sweep.storage or sqlite_url(out / "study.db")
    meta = io.read_json(out / "sweep.json") if (out / "sweep.json").exists() else None
    store = Store(
        url,
        sweep.study,
        heartbeat=sweep.heartbeat,
        grace=sweep.grace,
        patience=sweep.db_patience,
        rejoining=meta is not None and meta.get("storage") == redact(url) and meta.get("study") == sweep.study,
    )
    copied = (
        meta is not None
        and not sweep.storage
        and (out / "study.db").exists()
        and str(meta.get("storage")).startswith("sqlite:")
    )
    if meta is not None and (meta.get("study") != sweep.study or (meta.get("storage") != store.shown and not copied)):
        raise ValueError(
            f"{out} holds the sweep of study {meta.get('study')!r} in {meta.get('storage')}; give that --study "
            f"(and --storage) to work on it, or another --out for study {sweep.study!r}"
        )
    store.open(grid)  # (a study that exists grows by the new values of its dimensions)
    _name(store, out)
    return store


def _name(store: Store, out: Path) -> None:
    """sweep.json: the storage, study and grid of the study this sweep folder holds (``report`` reads it)."""
    io.write_json(
        out / "sweep.json", {"storage": store.shown, "study": store.study_name, "grid": store.grid.signature()}
    )


def _widen(store: Store, out: Path, cap: int) -> list[str]:
    """Add the extra LRs ``widen.next_lrs`` asks for to the study (queued at every seed) and sweep.json; what was
    added, one line each ([]: nothing: no selected LR at an edge, or each such init has ``cap`` extra LRs)."""
    from dataclasses import replace

    from . import widen
    from .summary import summarize

    grid = store.grid.signature()
    more = widen.next_lrs(grid, summarize(grid, store.records()), cap)
    if not more:
        return []
    store.open(replace(store.grid, extra=store.grid.extra + [p for p, _ in more]))
    _name(store, out)
    return [why for _, why in more]


def _batch(sweep: SweepConfig) -> int:
    """Points a worker claims at a time: --batch, or the experiment's default."""
    return sweep.batch or experiment.get(sweep.experiment).defaults["batch"]


def _say(line: str) -> None:
    """A timestamped line of this worker's timeline (a --gpus worker's goes to its log in workers/)."""
    tqdm.write(f"{gpus.stamp()} worker {os.getpid()}: {line}")


def _point(p: dict) -> str:
    """A point as 'init_a lr 0.001 seed 0' (other dimensions too, by name)."""
    rest = " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items() if k != "init")
    return f"{p['init']} {rest}" if "init" in p else rest


def run_on_gpus(
    sweep: SweepConfig,
    cfg,
    out: Path,
    argv: list[str],
    ids: list[str],
    *,
    progress: bool = True,
    started: gpus.Started | None = None,
) -> dict:
    """One worker process per GPU in ``ids`` on this sweep (``argv``: its command-line flags; ``sweeps.gpus``), or
    the workers ``gpus.early`` ``started`` already; returns {"done", "total", "running", "workers": exit codes, ...}
    once they have all exited. A bad grid, or a folder that holds another study, stops them before they are kept."""
    out = Path(out)
    started = started or gpus.start(argv, ids, out / "workers")
    try:
        validate(sweep)
        store = _open(sweep, cfg, out)
    except BaseException:
        started.discard()
        raise
    started.keep()
    codes = gpus.watch(started.procs, ids, out / "workers", store.progress, progress=progress)
    done, running, total = store.progress()
    return {
        "done": done,
        "total": total,
        "running": running,
        "workers": dict(zip(ids, codes)),
        "logs": str(out / "workers"),
        "storage": store.shown,
        "study": sweep.study,
    }


def run(sweep: SweepConfig, cfg, out: Path, *, progress: bool = True) -> dict:
    """Work on the study until it is finished (or ``max_trials``); returns {"ran", "done", "total", ...}."""
    validate(sweep)
    runner = experiment.get(sweep.experiment)
    out = Path(out)
    store = _open(sweep, cfg, out)
    done, _, total = store.progress()
    age = process_age()
    _say(f"study open, {done}/{total} points finished" + (f"; {age:.1f} s since this process started" if age else ""))
    bar = tqdm(total=total, initial=done, desc=f"sweep {sweep.experiment}", unit="trial", disable=not progress)
    ran, lost, diverged, widened = 0, 0, 0, []
    batch = _batch(sweep)
    if (workers := gpus.workers_started()) > 1:  # one of a --gpus command's workers: its share of a small sweep
        batch = gpus.fair_batch(batch, total - done, workers)
    while not sweep.max_trials or ran < sweep.max_trials:
        claims = store.claim(min(batch, sweep.max_trials - ran) if sweep.max_trials else batch, runner.batch_key)
        if not claims:
            done, running, total = store.progress()
            if done >= total and sweep.widen and (more := _widen(store, out, sweep.widen)):
                widened += more
                for line in more:
                    tqdm.write(f"widened: {line}")
                bar.total = len(store.grid.points())  # the grid store.open just grew
                continue
            if done >= total:
                break
            bar.set_postfix(waiting_on=f"{running} running elsewhere")
            # others hold the rest: they finish (this worker then exits) or go stale
            time.sleep(min(sweep.heartbeat, 0.25))
            continue
        shown = [_point(c.point) for c in claims]
        _say(f"claimed {len(claims)}: {', '.join(shown if len(shown) <= 6 else [*shown[:3], '...', shown[-1]])}")
        t0 = time.perf_counter()
        with Heartbeat(store, claims, sweep.heartbeat) as hb:
            outcomes = runner.run(cfg, [c.point for c in claims], out)
        _say(f"ran {len(claims)} in {time.perf_counter() - t0:.1f} s")
        for c, (value, attrs) in zip(claims, outcomes):
            ok = c.trial_id not in hb.lost and store.finish(c, value, attrs)
            lost += not ok
            diverged += ok and value is None
        ran += len(claims)
        bar.n = store.progress()[0]
        bar.refresh()
    bar.close()
    done, running, total = store.progress()
    _say(f"done: ran {ran}; {done}/{total} points finished")
    return {
        "ran": ran,
        "lost": lost,
        "diverged": diverged,
        "widened": widened,
        "done": done,
        "total": total,
        "running": running,
        "storage": store.shown,
        "study": sweep.study,
    }
