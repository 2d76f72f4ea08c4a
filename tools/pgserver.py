"""A throwaway PostgreSQL server on loopback for tests and fault injection: initdb into a temporary folder, start,
stop and start again (a restart), remove. The binaries come from Debian's postgresql package (``.ci/run``
installs it); as root the server runs as the package's postgres user (it refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


def binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return bool(binary("initdb") and binary("pg_ctl"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running PostgreSQL server: ``url``; ``stop()`` / ``start()`` take it down and up (a restart); ``close()``."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="lorainit-pg-")
        data = os.path.join(self.root, "data")
        as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_user, binary("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._ctl = [*as_user, binary("pg_ctl"), "-D", data]
        self._opts = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._log = os.path.join(self.root, "log")
        self.start()

    def stop(self) -> None:
        subprocess.run([*self._ctl, "-m", "fast", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([*self._ctl, "-o", self._opts, "-l", self._log, "-w", "start"], check=True, capture_output=True)

    def close(self) -> None:
        subprocess.run(
            [*self._ctl, "-m", "immediate", "stop"], check=False, capture_output=True
        )  # (already down: fine)
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
