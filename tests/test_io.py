import json
import math

import pytest

from lorainit import io


def test_json_stores_nan_as_null(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": [1.0, math.nan, math.inf]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1.0, None, None]}


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    io.write_json(path, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        io.write_json(path, {"v": Boom()})  # serialization fails before anything is written
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_unwritable_folder_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OSError):
        io.write_text(target / "inside.txt", "y")  # a file where a folder should be
    assert target.read_text() == "x"


def test_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        io.write_text(tmp_path / "r.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o644


def test_replace_folder_is_complete_or_leaves_the_old_one(tmp_path):
    from lorainit import io

    target = tmp_path / "out"
    io.replace_folder(target, lambda tmp: (tmp / "a.txt").write_text("one") and None)
    assert (target / "a.txt").read_text() == "one"

    def broken(tmp):
        (tmp / "b.txt").write_text("half")
        raise OSError("disk full")

    import pytest

    with pytest.raises(OSError, match="disk full"):
        io.replace_folder(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in target.iterdir()] == ["a.txt"]

    def nested(tmp):
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.txt").write_text("two")
        return tmp / "sub"

    io.replace_folder(target, nested)
    assert [p.name for p in target.iterdir()] == ["c.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_check_folder_takes_a_field_added_at_an_empty_default_as_the_same_config(tmp_path):
    import pytest

    from lorainit import io

    io.write_json(tmp_path / "config.json", {"steps": 3})
    io.check_folder(tmp_path, {"steps": 3, "singular_values": []}, overwrite=False)  # added since, at its empty default
    with pytest.raises(ValueError, match=r"different config \(singular_values: None there, \[5\] now\)"):
        io.check_folder(tmp_path, {"steps": 3, "singular_values": [5]}, overwrite=False)
    with pytest.raises(ValueError, match=r"holds a fine-tune run with a different config \(steps: 3 there, 4 now\)"):
        io.check_folder(tmp_path, {"steps": 4}, overwrite=False, what="a fine-tune run")


def test_config_diff_ignores_a_field_added_since_at_an_off_default_only():
    have = {"a": 1}  # recorded before the field "new" existed
    assert io.config_diff(have, {"a": 1, "new": False}) == []
    assert io.config_diff(have, {"a": 1, "new": True}) == ["new"]
    assert io.config_diff({"a": 1, "new": False}, {"a": 1}) == ["new"]  # a field dropped since is a difference
    assert io.config_diff(have, {"a": 2, "new": []}) == ["a"]


def test_did_you_mean_names_the_closest_or_nothing():
    assert io.did_you_mean("pisa", ["pissa", "eva"]) == "; did you mean 'pissa'?"
    assert io.did_you_mean("zzz", ["pissa", "eva"]) == ""


def test_source_digest_follows_every_py_files_path_and_bytes_only(tmp_path):
    import hashlib

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not code")
    want = hashlib.sha256(b"a.py\0x = 1\n" + b"sub/b.py\0y = 2\n").hexdigest()[:16]  # the docstring's definition
    assert io.source_digest(tmp_path) == want
    (tmp_path / "notes.txt").write_text("changed")
    assert io.source_digest(tmp_path) == want
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert io.source_digest(tmp_path) != want
    assert len(io.provenance()["source"]) == 16


def test_cores_are_this_processs_affinity_or_the_cpu_count_where_there_is_none(monkeypatch):
    import os

    assert io.cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3})  # (a container's two cores on a bigger host)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert io.cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity")  # (macOS)
    assert io.cores() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert io.cores() == 1
