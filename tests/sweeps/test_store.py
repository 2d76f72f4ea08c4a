"""The study store on real SQLite files and a real PostgreSQL server: queueing, claims, stale trials, refusals."""

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import optuna
import pytest

from lorainit.sweeps.grid import Grid, point_key
from lorainit.sweeps.liveness import Heartbeat
from lorainit.sweeps.store import Store

GRID = Grid(
    "toy",
    {"width": [8, 16], "seed": [0, 1], "init": ["init_a", "init_b"], "lr": [0.1, 0.01]},
    {"steps": 3},
    "final loss",
    "minimize",
)


def sqlite(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_open_queues_every_point_once_and_reopen_adds_nothing(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    s2 = Store(sqlite(tmp_path), "s")
    s2.open(GRID)
    trials = s2.study.get_trials()
    assert len(trials) == 16 and all(t.state.name == "WAITING" for t in trials)
    assert sorted(t.user_attrs["point"] for t in trials) == sorted(point_key(p) for p in GRID.points())


def test_claims_share_a_batch_key_and_finish_records_values_and_divergence(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    claims = s.claim(10, lambda p: p["width"])
    assert len(claims) == 8 and {c.point["width"] for c in claims} == {8}
    assert s.finish(claims[0], 0.5, {"test": 0.6})
    assert s.finish(claims[1], None, {"diverged_step": 7, "reason": "loss exploded"})
    recs = {r["number"]: r for r in s.records()}
    assert recs[claims[0].number]["state"] == "COMPLETE" and recs[claims[0].number]["value"] == 0.5
    assert recs[claims[0].number]["test"] == 0.6
    r1 = recs[claims[1].number]
    assert (r1["state"], r1["diverged_step"], r1["reason"]) == ("PRUNED", 7, "loss exploded")
    trial = s.study.get_trials()[claims[0].number]
    assert trial.params == claims[0].point  # visible to Optuna's own tools
    assert s.progress() == (2, 6, 16)


def test_signature_mismatch_is_refused_and_the_file_untouched(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    db = tmp_path / "study.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    other = Grid("toy", {**GRID.dims, "lr": [0.1, 0.02]}, {"steps": 4}, "final loss", "minimize")
    with pytest.raises(
        ValueError, match=r"exists with a different setup \(config.steps: 3 there, 4 now\): a study grows"
    ):
        Store(sqlite(tmp_path), "s").open(other)
    renamed = Grid(
        "toy", {"width": [8], "seed": [0], "init": ["init_a"], "rate": [0.1]}, {"steps": 3}, "final loss", "minimize"
    )
    with pytest.raises(ValueError, match=r"dimensions: width, seed, init, lr there, width, seed, init, rate now"):
        Store(sqlite(tmp_path), "s").open(renamed)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_study_grows_by_new_values_and_keeps_its_finished_points(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    claims = s.claim(16, lambda p: 0)
    for c in claims:
        assert s.finish(c, 1.0, {})
    grown = Grid(
        "toy", {**GRID.dims, "lr": [0.001, 0.1], "init": ["init_a", "gaussian"]}, {"steps": 3}, "final loss", "minimize"
    )
    s2 = Store(sqlite(tmp_path), "s")
    s2.open(grown)
    assert s2.grid.dims["lr"] == [0.1, 0.01, 0.001] and s2.grid.dims["init"] == ["init_a", "init_b", "gaussian"]
    done, _, total = s2.progress()
    assert (done, total) == (16, 2 * 2 * 3 * 3)
    new = s2.claim(100, lambda p: 0)
    assert len(new) == total - 16 and all(c.point["lr"] == 0.001 or c.point["init"] == "gaussian" for c in new)
    assert all(s2.finish(c, 2.0, {}) for c in new)
    assert s2.progress()[0] == total and len([r for r in s2.records() if r["state"] == "COMPLETE"]) == total


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_trials_of_a_dead_worker_on_this_host_are_failed_and_requeued(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    claims = s.claim(3, lambda p: p["width"])
    for c in claims:  # pretend another process held them and died
        s.storage.set_trial_user_attr(c.trial_id, "worker", {"host": s.host, "pid": _dead_pid()})
    again = Store(sqlite(tmp_path), "s")
    again.open(GRID)
    trials = again.study.get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 3 and all("is gone" in t.user_attrs["failure"] for t in failed)
    waiting = {t.user_attrs["point"] for t in trials if t.state.name == "WAITING"}
    assert waiting == {point_key(p) for p in GRID.points()}  # the three points are queued again


def test_live_worker_on_this_host_keeps_its_trials(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    s.claim(2, lambda p: p["width"])  # owned by this (live) process
    again = Store(sqlite(tmp_path), "s")
    again.open(GRID)
    assert sum(t.state.name == "RUNNING" for t in again.study.get_trials()) == 2


def test_other_host_goes_stale_after_the_grace_period_and_heartbeats_prevent_it(tmp_path):
    # (margins of seconds: with a grace of 0.5 s the beating trial went stale once on a busy 2-core host)
    s = Store(sqlite(tmp_path), "s", heartbeat=0.1, grace=2.0)
    s.open(GRID)
    beating, silent = s.claim(1, lambda p: p["width"]), s.claim(1, lambda p: p["width"])
    for c in beating + silent:
        s.storage.set_trial_user_attr(c.trial_id, "worker", {"host": "elsewhere/1", "pid": 1})
    with Heartbeat(s, beating, 0.1):
        time.sleep(3.0)
        s.claim(0, lambda p: p["width"])  # runs the repair under the lock
    states = {t.number: t.state.name for t in s.study.get_trials()}
    assert states[beating[0].number] == "RUNNING" and states[silent[0].number] == "FAIL"


def test_a_finished_point_is_never_claimed_again(tmp_path):
    s = Store(sqlite(tmp_path), "s")
    s.open(GRID)
    c = s.claim(1, lambda p: p["width"])[0]
    assert s.finish(c, 1.0, {})
    s.study.enqueue_trial(c.point, user_attrs={"point": point_key(c.point)})  # a stray duplicate in the queue
    got = []
    while claims := s.claim(16, lambda p: 0):
        got += claims
    assert point_key(c.point) not in {point_key(x.point) for x in got} and len(got) == 15
    dup = [t for t in s.study.get_trials() if t.user_attrs.get("failure") == "duplicate of a finished point"]
    assert len(dup) == 1


def _claim_all(url, out, barrier):
    s = Store(url, "race")
    s.open(GRID)
    barrier.wait(timeout=120)
    mine = []
    while claims := s.claim(1, lambda p: 0):
        mine += [c.number for c in claims]
        for c in claims:
            s.finish(c, 0.0, {})
    with open(out, "w") as f:
        json.dump(mine, f)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_claimers_never_share_a_trial(tmp_path, backend, request):
    url = sqlite(tmp_path) if backend == "sqlite" else request.getfixturevalue("postgres_url")
    if backend == "postgresql":
        try:
            optuna.delete_study(study_name="race", storage=url.replace("postgresql://", "postgresql+psycopg://"))
        except KeyError:
            pass
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_claim_all, args=(url, tmp_path / f"w{i}.json", barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    numbers = [n for i in range(4) for n in json.loads((tmp_path / f"w{i}.json").read_text())]
    assert sorted(numbers) == list(range(16))  # every trial claimed by exactly one process


def test_a_live_worker_without_a_fresh_heartbeat_or_under_a_reused_pid_loses_its_trials(tmp_path):
    s = Store(sqlite(tmp_path), "s", grace=5.0)
    s.open(GRID)
    claims = s.claim(2, lambda p: 0)
    old = time.time() - 60
    s.storage.set_trial_user_attr(claims[0].trial_id, "heartbeat", old)  # this very process, but silent for a minute
    reused = {"host": s.host, "pid": os.getpid(), "start": -1}  # this pid, but another process's start time
    s.storage.set_trial_user_attr(claims[1].trial_id, "worker", reused)
    s2 = Store(sqlite(tmp_path), "s", grace=5.0)
    s2.open(GRID)
    failed = {t._trial_id: t.user_attrs.get("failure") for t in s2.study.get_trials() if t.state.name == "FAIL"}
    assert "no heartbeat for 60 s" in failed[claims[0].trial_id]
    assert "the pid now names another process" in failed[claims[1].trial_id]


def test_a_half_made_study_is_adopted_and_points_queued_twice_are_dropped(tmp_path):
    """A worker that died (or lost its lock) after creating the study, before naming its grid and queueing: the next
    worker adopts it; a point two workers queued both stays queued once."""
    url = sqlite(tmp_path)
    optuna.create_study(study_name="s", storage=url)  # created, never named
    s = Store(url, "s")
    s.open(GRID)
    assert s.existing() == GRID.signature() and s.progress() == (0, 0, 16)
    first = next(p for p in GRID.points())
    s.study.enqueue_trial(first, user_attrs={"point": point_key(first)})  # the same point queued again
    s2 = Store(url, "s")
    s2.open(GRID)
    waiting = [t for t in s2.study.get_trials() if t.state.name == "WAITING"]
    assert len(waiting) == 16 and len({t.user_attrs["point"] for t in waiting}) == 16
    foreign = "f"
    optuna.create_study(study_name=foreign, storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError, match="exists with a different setup"):
        Store(url, foreign).open(GRID)  # somebody else's study: refused, not adopted
