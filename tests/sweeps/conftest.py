"""A real PostgreSQL server for the sweep tests: initdb into a temporary folder, started on loopback.

The server binaries come from Debian's postgresql package (``.ci/run`` installs it). Without them the
PostgreSQL tests are skipped, unless LORAINIT_REQUIRE_POSTGRES=1 (set by ``.ci/run``) makes that a failure."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import pgserver  # noqa: E402  (tools/pgserver.py: also used by tools/fault_inject.py)


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture(scope="session")
def postgres():
    """A real server (``pgserver.Server``: ``url``, ``stop()``, ``start()``) for the session."""
    if not pgserver.available():
        if os.environ.get("LORAINIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries not found: install Debian's postgresql package (.ci/run does)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = pgserver.Server()
    try:
        yield server
    finally:
        server.close()
