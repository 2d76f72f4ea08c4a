"""What a database error means for a sweep worker: wait it out, or stop with one line. Nothing finished is lost
either way: a finished point is committed before the next is claimed, and the points a stopped worker held
are re-queued by the next worker to look (``store.py``).

- Transient (the server restarting or unreachable, the connection dropped, SQLite busy): the call is retried
  with exponential backoff (0.5 s doubling to 8 s) for up to ``patience`` seconds, then one line.
- Permanent (disk full, a damaged or unreadable database file): one line at once.
Optuna reports many of these as ``StorageInternalError`` ("... e.g. exceeding max length"): the cause is read
from the exception's chain, not from that message.
"""

from __future__ import annotations

import functools
import sys
import time

TRANSIENT = (
    "server closed the connection",
    "connection refused",
    "could not connect",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery",
    "database is locked",
    "connection is closed",
    "connection already closed",
    "consuming input failed",
    "ssl syscall",
    "connection reset",
    "connection timed out",
    "no connection to the server",
    "server conn crashed",
    "connection to server",
    "lock timeout",
    "idle-in-transaction timeout",
)
PERMANENT = (
    "database or disk is full",
    "disk i/o error",
    "file is not a database",
    "database disk image is malformed",
    "no space left",
    "readonly database",
    "unable to open database file",
    "file too large",
)


class DatabaseError(ValueError):
    """The study's database failed for good, or for longer than the worker waits: one line for the command line."""


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def classify(e: BaseException) -> tuple[str | None, str]:
    """("transient" | "permanent" | None, the first line of the deepest database message) for an exception."""
    kind, first = None, ""
    for x in _chain(e):
        text = str(x).strip().lower()
        if not text:
            continue
        if any(p in text for p in PERMANENT):
            return "permanent", str(x).strip().splitlines()[0]
        if any(p in text for p in TRANSIENT) or getattr(x, "connection_invalidated", False):
            kind, first = "transient", str(x).strip().splitlines()[0]
    return kind, first


def retrying(method):
    """A ``Store`` method that waits out transient database errors (``self.patience`` seconds at most) and turns the
    rest of the database's failures into one ``DatabaseError`` line."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, pause, told = None, 0.5, False
        while True:
            try:
                return method(self, *args, **kwargs)
            except DatabaseError:
                raise
            except Exception as e:  # noqa: BLE001 - classified below; anything not a database failure re-raised as is
                kind, first = classify(e)
                if kind is None:
                    raise
                if kind == "permanent":
                    raise DatabaseError(
                        f"the study's database {self.shown} failed: {first}; nothing finished is lost: "
                        "free disk space or restore the database, then re-run the same command"
                    ) from None
                deadline = deadline or time.monotonic() + self.patience
                if time.monotonic() + pause > deadline:
                    raise DatabaseError(
                        f"lost the study's database {self.shown} for {self.patience:.0f} s ({first}); "
                        "nothing finished is lost: re-run the same command once it is back"
                    ) from None
                if not told:
                    print(
                        f"lorainit sweep: the study's database is unreachable ({first}); retrying for up to "
                        f"{self.patience:.0f} s",
                        file=sys.stderr,
                    )
                    told = True
                time.sleep(pause)
                pause = min(2 * pause, 8.0)

    return call
