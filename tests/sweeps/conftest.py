"""A real PostgreSQL server for the sweep tests: initdb into a temporary folder, started on loopback.

The server binaries come from Debian's postgresql package (``.ci/run`` installs it). Without them the
PostgreSQL tests are skipped, unless LORAINIT_REQUIRE_POSTGRES=1 (set by ``.ci/run``) makes that a failure."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running PostgreSQL server: ``url``, and ``stop()`` / ``start()`` to take it down and up (a restart)."""

    def __init__(self, url: str, ctl: list[str], opts: str, log: str):
        self.url, self._ctl, self._opts, self._log = url, ctl, opts, log

    def stop(self) -> None:
        subprocess.run([*self._ctl, "-m", "fast", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([*self._ctl, "-o", self._opts, "-l", self._log, "-w", "start"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture(scope="session")
def postgres():
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("LORAINIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries not found: install Debian's postgresql package (.ci/run does)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="lorainit-pg-")
    data = os.path.join(root, "data")
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                   capture_output=True)
    port = _free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    server = Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", [*as_user, pg_ctl, "-D", data], opts,
                    os.path.join(root, "log"))
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
