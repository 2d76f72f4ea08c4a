"""Sweeps end to end: batched trials equal the experiments' own runs, resume, many workers, SIGKILL."""

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import TOY_SIZE

from lorainit.experiments import mf, toy, toy_model
from lorainit.sweeps import worker
from lorainit.sweeps.store import Store

TOY = toy.ToyConfig(
    widths=(16, 32), rank=2, steps=8, teacher_width=40, n_train=60, n_test=20, log_every=4, device="cpu"
)
SRC = str(Path(__file__).resolve().parents[2] / "src")


def finished_per_point(url, study="sweep"):
    s = Store(url, study)
    s.load()
    trials = s.study.get_trials()
    return Counter(t.user_attrs["point"] for t in trials if t.state.name in ("COMPLETE", "PRUNED")), trials


def test_toy_sweep_equals_the_toy_study_runs(tmp_path, float64):
    sweep = worker.SweepConfig(lrs=(1e-3, 1e-2, 1e-1, 1e3), seeds=2, batch=5)  # batches cut across seeds and inits
    res = worker.run(sweep, TOY, tmp_path, progress=False)
    assert res["done"] == res["total"] == 2 * 2 * 2 * 4 and res["diverged"] == 8
    ref = {
        w: toy.train_width(
            dataclasses.replace(TOY, inits=("init_a", "init_b"), lrs=sweep.lrs, seeds=2, diverge_factor=1e4),
            w,
            toy_model.teacher_data(TOY),
            "cpu",
        )
        for w in TOY.widths
    }
    s = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    s.load()
    recs = s.records()
    assert len(recs) == 32
    for r in recs:
        run = next(
            x for x in ref[r["width"]]["runs"] if (x["seed"], x["init"], x["lr"]) == (r["seed"], r["init"], r["lr"])
        )
        if run["diverged_step"] is not None:
            assert (
                r["state"] == "PRUNED"
                and r["diverged_step"] == run["diverged_step"]
                and r["reason"] == run["diverged_reason"]
            )
        else:
            assert r["state"] == "COMPLETE"
            assert r["value"] == pytest.approx(run["train_loss"][-1], rel=1e-10)
            assert r["test"] == pytest.approx(run["test_loss"][-1], rel=1e-10)


def test_mf_sweep_equals_mf_runs(tmp_path):
    cfg = mf.MFConfig(steps=60, seeds=2, modes=("asymmetric",), preheat_steps=20)
    res = worker.run(
        worker.SweepConfig(experiment="mf", lrs=(0.1, 50.0), seeds=2, batch=64), cfg, tmp_path, progress=False
    )
    assert res["done"] == 16 and res["diverged"] == 8  # lr 50 explodes for every init
    ref = mf.run(dataclasses.replace(cfg, lr=0.1, preheat_sweep=()))
    s = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    s.load()
    for r in s.records():
        if r["lr"] == 0.1:
            expect = ref["curves"]["asymmetric"][r["init"]][r["seed"]][-1]
            assert r["state"] == "COMPLETE" and r["value"] == pytest.approx(expect, rel=1e-12)
        else:
            assert r["state"] == "PRUNED" and r["reason"] in ("loss exploded", "non-finite loss")


def test_resume_runs_only_what_is_left(tmp_path):
    sweep = worker.SweepConfig(lrs=(1e-2, 1e-1), seeds=1, batch=3, max_trials=3)
    first = worker.run(sweep, TOY, tmp_path, progress=False)
    assert (first["ran"], first["done"]) == (3, 3)
    rest = worker.run(dataclasses.replace(sweep, max_trials=0), TOY, tmp_path, progress=False)
    assert (rest["ran"], rest["done"], rest["total"]) == (5, 8, 8)
    again = worker.run(dataclasses.replace(sweep, max_trials=0), TOY, tmp_path, progress=False)
    assert again["ran"] == 0
    counts, trials = finished_per_point(f"sqlite:///{tmp_path / 'study.db'}")
    assert len(trials) == 8 and set(counts.values()) == {1}


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-m", "lorainit", "sweep", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


