"""The database under a sweep study: which URLs are accepted, how the engine is opened (schema creation by several
fresh workers at once included), and the study-wide lock that ``store`` claims and repairs under.

- SQLite: a file (``sqlite:///PATH``), opened with a 120 s busy timeout. Its lock is a file lock beside it
  (``PATH.lock``): Optuna's SQLite transactions do not lock on read, so two processes could both pop one trial.
- PostgreSQL (``postgresql://USER@HOST/DB``, psycopg 3): the server ends a session left inside a transaction for
  longer than twice the lease (a stopped worker's), and the lock is ``pg_advisory_lock`` on a key hashed from the
  study name.
Waiting for the lock ends after ``timeout`` seconds with one line naming its holder: a stopped or hung worker
would hold it forever.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path


def sqlite_url(path: Path) -> str:
    """The SQLite URL of a database file, its path quoted (a folder named 'a?b' would otherwise end the path at '?')."""
    from urllib.parse import quote

    return f"sqlite:///{quote(str(path))}"


def redact(url: str) -> str:
    """The storage URL with any password replaced by ***, for messages and files."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show only its scheme
        return url.split(":", 1)[0] + "://..."


def connect(url: str, *, grace: float, must_exist: bool = False, raw: bool = False):
    """(kind, lock file or None, Optuna RDBStorage) for ``url``; a bad URL, a missing file where ``must_exist``, a
    missing driver or an unreachable server is a ValueError naming the fix (``raw``: the server's error as raised,
    for a caller that waits it out, ``Store``)."""
    import sqlalchemy

    shown = redact(url)
    kind = url.split(":", 1)[0].split("+", 1)[0]
    if kind not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported storage {shown!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
    lock_path, kwargs = None, {}
    if kind == "sqlite":
        # unquoted: a folder may hold '?'
        path = (sqlalchemy.engine.make_url(url).database or "") if ":///" in url else ""
        if not path or path.startswith(":memory:"):
            raise ValueError(f"storage {shown!r} is not a file: write sqlite:///PATH/study.db")
        if must_exist and not (Path(path).exists() and Path(path).stat().st_size > 0):
            what = "an empty file" if Path(path).exists() else "no such file"
            raise ValueError(f"no study database at {path} ({what}); check the sweep folder or --storage")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        lock_path = Path(path + ".lock")
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        # the psycopg 3 driver (the 'postgres' extra), whatever SQLAlchemy's default
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        # the server ends a session left inside a transaction (a stopped worker's) so that its row locks do not hold
        # the others up for longer than a lease
        timeout_ms = int(1000 * max(10.0, 2 * grace))
        kwargs = {"connect_args": {"options": f"-c idle_in_transaction_session_timeout={timeout_ms}"}}
    kwargs["pool_pre_ping"] = True  # a connection dropped by a server restart is replaced, not used
    try:
        return kind, lock_path, _open(url, kwargs, lock_path)
    except ImportError as e:
        raise ValueError(
            f"storage {shown} needs the database driver {e.name!r}: pip install 'psycopg[binary]'"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        if raw:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot open storage {shown}: {first}; check the URL and that the server runs") from None


def _open(url: str, kwargs: dict, lock_path: Path | None):
    """Optuna's RDBStorage; schema creation by several fresh workers at once is serialized (SQLite: under
    the file lock) or retried (PostgreSQL: the loser of a concurrent CREATE TABLE sees an error)."""
    import optuna
    import sqlalchemy

    if lock_path is not None:
        with open(lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def study_lock(store, *, timeout: float):
    """The study-wide lock of ``store`` (held for milliseconds around claiming and queue repair)."""
    deadline, pause = time.monotonic() + timeout, 0.01
    if store.lock_path is not None:
        with open(store.lock_path, "a+") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        f.seek(0)
                        holder = f.read().strip() or "another worker"
                        raise ValueError(
                            f"the study's lock {store.lock_path} has been held for {timeout:.0f} s "
                            f"by {holder}; a stopped or hung worker holds it: resume or end it, then re-run"
                        ) from None
                    time.sleep(pause)
                    pause = min(2 * pause, 0.5)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {store.host.split('/')[0]}")
            f.flush()
            yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(store.study_name.encode()).digest()[:8], "big", signed=True)
    with store.storage.engine.connect() as conn:
        while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() > deadline:
                raise ValueError(
                    f"the study's lock (advisory lock {key} in {store.shown}) has been held for "
                    f"{timeout:.0f} s; a stopped or hung worker's database session holds it: "
                    "resume or end that worker (or pg_terminate_backend its session), then re-run"
                )
            time.sleep(pause)
            pause = min(2 * pause, 0.5)
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
