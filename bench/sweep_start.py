"""Benchmark: how soon ``lorainit sweep --gpus`` starts its workers, and what learning a task's metric costs.

1. The same ``lorainit sweep`` command on two fake GPUs (``CUDA_VISIBLE_DEVICES=0,1``, ``--gpus 1``: one pinned
   worker), run ``--repeats`` times in alternating order two ways: as it is (``gpus.early`` starts the worker from the
   raw flags, before the command imports torch and checks them), and with ``gpus.early`` patched out (the worker
   starts once the command has imported torch and checked the flags: where it started before 890759b). Each run
   records the seconds from its interpreter's start to its first worker's ``Popen``, then exits without starting
   it: no worker runs.
2. In this process: ``data.load(task).metric`` (what a sweep's grid did before 501584b, in the command and in each
   worker) against ``data.metric_of(task)``.

    python bench/sweep_start.py --out bench/results/sweep_start_cpu.json
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
from lorainit import data, io  # noqa: E402

PROBE = """
import json, os, runpy, subprocess, sys
from lorainit.sweeps import gpus
from lorainit.sweeps.liveness import process_age
if sys.argv[1] == "late":
    gpus.early = lambda argv: None
def first_worker(*a, **k):
    print(json.dumps({"spawn_s": process_age()}), flush=True)
    os._exit(0)
subprocess.Popen = first_worker
sys.argv = ["lorainit", *sys.argv[2:]]
runpy.run_module("lorainit", run_name="__main__")
"""


def spawn_seconds(way: str, argv: list[str]) -> float:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", PROBE, way, *argv], env=env, capture_output=True, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"the {way} run printed no spawn time (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(line)["spawn_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--task", default="wiki")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep_start."))
    sweep = ["sweep", "--experiment", "finetune", "--model", "smollm2-135m", "--task", args.task]
    sweep += ["--inits", "init_a,init_b", "--lrs", "1e-4:1e-2:8", "--steps", "200", "--no-progress", "--gpus", "1"]
    times: dict[str, list[float]] = {"early": [], "late": []}
    for r in range(args.repeats):
        for way in ("early", "late") if r % 2 == 0 else ("late", "early"):
            times[way].append(spawn_seconds(way, [*sweep, "--out", str(work / f"{way}{r}")]))
    data.load(args.task)  # (extracted and cached once, as on any machine after its first run)
    t0 = time.perf_counter()
    loaded = data.load(args.task).metric
    t1 = time.perf_counter()
    known = data.metric_of(args.task)
    t2 = time.perf_counter()
    assert loaded == known
    res = {
        "benchmark": "sweep_start",
        "provenance": io.provenance(),
        "config": vars(args) | {"out": str(args.out), "command": sweep},
        "spawn_s_early": times["early"],
        "spawn_s_late": times["late"],
        "median_spawn_s_early": statistics.median(times["early"]),
        "median_spawn_s_late": statistics.median(times["late"]),
        "metric_by_loading_s": t1 - t0,
        "metric_of_s": t2 - t1,
    }
    print(json.dumps({k: v for k, v in res.items() if k not in ("provenance", "config")}, indent=1))
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
