"""Every GPU of a host on one sweep: one worker process per GPU, each pinned to its device, one progress bar.

``lorainit sweep --gpus all|N|0,2`` starts the same sweep command once per chosen GPU with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone; the workers share the study (its claiming lock makes that
safe, as for workers started by hand), so points are spread over the GPUs as they free up (a sweep with fewer
queued points than GPUs x --batch is shared: ``fair_batch``), and the study and its report are those of a
one-GPU sweep. This process only watches: it shows the study's progress and
waits for the workers. A new sweep's workers start before this process creates its study (their start-up, seconds
of imports, overlaps it; the study's lock orders the creation). Several hosts: the same command on each, with one ``--storage postgresql://...``.
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


WORKER = "LORAINIT_SWEEP_WORKER"  # set in a worker's environment: it exits without the interpreter's teardown


def start(argv: list[str], gpus: list[str], logs: Path, *, batch: int | None = None) -> list[subprocess.Popen]:
    """Start one ``lorainit sweep`` worker per GPU (``argv``: this sweep's flags; ``batch``: their --batch where
    given), its output to ``logs``/gpu<ID>.log. A worker's results are in the study and its run folders when it
    says "done", so it leaves with ``os._exit`` (``__main__``): tearing down torch, a CUDA context and a model
    took seconds every sweep waited for."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, WORKER: gpu}
        with open(logs / f"gpu{gpu}.log", "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "lorainit", "sweep", *pinned_argv(argv, gpu, batch)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Ctrl-C to every worker still running, and wait for them (they resume where they were when the command runs
    again)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait()


def watch(
    procs: list[subprocess.Popen],
    gpus: list[str],
    logs: Path,
    progress_of,
    *,
    progress: bool = True,
    poll: float = 0.5,
) -> list[int]:
    """Show the study's progress (``progress_of()`` -> (done, running, total)) until every worker has exited; each
    exit is added to its log with the time it was seen. Returns their exit codes; Ctrl-C stops them."""
    done, _, total = progress_of()
    bar = tqdm(total=total, initial=done, desc=f"sweep on {len(gpus)} GPUs", unit="trial", disable=not progress)
    seen: set[int] = set()
    try:
        while len(seen) < len(procs):
            time.sleep(poll)
            for i, p in enumerate(procs):
                if i not in seen and p.poll() is not None:
                    seen.add(i)
                    with open(logs / f"gpu{gpus[i]}.log", "a") as log:
                        log.write(f"{stamp()} exited with {p.returncode} (seen by the sweep command)\n")
            done, running, _ = progress_of()
            bar.n = done
            bar.set_postfix(running=running, workers=len(procs) - len(seen))
            bar.refresh()
    except BaseException:
        stop(procs)
        raise
    finally:
        bar.close()
    return [p.returncode for p in procs]


def stamp() -> str:
    """The wall-clock time of a timeline line, to the millisecond."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
