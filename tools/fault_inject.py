"""Fault injection for sweeps: kill workers, restart the database, stop workers, over and over; then check the study.

Each repetition runs a small toy sweep (heartbeats every 50 ms, so the database is written almost constantly)
under one of three faults (--scenario):
- ``kill``: one worker on SQLite, SIGKILLed after a random delay up to ``--max-kills`` times and restarted
  after each kill (with another --batch), then left to finish;
- ``pg-restart``: one worker on PostgreSQL while the server is stopped (fast shutdown) for 1-5 s at random
  moments, up to ``--max-kills`` times: the worker must ride it out (``--db-patience``) and exit 0;
- ``sigstop``: two workers on PostgreSQL; one is SIGSTOPped mid-sweep and kept stopped until the other has
  finished the study (taking over the stopped worker's trials once their lease, ``--grace``, expired); then
  it is continued, and must exit 0 without recording the trials it lost.
Checks after every repetition:
- every grid point finished exactly once (one COMPLETE or PRUNED trial), no point missing;
- SQLite's ``pragma integrity_check`` is ok (kill);
- the values equal, bit for bit, those of an uninterrupted reference sweep of the same grid, and the
  same points diverged (the faults change which points train together in a batch; a point's arithmetic
  does not depend on its batch: tests/sweeps/test_runners.py);
- no temporary file is left in the sweep folder; every worker that was not killed exited 0.
Writes a JSON summary (--out) with device, date and commit.

    python tools/fault_inject.py --scenario all --reps 10 --out bench/results/fault_injection_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--widths",
    "16,32",
    "--rank",
    "2",
    "--teacher-width",
    "40",
    "--n-train",
    "60",
    "--n-test",
    "20",
    "--device",
    "cpu",
    "--steps",
    "400",
    "--lrs",
    "1e-3,3e-3,1e-2,1e3",
    "--seeds",
    "2",
    "--heartbeat",
    "0.05",
    "--grace",
    "5",
    "--no-progress",
]
SCENARIOS = ("kill", "pg-restart", "sigstop")


def worker(out: Path, batch: int, storage: str = "", study: str = "sweep") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    where = ["--storage", storage, "--study", study] if storage else []
    return subprocess.Popen(
        [sys.executable, "-m", "lorainit", "sweep", *ARGS, *where, "--batch", str(batch), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def values(url: str, study: str) -> tuple[dict, Counter, int]:
    """Each finished point's value, how often each point finished, and how many trials failed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    finished = [(t.user_attrs["point"], t.value) for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    return dict(finished), Counter(p for p, _ in finished), sum(t.state.name == "FAIL" for t in trials)


def check(ref: dict, out: Path, url: str, study: str) -> dict:
    if url.startswith("sqlite"):
        with sqlite3.connect(out / "study.db") as db:
            assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    vals, done, failed = values(url, study)
    leftovers = [f.name for f in out.rglob("*") if f.name.endswith(".tmp") or f.name.startswith(".")]
    mismatched = [k for k, v in ref.items() if (v is None) != (vals.get(k) is None) or (v is not None and vals[k] != v)]
    return {
        "points": len(ref),
        "finished_points": len(done),
        "finished_twice": sum(c > 1 for c in done.values()),
        "missing": len(set(ref) - set(done)),
        "lost_attempts_failed": failed,
        "values_differing_from_uninterrupted": [[k, ref[k], vals.get(k)] for k in mismatched],
        "temporary_files_left": leftovers,
        "ok": len(done) == len(ref) and max(done.values()) == 1 and not mismatched and not leftovers,
    }


def _exit(p: subprocess.Popen, timeout: float = 600) -> None:
    if p.wait(timeout=timeout) != 0:
        raise RuntimeError(f"worker failed (exit {p.returncode}): {p.stderr.read()[-2000:]}")


