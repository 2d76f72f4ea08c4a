"""Triton autotuner results kept on disk, for ``lorainit.dual_kernels``' kernels: a process that meets a product
shape another process on this machine already tuned takes the winner from the store instead of benchmarking every
config again.

Triton's own store (``triton.autotune(cache_results=True)``) cannot keep these kernels' results: their configs carry
a ``pre_hook`` (``dual_kernels._blocks`` gives each tensor descriptor the config's tile), which Triton does not
serialize, so for them it benchmarks every time. This store keeps the winner's *index* in the kernel's own config
list, so the config launched is the very object, pre_hook included, that tuning would have picked.

Measured on an H200 (bench/results/batch_phases_smollm2_wiki_k*_{first,ab}_*_h200.json, 20 compiled steps of
SmolLM2 wiki): the descriptor kernel's tuning took 12.1-23.1 s of a warm process's first step (99 benchmarks: 9
product shapes x 11 configs), 43-47 s in a machine's first process (Triton compiling each config too); with the
store an 8-run first step took 7.5 and 9.7 s against 33.9 and 21.7 s without, in alternating order.

A result is keyed by sha256 of (Triton's version, the device's name and compute capability, the source of
``dual_kernels`` (kernels and configs), the kernel's name, Triton's tuning key (the shape arguments and dtypes), the
configs), one small JSON file each under ``assets.cache_dir()/autotune``; anything it does not recognise is tuned
again. Delete the folder to tune afresh. It also keeps a machine's choice of tiles, and with it the rounding of the
sums, the same from one process to the next.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from . import assets, io

FOLDER = "autotune"


def keep(tuner, source: str) -> bool:
    """Make the autotuned kernel ``tuner`` (a ``triton.runtime.autotuner.Autotuner``) take and leave its results in
    the store; ``source``: the text its results depend on besides the shapes (its module's source). Returns False,
    changing nothing, where this Triton has no disk-cache hook (it then tunes in every process, as before)."""
    if not hasattr(tuner, "check_disk_cache") or not hasattr(tuner, "cache_results"):
        return False
    digest = hashlib.sha256(source.encode()).hexdigest()
    tuner.check_disk_cache = lambda key, configs, bench: lookup(tuner, key, configs, bench, digest)
    tuner.cache_results = True  # (Triton then asks check_disk_cache, once per new key)
    return True


def lookup(tuner, key: tuple, configs: list, bench, source_digest: str, folder: Path | None = None) -> bool:
    """Triton's ``check_disk_cache`` contract: set ``tuner.cache[key]`` to the config to run, from the store (True)
    or by ``bench()``, which tunes and sets it, then stored (False)."""
    path = (folder or assets.cache_dir() / FOLDER) / f"{_digest(tuner, key, configs, source_digest)}.json"
    try:
        index = json.loads(path.read_text())["config"]
        if isinstance(index, int) and 0 <= index < len(configs):
            tuner.cache[key] = configs[index]
            tuner.configs_timings = {}  # (read only by a tuning listener, for what was benchmarked)
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # (missing, half-read or foreign: tune again)
    bench()
    index = next(i for i, c in enumerate(configs) if c is tuner.cache[key])
    timings = getattr(tuner, "configs_timings", {}) or {}
    record = {
        "kernel": _name(tuner),
        "key": [str(k) for k in key],
        "config": index,
        "chosen": str(configs[index]),
        "timings_ms": [timings.get(c) for c in configs],
    }
    try:
        io.write_json(path, record)
    except OSError as e:  # (a read-only or full cache: this process keeps its result, the next one tunes again)
        warnings.warn(f"lorainit: Triton tuning results not kept ({e}); the next process tunes this shape again")
    return False


def _name(tuner) -> str:
    return getattr(getattr(tuner, "base_fn", None), "__name__", "kernel")


def _digest(tuner, key: tuple, configs: list, source_digest: str) -> str:
    import torch
    import triton

    device = (torch.cuda.get_device_name(), torch.cuda.get_device_capability()) if torch.cuda.is_available() else "cpu"
    what = [
        triton.__version__,
        str(device),
        source_digest,
        _name(tuner),
        [str(k) for k in key],
        [str(c) for c in configs],
    ]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]
