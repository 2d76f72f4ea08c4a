"""Who is alive (sweeps.liveness): a pid with its start time names one process; a dead pid is dead."""

import os
import subprocess
import sys

from lorainit.sweeps import liveness


def test_a_process_is_its_pid_and_start_time():
    me = liveness.process_start(os.getpid())
    assert me is not None and me == liveness.process_start(os.getpid()) and liveness.pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert liveness.pid_alive(child.pid) and liveness.process_start(child.pid) >= me
    finally:
        child.kill()
        child.wait()
    assert not liveness.pid_alive(child.pid) and liveness.process_start(child.pid) is None


def test_host_id_names_the_machine_and_its_boot():
    host = liveness.host_id()
    assert host.startswith(f"{os.uname().nodename}/") and host == liveness.host_id()


def test_process_age_counts_from_the_process_start():
    """A fresh interpreter that sleeps 1.5 s before asking is at least that old, and not much older."""
    code = "import time; time.sleep(1.5); from lorainit.sweeps import liveness; print(liveness.process_age())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1.5 <= age < 60
    assert liveness.process_age() >= age - 0.5  # this test process started before the child
