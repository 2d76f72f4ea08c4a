"""The study folders behind REPRODUCTION.md (``results/repro`` by default) and how each is read.

One folder per study, named by what it is:
- ``toy-d<S>``: ``lorainit toy --preset paper --widths 128,...,16384 --data-seed S`` (Hayou et al. Sec. 3.7):
  its results.json; only ``config``, ``provenance`` and ``analysis`` are read, so the per-run curves may be dropped
  (``slim``) to keep the repository small.
- ``mf-<target>-p<R>``: ``lorainit mf --preheat-rank R`` (Chen et al. Fig. 1), target ``paper`` (M = diag(I_12, 0))
  or ``distinct`` (``--singular-values 0.1:1:12``); its results.json, curves droppable the same way.
- any other folder with a summary.json: a ``lorainit sweep --experiment finetune`` study (its summary.json,
  trials.csv and sweep.json; the study database is kept beside them so the sweep can be resumed or re-reported).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
from pathlib import Path

from .. import io
from ..sweeps import summary

HEAVY = {"toy": ("widths",), "mf": ("curves",)}  # per-run data that the reproduction never reads


@dataclasses.dataclass
class Sweep:
    """A finished (or partly finished) finetune sweep: its grid, summary, and one row per finished point."""

    name: str
    folder: Path
    grid: dict
    summary: dict
    points: list[dict]  # COMPLETE or PRUNED points: init, lr, seed, state, value, test

    @property
    def config(self) -> dict:
        return self.grid["config"]

    @property
    def sign(self) -> int:
        """+1 where smaller is better (perplexity), -1 where larger is (accuracy)."""
        return 1 if self.summary["direction"] == "minimize" else -1

    def per_init(self) -> dict:
        return self.summary["groups"][0]["inits"]


@dataclasses.dataclass
class Studies:
    toy: list[dict]  # one results.json per data seed, ordered by data seed
    mf: dict  # target -> {preheat rank: results.json}
    sweeps: list[Sweep]
    folder: Path


def _json(path: Path) -> dict:
    if path.exists():
        return io.read_json(path)
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return json.loads(gzip.open(gz).read())
    raise FileNotFoundError(f"{path} (or {gz.name}) is missing")


def _points(folder: Path) -> list[dict]:
    """The finished trial of each point (a point finished twice counts once, as in the sweep report)."""
    rows = []
    with open(folder / "trials.csv", newline="") as f:
        for r in csv.DictReader(f):
            value, test = (float(r[k]) if r.get(k) not in (None, "") else None for k in ("value", "test"))
            rows.append(
                {
                    "init": r["init"],
                    "lr": float(r["lr"]),
                    "seed": int(r["seed"]),
                    "state": r["state"],
                    "value": value,
                    "test": test,
                    "number": int(r["number"]),
                }
            )
    return list(summary.finished(rows, ["init", "lr", "seed"])[0].values())


def load(folder: Path) -> Studies:
    """Every study under ``folder``; a missing folder is an error naming the command that makes studies."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no study folder {folder}: make the studies first (REPRODUCTION.md, 'Regenerate')")
    toy, mf, sweeps = [], {}, []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if re.fullmatch(r"toy-d\d+", sub.name):
            toy.append(_json(sub / "results.json"))
        elif m := re.fullmatch(r"mf-(\w+)-p(\d+)", sub.name):
            mf.setdefault(m.group(1), {})[int(m.group(2))] = _json(sub / "results.json")
        elif (sub / "summary.json").exists():
            s = io.read_json(sub / "summary.json")
            if s["grid"]["experiment"] == "finetune":
                sweeps.append(Sweep(sub.name, sub, s["grid"], s, _points(sub)))
    toy.sort(key=lambda r: r["config"]["data_seed"])
    return Studies(toy, mf, sweeps, folder)


def slim(results: Path, kind: str) -> None:
    """Drop the per-run data of a toy or mf results.json in place (the reproduction reads only the analysis)."""
    d = io.read_json(results)
    io.write_json(results, {k: v for k, v in d.items() if k not in HEAVY[kind]})
