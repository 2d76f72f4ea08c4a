"""Who holds a sweep trial, and whether it is still alive: host identity, pid checks and heartbeats.

A worker is identified by hostname and boot id (two machines, or one machine rebooted, never share an
identity) and its pid. ``Heartbeat`` refreshes the ``heartbeat`` attribute of the trials a worker holds
from a thread, so that workers on other hosts can tell a slow trial from a lost one (``store.py``).
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
