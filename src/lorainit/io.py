"""Files that are either complete or absent: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# config fields that change how a run is computed, not what: not part of its identity
EXECUTION = ("device", "compile", "cuda_graphs", "eval_batch_size")


def config_dict(cfg, *, drop: tuple[str, ...] = ()) -> dict:
    """A dataclass config as JSON values (tuples as lists), without the fields named in ``drop``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items() if k not in drop}


def config_diff(have: dict, wanted: dict) -> list[str]:
    """The keys on which a recorded config ``have`` and ``wanted`` differ. A field added since ``have`` was recorded,
    at an empty or off default (--singular-values, --train-embeddings, ...), asks for what that run did: not a difference."""
    return sorted(
        k
        for k in set(have) | set(wanted)
        if have.get(k) != wanted.get(k) and not (k not in have and wanted.get(k) in (None, False, [], "", {}))
    )


def json_safe(x: Any) -> Any:
    """JSON has no NaN/inf: store them as null (a diverged run's missing value)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


TEMPORARIES = (".checkpoint.*", ".adapter.*", ".*.tmp")  # what an atomic write leaves behind when it is killed midway


def clean_temporaries(folder: Path) -> list[str]:
    """Remove the half-written temporaries a killed process left in ``folder``; returns their names."""
    gone = []
    for pattern in TEMPORARIES:
        for p in Path(folder).glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def replace_folder(path: Path, fill) -> None:
    """Make ``path`` a complete folder, or leave it as it was: ``fill(tmp)`` writes into a temporary folder beside
    it (and may return the subfolder of ``tmp`` that holds the result), which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        src = fill(tmp) or tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(src, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def check_folder(out: Path, wanted: dict, *, overwrite: bool, what: str = "a study") -> None:
    """Refuse (read-only) a folder whose config.json differs from ``wanted`` unless ``overwrite``; ``what`` names
    what the folder holds in the message (a study, a fine-tune run, ...)."""
    cfg_path = Path(out) / "config.json"
    if cfg_path.exists() and not overwrite:
        have = read_json(cfg_path)
        diff = config_diff(have, wanted)
        if diff:
            shown = ", ".join(
                f"{k}: {have.get(k)!r} there, {wanted.get(k)!r} now" if k != "points" else k for k in diff
            )
            raise ValueError(f"{out} holds {what} with a different config ({shown}); use another --out or --overwrite")


def claim_folder(out: Path, wanted: dict, *, overwrite: bool, stale: list[str], what: str = "a study") -> None:
    """Make ``out`` hold the study ``wanted`` (its config.json): refuse a folder holding another config
    unless ``overwrite``, in which case the ``stale`` glob patterns are removed first."""
    out = Path(out)
    cfg_path = out / "config.json"
    check_folder(out, wanted, overwrite=overwrite, what=what)
    if overwrite:
        for pattern in stale:
            for old in out.glob(pattern):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    write_json(cfg_path, wanted)


def cores() -> int:
    """The CPU cores this process may run on: its affinity (the cores ``taskset`` or a container's cpuset allow; a CPU
    quota is not seen), ``os.cpu_count()`` where the platform has no affinity call. What a thread share divides."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # (macOS, Windows)
        return os.cpu_count() or 1


def _host_cpu() -> str:
    """The host's processor model and core count (launch-bound GPU paths depend on it)."""
    try:
        model = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        )
    except OSError:
        model = ""
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def source_digest(root: Path | None = None) -> str:
    """sha256 (first 16 hex digits) over the package's .py files, each its path relative to ``root`` (default: the
    installed package), a zero byte and its bytes, in path order: which code produced a result, whatever git says on
    the machine (a copied tree may carry a stale .git). Check a result against a commit by computing it there."""
    root = root or Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def _package_digest() -> str:
    """The installed package's ``source_digest``, once per process (its modules were read at import)."""
    return source_digest()


def provenance() -> dict:
    """Where and when a result was produced: date, commit, the package source's digest, host, torch and device."""
    import torch

    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True, timeout=5
        )
        commit = rev.stdout.strip() if rev.returncode == 0 else ""
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    if os.environ.get("LORAINIT_COMMIT"):  # a copied tree (the GPU machine's may carry a stale .git): the caller says
        commit, dirty = os.environ["LORAINIT_COMMIT"], False
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    )
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or None,
        "dirty": dirty,
        "source": _package_digest(),
        "device": device,
        "host_cpu": _host_cpu(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def did_you_mean(name: str, known) -> str:
    """ "; did you mean 'x'?" for the known name closest to ``name``, or "" where none is close (for one-line errors)."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
