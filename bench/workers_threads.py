"""Benchmark (CPU): sweep workers side by side on one host, at torch's default threads vs a share of the host each.

The same toy sweep (32 points, --batch 2, SQLite) run by two workers at once, each a real ``lorainit sweep``
process, with OMP_NUM_THREADS unset (torch sizes every process's pool to the whole host) and set to cores / workers
(``sweeps.gpus.thread_env``, what ``--gpus`` now gives its workers); and by one worker alone, unset and at one
thread. The settings alternate, ``--repeats`` times each; wall time of the command(s) per setting. Why ``tests/conftest.py`` starts the
tests' processes at one thread, and what hand-started workers on one host should set.

    python bench/workers_threads.py --out bench/results/workers_threads_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lorainit import io  # noqa: E402
from lorainit.sweeps.gpus import THREAD_VARS, thread_env  # noqa: E402

TOY = ["--widths", "16,32", "--rank", "2", "--teacher-width", "40", "--n-train", "60", "--n-test", "20"]
ARGS = [*TOY, "--device", "cpu", "--no-progress", "--steps", "150", "--lrs", "1e-3:1e-1:4", "--seeds", "2"]


def sweep(workers: int, threads: int | None, folder: Path) -> float:
    """Seconds for ``workers`` processes of one new study to finish it (each exits 0), each at ``threads`` (None:
    torch's default)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS} | {"PYTHONPATH": str(ROOT / "src")}
    if threads is not None:
        env |= {v: str(threads) for v in THREAD_VARS}
    url = f"sqlite:///{folder / 'study.db'}"
    cmd = [sys.executable, "-m", "lorainit", "sweep", *ARGS, "--batch", "2", "--storage", url]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, "--out", str(folder / f"w{i}")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for i in range(workers)
    ]
    errs = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - t0
    for p, err in zip(procs, errs):
        if p.returncode:
            raise SystemExit(f"a worker failed (exit {p.returncode}): {err.decode()[-2000:]}")
    return seconds


def name(workers: int, threads: int | None) -> str:
    return f"{workers}_workers_" + ("default_threads" if threads is None else f"{threads}_threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    share = int(thread_env(2, {})["OMP_NUM_THREADS"])
    cases = [(2, None), (2, share), (1, None), (1, 1)]
    seconds = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, case in enumerate(cases if r % 2 == 0 else cases[::-1]):
                seconds[case].append(sweep(*case, Path(tmp) / f"r{r}c{i}"))
    res = {
        "benchmark": "workers_threads",
        "provenance": io.provenance(),
        "config": {"repeats": args.repeats, "points": 32, "batch": 2, "cpus": len(os.sched_getaffinity(0))},
        "share_of_two": share,
        "seconds": {name(*c): s for c, s in seconds.items()},
        "median_seconds": {name(*c): statistics.median(s) for c, s in seconds.items()},
    }
    m = res["median_seconds"]
    res["two_workers_default_over_share"] = m[name(2, None)] / m[name(2, share)]
    res["one_worker_default_over_one_thread"] = m[name(1, None)] / m[name(1, 1)]
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}, indent=1))
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
