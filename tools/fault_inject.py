"""Fault injection for sweeps: SIGKILL a worker at random moments, over and over, then check the study.

Each repetition runs a small toy sweep (SQLite, heartbeats every 50 ms so that the database is written
almost constantly) and kills the worker after a random delay, up to ``--max-kills`` times, restarting
it after each kill; then lets it finish. Checks after every repetition:
- every grid point finished exactly once (one COMPLETE or PRUNED trial), no point missing;
- SQLite's ``pragma integrity_check`` is ok;
- the values equal, bit for bit, those of an uninterrupted reference sweep of the same grid, and the
  same points diverged (the kills change which points train together in a batch; a point's arithmetic
  does not depend on its batch: tests/sweeps/test_runners.py);
- no temporary file is left in the sweep folder.
Writes a JSON summary (--out) with device, date and commit.

    python tools/fault_inject.py --reps 20 --out bench/results/fault_injection.json
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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--widths", "16,32", "--rank", "2", "--teacher-width", "40", "--n-train", "60", "--n-test", "20", "--device", "cpu",
        "--steps", "400", "--lrs", "1e-3,3e-3,1e-2,1e3", "--seeds", "2", "--heartbeat", "0.05", "--grace", "5", "--no-progress"]


def worker(out: Path, batch: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "lorainit", "sweep", *ARGS, "--batch", str(batch), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def values(out: Path) -> tuple[dict, Counter, int]:
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        rows = db.execute("""select t.trial_id, t.state, a.value_json, v.value from trials t
                             join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'point'
                             left join trial_values v on v.trial_id = t.trial_id""").fetchall()
    done = Counter(json.loads(p) for _, s, p, _ in rows if s in ("COMPLETE", "PRUNED"))
    vals = {json.loads(p): v for _, s, p, v in rows if s in ("COMPLETE", "PRUNED")}
    return vals, done, sum(s == "FAIL" for _, s, _, _ in rows)


def repetition(rng: random.Random, ref: dict, max_kills: int, tmp: Path) -> dict:
    out = tmp / f"rep{rng.randrange(10**9)}"
    kills, attempts = [], 0
    while True:
        attempts += 1
        p = worker(out, rng.choice([1, 2, 3, 5]))
        delay = rng.uniform(2.0, 7.0)  # the interpreter and torch take ~2-3 s to start
        try:
            p.wait(timeout=delay if len(kills) < max_kills else 600)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed: {p.stderr.read()[-2000:]}")
            break
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills.append(round(delay, 2))
    vals, done, failed = values(out)
    leftovers = [f.name for f in out.rglob("*") if f.name.endswith(".tmp") or f.name.startswith(".")]
    mismatched = [k for k, v in ref.items() if (v is None) != (vals.get(k) is None)
                  or (v is not None and vals[k] != v)]
    return {"kills_after_s": kills, "workers_started": attempts, "points": len(ref), "finished_points": len(done),
            "finished_twice": sum(c > 1 for c in done.values()), "missing": len(set(ref) - set(done)),
            "lost_attempts_failed": failed, "values_differing_from_uninterrupted": [[k, ref[k], vals.get(k)] for k in mismatched],
            "temporary_files_left": leftovers, "ok": len(done) == len(ref) and max(done.values()) == 1 and not mismatched
            and not leftovers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10, help="repetitions (default 10)")
    ap.add_argument("--max-kills", type=int, default=3, help="kills per repetition before it may finish (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON summary to write")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from lorainit import io

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = Path(tmp) / "reference"
        p = worker(ref_dir, 64)
        if p.wait() != 0:
            raise SystemExit(p.stderr.read())
        ref, _, _ = values(ref_dir)
        reps = []
        for i in range(args.reps):
            reps.append(repetition(rng, ref, args.max_kills, Path(tmp)))
            print(f"rep {i}: {json.dumps(reps[-1])}", flush=True)
    summary = {"provenance": io.provenance(), "reps": len(reps), "kills": sum(len(r["kills_after_s"]) for r in reps),
               "all_ok": all(r["ok"] for r in reps), "repetitions": reps, "grid": ARGS}
    if args.out:
        io.write_json(args.out, summary)
    print(f"{summary['reps']} repetitions, {summary['kills']} kills: {'all ok' if summary['all_ok'] else 'FAILURES'}")
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