def _opened(p: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Wait until the worker has opened its study (it writes sweep.json right after) or exited: a fault injected
    before that would hit the interpreter's start and the storage's first opening (2 s on one host, more on others),
    not a running sweep."""
    deadline = time.time() + timeout
    while not (out / "sweep.json").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)


def kill_rep(rng: random.Random, ref: dict, max_kills: int, tmp: Path, server=None) -> dict:
    out = tmp / f"rep{rng.randrange(10**9)}"
    kills, attempts = [], 0
    while True:
        attempts += 1
        p = worker(out, rng.choice([1, 2, 3, 5]))
        delay = rng.uniform(2.0, 7.0)  # the interpreter and torch take ~2-3 s to start
        try:
            _exit(p, delay if len(kills) < max_kills else 600)
            break
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills.append(round(delay, 2))
    return {
        "kills_after_s": kills,
        "workers_started": attempts,
        **check(ref, out, f"sqlite:///{out / 'study.db'}", "sweep"),
    }


def restart_rep(rng: random.Random, ref: dict, max_kills: int, tmp: Path, server=None) -> dict:
    out, study = tmp / f"rep{rng.randrange(10**9)}", f"rep{rng.randrange(10**9)}"
    p = worker(out, rng.choice([1, 2, 3, 5]), server.url, study)
    restarts = []
    _opened(p, out)
    for _ in range(max_kills):
        time.sleep(rng.uniform(0.5, 2.5))
        if p.poll() is not None:
            break
        down = rng.uniform(1.0, 5.0)
        server.stop()
        time.sleep(down)
        server.start()
        restarts.append(round(down, 2))
    _exit(p)
    return {"server_down_s": restarts, **check(ref, out, server.url, study)}


def sigstop_rep(rng: random.Random, ref: dict, max_kills: int, tmp: Path, server=None) -> dict:
    out, study = tmp / f"rep{rng.randrange(10**9)}", f"rep{rng.randrange(10**9)}"
    stopped = worker(out, rng.choice([2, 3, 5]), server.url, study)
    _opened(stopped, out)  # the first worker creates the study
    other = worker(out, rng.choice([1, 2, 3]), server.url, study)
    delay = rng.uniform(2.0, 5.0)
    time.sleep(delay)
    was_running = stopped.poll() is None
    if was_running:
        stopped.send_signal(signal.SIGSTOP)
    try:
        _exit(other)  # it must finish the study, the stopped worker's trials included
    finally:
        if was_running:
            stopped.send_signal(signal.SIGCONT)
    _exit(stopped)  # continued, it finds its trials lost and the study finished
    return {"stopped_after_s": round(delay, 2) if was_running else None, **check(ref, out, server.url, study)}


REPS = {"kill": kill_rep, "pg-restart": restart_rep, "sigstop": sigstop_rep}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="kill", help="which fault (default kill)")
    ap.add_argument("--reps", type=int, default=10, help="repetitions per scenario (default 10)")
    ap.add_argument("--max-kills", type=int, default=3, help="kills or server restarts per repetition (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON summary to write")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tools"))
    import pgserver

    from lorainit import io

    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    if any(s != "kill" for s in scenarios) and not pgserver.available():
        raise SystemExit(
            "fault_inject: the PostgreSQL scenarios need Debian's postgresql package (apt-get install postgresql)"
        )
    rng = random.Random(args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = Path(tmp) / "reference"
        _exit(worker(ref_dir, 64))
        ref, _, _ = values(f"sqlite:///{ref_dir / 'study.db'}", "sweep")
        server = pgserver.Server() if any(s != "kill" for s in scenarios) else None
        try:
            for scenario in scenarios:
                reps = []
                for i in range(args.reps):
                    reps.append(REPS[scenario](rng, ref, args.max_kills, Path(tmp), server))
                    print(f"{scenario} rep {i}: {json.dumps(reps[-1])}", flush=True)
                results[scenario] = reps
        finally:
            if server is not None:
                server.close()
    events = {
        s: sum(
            len(r.get("kills_after_s", r.get("server_down_s", []))) + (r.get("stopped_after_s") is not None)
            for r in reps
        )
        for s, reps in results.items()
    }
    summary = {
        "provenance": io.provenance(),
        "reps": {s: len(r) for s, r in results.items()},
        "faults": events,
        "all_ok": all(r["ok"] for reps in results.values() for r in reps),
        "repetitions": results,
        "grid": ARGS,
    }
    if args.out:
        io.write_json(args.out, summary)
    print(
        f"{', '.join(f'{s}: {len(r)} repetitions, {events[s]} faults' for s, r in results.items())}: "
        f"{'all ok' if summary['all_ok'] else 'FAILURES'}"
    )
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
