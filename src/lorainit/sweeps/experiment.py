"""The experiment contract: everything ``lorainit sweep`` and ``lorainit report`` need from an experiment, in one
class, and the registry of experiments (issue 20, item 1).

An experiment is a subclass of ``Experiment`` registered under its ``name``; the sweep's CLI flags come from its
``config`` dataclass (its field docstrings are the help), its workers call ``run`` on the points they claim, and
the report asks it what a trial's value is (``selection_label``, ``note``) and for a section of its own
(``report_section``). Registering checks the contract, as the inits registry checks a scheme's signature, so a
broken experiment fails at import, not in the middle of a sweep. The built-in ones (toy, mf, finetune) are in
``runners.py``; a new one is a module with its class and one ``register`` line (see tests/sweeps/test_experiment.py).

A point is a dict of the grid's dimensions: "seed", "init", "lr" and the experiment's own (``dims``: toy "width",
mf "mode"). ``run`` returns one outcome per point, in order: (value, attrs), value the metric that selects the LR
(None: diverged), attrs a JSON-ready dict with at least "test", "diverged_step" and "reason".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from ..io import did_you_mean


class Section(NamedTuple):
    """An experiment's own part of a sweep report: a title, plain text, figure paths and entries for summary.json."""

    title: str
    text: str
    figures: list[Path]
    summary: dict


class Experiment:
    """What a sweep needs from an experiment; the defaults suit an experiment with no dimension of its own."""

    name: str = ""
    config: type = None  # the experiment's config dataclass: its fields are the sweep's experiment flags
    replaced: tuple[str, ...] = ()  # config fields the grid's dimensions carry (not flags of the sweep)...
    from_config: tuple[str, ...] = ()  # ...except these, which give the experiment's own dimensions their values
    methods: tuple[str, ...] = ()  # values of --inits that are not init schemes (finetune: full)
    defaults: dict = {}  # "inits", "lrs", "seeds", "batch" when the sweep's flags leave them out
    dim_flags: dict[str, str] = {}  # the flag that lists each dimension of ``dims`` (toy: {"width": "widths"})
    command: str = (
        ""  # "module:function" of its own subcommand, ``lorainit NAME`` (function(argv) -> exit code); "" for none
    )
    summary: str = ""  # the subcommand's line in ``lorainit --help``

    def validate(self, cfg) -> None:
        """Raise a ValueError naming the problem and the fix for a config that cannot run."""

    def dims(self, cfg) -> dict[str, list]:
        """The grid's dimensions beyond seed, init and lr, with their values (points of one value train apart)."""
        return {}

    def metric(self, cfg) -> tuple[str, str]:
        """(name of the value, "minimize" or "maximize")."""
        raise NotImplementedError

    def batch_key(self, point: dict) -> Any:
        """Points with equal keys may be claimed together and trained as one batched program."""
        return None

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        """Train ``points`` (written under ``out`` where the experiment keeps files) and return their outcomes."""
        raise NotImplementedError

    def selection_label(self, grid: dict) -> str:
        """What a trial's value is, for axis labels."""
        return f"validation {grid['metric']}"

    def note(self, grid: dict) -> str:
        """A sentence for the report on what 'validation' and 'test' mean here ('' where they mean just that)."""
        return ""

    def report_section(self, grid: dict, records: list[dict], out: Path) -> Section | None:
        """The experiment's own analysis of a study (its figures written into ``out``), or None."""
        return None


EXPERIMENTS: dict[str, Experiment] = {}
REQUIRED = ("metric", "run")  # what every experiment must define itself


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` under ``exp.name`` after checking the contract; returns it."""
    kind = type(exp).__name__
    if not isinstance(exp, Experiment):
        raise TypeError(f"{kind} is not an Experiment: subclass lorainit.sweeps.experiment.Experiment")
    if not exp.name or not exp.name.isidentifier():
        raise TypeError(f"{kind}: name must be a non-empty identifier (the --experiment value); got {exp.name!r}")
    if not (isinstance(exp.config, type) and dataclasses.is_dataclass(exp.config)):
        raise TypeError(f"experiment {exp.name!r}: config must be a dataclass (its fields become the sweep's flags)")
    missing = [m for m in REQUIRED if getattr(type(exp), m) is getattr(Experiment, m)]
    if missing:
        raise TypeError(f"experiment {exp.name!r} must define {', '.join(missing)}")
    fields = {f.name for f in dataclasses.fields(exp.config)}
    unknown = [f for f in (*exp.replaced, *exp.from_config) if f not in fields]
    if unknown:
        raise TypeError(
            f"experiment {exp.name!r}: replaced/from_config name {unknown}, which {exp.config.__name__} has not"
        )
    if exp.command and (exp.command.count(":") != 1 or not exp.summary):
        raise TypeError(f"experiment {exp.name!r}: command must be 'module:function' and come with a summary line")
    lacking = [k for k in ("inits", "lrs", "seeds", "batch") if k not in exp.defaults]
    if lacking:
        raise TypeError(f"experiment {exp.name!r}: defaults must give {', '.join(lacking)}")
    if exp.name in EXPERIMENTS and type(EXPERIMENTS[exp.name]) is not type(exp):
        raise ValueError(f"experiment {exp.name!r} is already registered")
    EXPERIMENTS[exp.name] = exp
    return exp


def _builtin() -> None:
    from . import runners, runners_finetune  # noqa: F401  (register toy and mf, then finetune)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``; a ValueError naming the closest one otherwise."""
    _builtin()
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}{did_you_mean(name, EXPERIMENTS)} (experiments: {', '.join(EXPERIMENTS)})"
        )
    return EXPERIMENTS[name]


def names() -> list[str]:
    _builtin()
    return list(EXPERIMENTS)


def command(name: str):
    """The function of experiment ``name``'s subcommand (imported now), or None where it has none."""
    import importlib

    _builtin()
    exp = EXPERIMENTS.get(name)
    if exp is None or not exp.command:
        return None
    module, function = exp.command.split(":")
    return getattr(importlib.import_module(module), function)
