"""Every GPU of a host on one sweep: one worker process per GPU, each pinned to its device, one progress bar.

``lorainit sweep --gpus all|N|0,2`` starts the same sweep command once per chosen GPU with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone; the workers share the study (its claiming lock makes that
safe, as for workers started by hand), so points are spread over the GPUs as they free up (a sweep with fewer
queued points than GPUs x --batch is shared: ``fair_batch``), and the study and its report are those of a
one-GPU sweep. This process only watches: it shows the study's progress and
waits for the workers. Several hosts: the same command on each, with one ``--storage postgresql://...``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm


def visible() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` where set, else every GPU torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def resolve(spec: str, devices: list[str]) -> list[str]:
    """The GPUs to run workers on: 'all' (every one of ``devices``), 'none' or '0' (none: this process alone),
    N (the first N), or a comma-separated list of ids from ``devices``."""
    spec = spec.strip().lower()
    if spec in ("all", ""):
        return list(devices)
    if spec in ("none", "0"):
        return []
    if spec.isdigit():
        n = int(spec)
        if n > len(devices):
            raise ValueError(
                f"--gpus {n}: only {len(devices)} GPU{'s' * (len(devices) != 1)} visible "
                f"({', '.join(devices) or 'none'}); give at most {len(devices)} or 'all'"
            )
        return devices[:n]
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in ids if i not in devices]
    if unknown:
        raise ValueError(f"--gpus {spec}: no visible GPU {unknown[0]} (visible: {', '.join(devices) or 'none'})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {spec} names a GPU twice; give each once")
    return ids


def _without(argv: list[str], flag: str, drop: tuple[str, ...] = ()) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE`` and without the bare flags in ``drop``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(f"{flag}=") or a in drop:
            continue
        out.append(a)
    return out


def pinned_argv(argv: list[str], gpu: str, batch: int | None = None) -> list[str]:
    """``argv`` of ``lorainit sweep`` for the worker of one GPU: its own --gpus, no progress bar, and ``batch``
    (where given) as its --batch."""
    out = _without(argv, "--gpus", ("--progress", "--no-progress"))
    if batch is not None:
        out = [*_without(out, "--batch"), "--batch", str(batch)]
    return [*out, "--gpus", gpu, "--no-progress"]


def fair_batch(batch: int, queued: int, workers: int) -> int:
    """Points a worker claims at a time: ``batch``, or fewer where the sweep's queued points would not give every
    worker some (8 points on 2 GPUs at --batch 8: 4 each, not 8 on one GPU while the other waits)."""
    return max(1, min(batch, -(-queued // workers)))


def run_workers(
    argv: list[str],
    gpus: list[str],
    logs: Path,
    progress_of,
    *,
    batch: int | None = None,
    progress: bool = True,
    poll: float = 0.5,
) -> list[int]:
    """Start one ``lorainit sweep`` worker per GPU (``argv``: this sweep's flags; ``batch``: their --batch where
    given), show the study's progress (``progress_of()`` -> (done, running, total)) until they all exit, and return
    their exit codes. Their output goes to ``logs``/gpu<ID>.log. Ctrl-C stops them (they resume where they were
    when the command runs again)."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        log = open(logs / f"gpu{gpu}.log", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lorainit", "sweep", *pinned_argv(argv, gpu, batch)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    done, _, total = progress_of()
    bar = tqdm(total=total, initial=done, desc=f"sweep on {len(gpus)} GPUs", unit="trial", disable=not progress)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll)
            done, running, _ = progress_of()
            bar.n = done
            bar.set_postfix(running=running, workers=sum(p.poll() is None for p in procs))
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        bar.n = progress_of()[0]
        bar.close()
    return [p.returncode for p in procs]
