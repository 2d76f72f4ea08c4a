"""tools/fault_inject.py, one repetition of each fault: SIGKILLs, database restarts, a stopped worker (the committed run
does many)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # kills and restarts worker processes

ROOT = Path(__file__).resolve().parents[1]


def test_random_sigkills_leave_a_complete_study_with_each_point_once(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "fault_inject.py"),
            "--reps",
            "1",
            "--max-kills",
            "2",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "f.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "f.json").read_text())["repetitions"]["kill"][0]
    assert rep["ok"] and rep["finished_twice"] == 0 and rep["missing"] == 0 and rep["finished_points"] == 32
    assert len(rep["kills_after_s"]) >= 1  # at least one kill landed before the worker finished


@pytest.mark.parametrize("scenario", ["pg-restart", "sigstop"])
def test_a_restarted_database_and_a_stopped_worker_leave_a_complete_study_with_the_uninterrupted_values(
    scenario, tmp_path
):
    """A real PostgreSQL server stopped for seconds mid-sweep (the worker rides it out), and a worker SIGSTOPped until
    another has finished the study (then continued: it records none of the trials it lost): each point once, values
    bitwise those of an uninterrupted sweep."""
    sys.path.insert(0, str(ROOT / "tools"))
    import pgserver

    if not pgserver.available():
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "fault_inject.py"),
            "--scenario",
            scenario,
            "--reps",
            "1",
            "--max-kills",
            "2",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "f.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "f.json").read_text())["repetitions"][scenario][0]
    assert rep["ok"] and rep["finished_twice"] == 0 and rep["missing"] == 0 and rep["finished_points"] == 32
    assert rep.get("server_down_s") or rep.get("stopped_after_s")  # the fault happened before the sweep was over
