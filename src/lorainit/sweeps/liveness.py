"""Who holds a sweep trial, and whether it is still alive: host identity, pid checks and heartbeats.

A worker is identified by hostname and boot id (two machines, or one machine rebooted, never share an
identity), its pid and its process start time (a reused pid is another process). ``Heartbeat`` refreshes the
``heartbeat`` attribute of the trials a worker holds from a thread: a lease that every worker judges, on its
own host or not, so that a stopped, hung or vanished worker's trials are re-queued once it expires (``store.py``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path


def host_id() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), None where unknown: with the
    pid, it names one process, so a pid the system gave to a new process after the worker died is told apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name: state is field 3, starttime 22


def process_age() -> float | None:
    """Seconds since this process started (its start from /proc, the boot time from /proc/stat: whole seconds, so
    up to a second more), None where unknown: what a worker's interpreter start and imports cost before its work."""
    start = process_start(os.getpid())
    try:
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return None if start is None else time.time() - (boot + start / os.sysconf("SC_CLK_TCK"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Refresh the ``heartbeat`` attribute of claimed trials every ``every`` seconds, in a thread."""

    def __init__(self, store, claims: list, every: float):
        self.storage, self.ids, self.every = store.storage, [c.trial_id for c in claims], every
        self.lost: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        while not self._stop.wait(self.every):
            for i in self.ids:
                if i in self.lost:
                    continue
                try:
                    self.storage.set_trial_user_attr(i, "heartbeat", time.time())
                except UpdateFinishedTrialError:  # declared lost and finished by another worker
                    self.lost.add(i)
                except Exception:  # noqa: BLE001 - the store is unreachable for now: try again next beat
                    pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
