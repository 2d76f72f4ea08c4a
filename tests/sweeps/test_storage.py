"""Opening a study's database (real SQLite files, an unreachable PostgreSQL port) and its study-wide lock."""

import pytest

from lorainit.sweeps import storage
from lorainit.sweeps.store import Store

from .test_store import GRID, sqlite


def test_storage_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="unsupported storage 'mysql://u:\\*\\*\\*@h/db'"):
        Store("mysql://u:secret@h/db", "s")
    with pytest.raises(ValueError, match="is not a file"):
        Store("sqlite:///:memory:", "s")
    with pytest.raises(
        ValueError, match=r"cannot open storage postgresql://bob:\*\*\*@127.0.0.1:1/x: .*check the URL"
    ) as e:
        Store("postgresql://bob:hunter2@127.0.0.1:1/x", "s")
    assert "hunter2" not in str(e.value)
    assert storage.redact("postgresql://bob:hunter2@h/db") == "postgresql://bob:***@h/db"
    with pytest.raises(ValueError, match="no study database at .*missing.db \\(no such file\\)"):
        storage.connect(f"sqlite:///{tmp_path / 'missing.db'}", grace=1.0, must_exist=True)


def test_a_sqlite_url_quotes_its_path_and_the_lock_file_sits_beside_the_database(tmp_path):
    folder = tmp_path / "a?b"
    url = storage.sqlite_url(folder / "study.db")
    assert url.endswith("/a%3Fb/study.db")
    kind, lock_path, _ = storage.connect(url, grace=1.0)
    assert kind == "sqlite" and lock_path == folder / "study.db.lock" and lock_path.parent.is_dir()


def test_waiting_for_a_held_lock_ends_in_one_line_naming_the_holder(tmp_path):
    import fcntl

    s = Store(sqlite(tmp_path), "s", lock_timeout=0.5)
    s.open(GRID)
    with open(s.lock_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # held, as by a stopped worker
        f.truncate(0)
        f.write("pid 4242 on somewhere")
        f.flush()
        with pytest.raises(
            ValueError, match=r"lock .* has been held for 0 s by pid 4242 on somewhere; a stopped or hung worker"
        ):
            s.claim(1, lambda p: 0)
