"""Every GPU of a host on one sweep: one worker process per GPU, each pinned to its device, one progress bar.

``lorainit sweep --gpus all|N|0,2`` starts the same sweep command once per chosen GPU with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone; the workers share the study (its claiming lock makes that
safe, as for workers started by hand), so points are spread over the GPUs as they free up (a sweep with fewer
queued points than GPUs x --batch is shared: ``fair_batch``, which each worker applies), and the study and its
report are those of a one-GPU sweep. This process only watches: it shows the study's progress and waits for the
workers. The workers start first, from the command's raw flags (``early``), before this process imports torch,
checks the flags and opens the study: their start-up, seconds of imports, overlaps all of that. Flags that do not
check out stop them again, leaving no trace (``Started.discard``). Several hosts: the same command on each, with
one ``--storage postgresql://...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .. import io


def visible() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` where set, else every GPU torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def counted() -> list[str] | None:
    """What ``visible`` returns, without importing torch (seconds): ``CUDA_VISIBLE_DEVICES`` where set, else one id
    per GPU nvidia-smi lists; None where it cannot tell (no nvidia-smi, or it failed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return visible()
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [str(i) for i in range(len(r.stdout.split()))] if r.returncode == 0 else None


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


def workers_for(spec: str, devices: list[str]) -> list[str]:
    """The GPUs that get a worker process each for --gpus ``spec`` (``resolve``): none where this process runs the
    sweep itself (no GPU, or the one GPU it sees)."""
    ids = resolve(spec, devices)
    return ids if len(ids) > 1 or (ids and ids != devices) else []


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


def pinned_argv(argv: list[str], gpu: str) -> list[str]:
    """``argv`` of ``lorainit sweep`` for the worker of one GPU: its own --gpus, and no progress bar."""
    return [*_without(argv, "--gpus", ("--progress", "--no-progress")), "--gpus", gpu, "--no-progress"]


def fair_batch(batch: int, queued: int, workers: int) -> int:
    """Points a worker claims at a time: ``batch``, or fewer where the sweep's queued points would not give every
    worker some (8 points on 2 GPUs at --batch 8: 4 each, not 8 on one GPU while the other waits)."""
    return max(1, min(batch, -(-queued // workers)))


WORKER = "LORAINIT_SWEEP_WORKER"  # set in a worker's environment: it exits without the interpreter's teardown
WORKERS = "LORAINIT_SWEEP_WORKERS"  # and how many workers its command started (for fair_batch)


def workers_started() -> int:
    """How many workers this worker's sweep command started (0: this process was not started as one)."""
    return int(os.environ.get(WORKERS) or 0)


@dataclass
class Started:
    """Workers started before their command checked its flags: ``keep`` once it has (their logs become
    workers/gpu<ID>.log), else ``discard`` (stopped, and their logs and every folder starting them made removed)."""

    ids: list[str]
    procs: list[subprocess.Popen]
    logs: Path
    made: list[Path]  # folders made to hold the logs, outermost first
    kept: bool = False

    def keep(self) -> None:
        for gpu in self.ids:
            os.replace(self.logs / f"gpu{gpu}.log.starting", self.logs / f"gpu{gpu}.log")
        self.kept = True

    def discard(self) -> None:
        if self.kept:
            return
        stop(self.procs)
        for gpu in self.ids:
            (self.logs / f"gpu{gpu}.log.starting").unlink(missing_ok=True)
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:  # (something else is in it: a worker got as far as the study)
                break


THREAD_VARS = ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")  # torch's intra-op pool; inductor's compile workers


def thread_env(workers: int, environ=None, cpus: int | None = None) -> dict[str, str]:
    """Each of ``workers`` worker processes' share of this host's CPU threads, for every variable of ``THREAD_VARS``
    the user has not set: the cores this process may use (``cpus``) over the workers, at least 1. Left alone, each
    worker would size its pools to the whole host (torch's default), N of them on N times the cores, as torchrun
    avoids by setting OMP_NUM_THREADS for its processes."""
    environ = os.environ if environ is None else environ
    cpus = io.cores() if cpus is None else cpus
    share = str(max(1, cpus // max(1, workers)))
    return {v: share for v in THREAD_VARS if v not in environ}


def start(argv: list[str], gpus: list[str], logs: Path) -> Started:
    """Start one ``lorainit sweep`` worker per GPU (``argv``: this sweep's flags), its output to
    ``logs``/gpu<ID>.log.starting until ``Started.keep``. A worker's results are in the study and its run folders when
    it says "done", so it leaves with ``os._exit`` (``__main__``): tearing down torch, a CUDA context and a model
    took seconds every sweep waited for. Each worker gets its share of the host's threads (``thread_env``)."""
    made, p = [], logs
    while not p.exists():
        made.insert(0, p)
        p = p.parent
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for gpu in gpus:
        env = {**os.environ, **thread_env(len(gpus)), "CUDA_VISIBLE_DEVICES": gpu, WORKER: gpu, WORKERS: str(len(gpus))}
        with open(logs / f"gpu{gpu}.log.starting", "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "lorainit", "sweep", *pinned_argv(argv, gpu)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return Started(gpus, procs, logs, made)


def early(argv: list[str]) -> Started | None:
    """The workers of ``lorainit sweep ARGV`` started from its raw flags, before the command imports torch and checks
    them; None where it runs none (one visible GPU, --gpus none, --help) or cannot tell yet (no nvidia-smi, a --gpus
    that ``resolve`` refuses): its usual path then decides, and says what is wrong."""
    if "-h" in argv or "--help" in argv:
        return None
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for flag, default in (("--gpus", "all"), ("--experiment", "toy"), ("--out", "")):
        pre.add_argument(flag, default=default)
    try:
        ns = pre.parse_known_args(argv)[0]
    except (argparse.ArgumentError, SystemExit):
        return None
    devices = counted()
    if devices is None:
        return None
    try:
        ids = workers_for(ns.gpus, devices)
    except ValueError:
        return None
    if not ids:
        return None
    out = Path(ns.out) if ns.out else Path("runs") / f"sweep-{ns.experiment}"
    return start(argv, ids, out / "workers")


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
