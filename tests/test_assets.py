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
    monkeypatch.setattr(assets.urllib.request, "urlopen",
                        lambda url, timeout=0: real_open(url + "index.html" if url.endswith("/") else url, timeout=timeout))
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