TOY_ARGS = [
    "--widths",
    "16,32",
    *TOY_SIZE,
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_worker_processes_share_one_study(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path / 'shared.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    study = f"two-{os.getpid()}-{time.time_ns()}"
    args = [
        *TOY_ARGS,
        "--steps",
        "150",
        "--lrs",
        "1e-3:1e-1:4",
        "--seeds",
        "2",
        "--batch",
        "2",
        "--storage",
        url,
        "--study",
        study,
    ]
    procs = [cli(*args, "--out", str(tmp_path / f"w{i}")) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [int(o[0].split("this worker ran ")[1].split()[0]) for o in outs]
    assert sum(ran) == 32 and min(ran) > 0, ran  # both workers took part; together each point once
    counts, trials = finished_per_point(url, study)
    assert len(counts) == 32 and set(counts.values()) == {1} and len(trials) == 32


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_completes_each_point_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = [*TOY_ARGS, "--steps", "600", "--lrs", "1e-3:1e-1:3", "--seeds", "1", "--batch", "1", "--out", str(tmp_path)]
    p = cli(*args)
    owned = (  # RUNNING trials whose worker has recorded itself: a kill before that record is the claim-time case
        "select count(*) from trials t join trial_user_attributes a on a.trial_id = t.trial_id"
        " where t.state = 'RUNNING' and a.key = 'worker'"
    )

    def ready() -> bool:  # a trial has finished and another runs under its owner's record
        if not (tmp_path / "study.db").exists():
            return False
        try:
            with sqlite3.connect(tmp_path / "study.db", timeout=2) as db:
                done = db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
                return done >= 1 and db.execute(owned).fetchone()[0] >= 1
        except sqlite3.OperationalError:  # locked by a write (perhaps the stopped worker's)
            return False

    deadline = time.time() + 120
    while time.time() < deadline:  # the worker is stopped while the state is read, so the kill lands in that state
        time.sleep(0.2)
        p.send_signal(signal.SIGSTOP)
        if ready():
            break
        p.send_signal(signal.SIGCONT)
    else:
        pytest.fail("the sweep never had a finished trial and an owned running one")
    p.send_signal(signal.SIGKILL)
    p.wait()
    again = cli(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    counts, trials = finished_per_point(url)
    assert len(counts) == 12 and set(counts.values()) == {1}
    lost = [t for t in trials if t.state.name == "FAIL"]
    assert len(lost) == 1 and "is gone" in lost[0].user_attrs["failure"]
    with sqlite3.connect(tmp_path / "study.db") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)


@pytest.mark.slow
def test_a_stopped_worker_loses_its_trials_to_a_live_one_on_the_same_host(tmp_path, postgres_url):
    """Issue 'Reliability', item 2: a SIGSTOPped worker's lease (heartbeat) expires; a second worker on the same host
    re-queues its trials and finishes the study; the stopped worker, resumed, finds its trials gone and exits cleanly.
    On PostgreSQL, where the server also ends a session a stopped worker left inside a transaction (its row locks
    would hold the others up); under SQLite a worker stopped in the middle of a write holds the whole file."""
    study = f"stopped{os.getpid()}"
    args = [
        *TOY_ARGS,
        "--steps",
        "300",
        "--lrs",
        "1e-3:1e-1:3",
        "--seeds",
        "1",
        "--batch",
        "1",
        "--heartbeat",
        "0.5",
        "--grace",
        "3",
        "--storage",
        postgres_url,
        "--study",
        study,
        "--out",
        str(tmp_path),
    ]
    first = cli(*args)

    def running(owned: bool = False) -> bool:
        """Whether the worker holds a trial (``owned``: and every trial it holds has its owner's record: a stop
        between a claim and that record leaves a trial lost for "no owner recorded", not for its heartbeat)."""
        try:
            s = Store(postgres_url, study)
            s.load()
            held = [t for t in s.study.get_trials() if t.state.name == "RUNNING"]
            return bool(held) and (not owned or all("worker" in t.user_attrs for t in held))
        except ValueError:  # not created yet
            return False

    deadline = time.time() + 120
    while time.time() < deadline:  # stop it while it holds a trial (its trials take a fraction of a second)
        while time.time() < deadline and not running():
            time.sleep(0.05)
        time.sleep(0.5)  # past the claim's few milliseconds under the study lock
        first.send_signal(signal.SIGSTOP)
        if running(owned=True):
            break
        first.send_signal(signal.SIGCONT)  # it was between trials or in a claim: let it go on, then stop it again
    started = time.time()
    second = cli(*args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "12/12 points finished" in out and time.time() - started < 120
    first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    counts, trials = finished_per_point(postgres_url, study)
    assert len(counts) == 12 and set(counts.values()) == {1}
    lost = [t for t in trials if t.state.name == "FAIL"]
    reasons = [t.user_attrs.get("failure") for t in lost]
    assert reasons and all("no heartbeat for" in r for r in reasons), reasons
