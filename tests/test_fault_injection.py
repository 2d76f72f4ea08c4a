"""tools/fault_inject.py, one repetition with two SIGKILLs at random moments (the committed run does many)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # kills and restarts worker processes

ROOT = Path(__file__).resolve().parents[1]


def test_random_sigkills_leave_a_complete_study_with_each_point_once(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "fault_inject.py"), "--reps", "1", "--max-kills", "2",
                        "--seed", "3", "--out", str(tmp_path / "f.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "f.json").read_text())["repetitions"][0]
    assert rep["ok"] and rep["finished_twice"] == 0 and rep["missing"] == 0 and rep["finished_points"] == 32
    assert len(rep["kills_after_s"]) >= 1  # at least one kill landed before the worker finished
