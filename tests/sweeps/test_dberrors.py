"""Database failures: transient ones waited out, permanent ones one line; a real PostgreSQL restart mid-sweep and
a full disk under a SQLite study, end to end."""

import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import TOY_SIZE

from lorainit.sweeps import dberrors
from lorainit.sweeps.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")
TOY = [
    "--widths",
    "16,32",
    *TOY_SIZE,
    "--device",
    "cpu",
    "--no-progress",
    "--lrs",
    "1e-3:1e-1:4",
    "--seeds",
    "2",
]


def wrapped(cause: Exception) -> Exception:
    """An error as Optuna raises it: its own message, the database's in the chain."""
    import optuna

    try:
        try:
            raise cause
        except Exception as e:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens "
                "due to invalid data in the commit, e.g. exceeding max length."
            ) from e
    except Exception as outer:
        return outer


def test_classify_reads_the_cause_not_optunas_message():
    import sqlalchemy

    full = wrapped(sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full")))
    gone = wrapped(
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    )
    assert dberrors.classify(full) == ("permanent", "(builtins.Exception) database or disk is full")
    assert dberrors.classify(gone)[0] == "transient"
    assert dberrors.classify(ValueError("exists with a different setup"))[0] is None


class Flaky:
    shown, patience = "sqlite:///x.db", 2.0

    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0

    @dberrors.retrying
    def work(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_transient_errors_are_retried_then_given_up_in_one_line_and_permanent_ones_at_once(capsys):
    blip = Exception("the database system is starting up")
    f = Flaky([blip, blip])
    assert f.work() == "done" and f.calls == 3
    assert "retrying for up to 2 s" in capsys.readouterr().err
    with pytest.raises(dberrors.DatabaseError, match="lost the study's database sqlite:///x.db for 2 s"):
        Flaky([blip] * 100).work()
    stuck = Flaky([Exception("disk I/O error")])
    with pytest.raises(dberrors.DatabaseError, match="failed: disk I/O error; nothing finished is lost"):
        stuck.work()
    assert stuck.calls == 1
    with pytest.raises(KeyError):
        Flaky([KeyError("not a database error")]).work()


def sweep(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lorainit", "sweep", *TOY, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finished(url, study="sweep"):
    s = Store(url, study)
    s.load()
    return Counter(t.user_attrs["point"] for t in s.study.get_trials() if t.state.name in ("COMPLETE", "PRUNED"))


@pytest.mark.slow
def test_a_worker_survives_a_postgresql_restart_mid_sweep(tmp_path, postgres):
    study = f"restart{os.getpid()}"
    p = sweep("--steps", "400", "--batch", "1", "--storage", postgres.url, "--study", study, "--out", str(tmp_path))

    def done() -> int:
        try:
            return len(finished(postgres.url, study))
        except ValueError:  # the study is not there yet
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and done() < 3:  # down once some points are finished and more are to come
        time.sleep(0.2)
    postgres.stop()
    time.sleep(5)  # down for 5 s while the worker trains and wants to record
    postgres.start()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "retrying for up to" in err and "32/32 points finished" in out
    counts = finished(postgres.url, study)
    assert len(counts) == 32 and set(counts.values()) == {1}


@pytest.mark.slow
def test_a_worker_started_while_its_studys_server_restarts_waits_for_it_and_a_new_study_does_not(tmp_path, postgres):
    study = f"rejoin{os.getpid()}"
    first = sweep("--steps", "20", "--storage", postgres.url, "--study", study, "--out", str(tmp_path / "a"))
    assert first.communicate(timeout=300)[0] and first.returncode == 0  # sweep.json names the study from now on
    postgres.stop()
    try:
        t0 = time.monotonic()
        new = sweep("--steps", "20", "--storage", postgres.url, "--study", study + "x", "--out", str(tmp_path / "b"))
        _, err = new.communicate(timeout=300)
        assert new.returncode != 0 and "cannot open storage" in err and "check the URL" in err, err[-3000:]
        assert time.monotonic() - t0 < 60  # at once, not after --db-patience's 120 s (a start takes ~10 s here)
        more = sweep(
            "--steps", "20", "--seeds", "3", "--storage", postgres.url, "--study", study, "--out", str(tmp_path / "a")
        )  # fmt: skip
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(more.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("retrying for up to" in x for x in lines):
            assert more.poll() is None, "".join(lines)[-3000:]  # waiting for the server, not stopped
            time.sleep(0.2)
        assert any("retrying for up to" in x for x in lines)
    finally:
        postgres.start()
    out = more.stdout.read()
    assert more.wait(timeout=300) == 0, "".join(lines)[-3000:]
    assert "48/48 points finished" in out
    assert len(finished(postgres.url, study)) == 48


@pytest.mark.slow
def test_a_full_disk_under_a_sqlite_study_is_one_line_and_loses_nothing(tmp_path):
    out = tmp_path / "sw"
    first = sweep("--steps", "20", "--out", str(out))
    assert first.communicate(timeout=300)[0] and first.returncode == 0
    size = (out / "study.db").stat().st_size

    def small_files():  # the database cannot grow: writes past its size fail as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    more = sweep("--steps", "20", "--seeds", "6", "--out", str(out), preexec_fn=small_files)
    _, err = more.communicate(timeout=300)
    assert more.returncode == 2 and len(err.strip().splitlines()) == 1, err[-3000:]
    assert "the study's database" in err and "nothing finished is lost" in err
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    assert len(finished(f"sqlite:///{out / 'study.db'}")) == 32  # the first run's points, all there
