"""The claims of Hayou, Ghosh, Yu 2024 and Chen et al. 2025 (HRP), each a function from the studies to a verdict.

A claim function reads only the committed studies (``load.Studies``), draws its figure(s) into ``figdir`` and returns
a ``Verdict``: 'holds', 'does not hold', 'inconclusive' (the studies cannot tell at this sample size) or 'not run'
(its studies are missing). The rule behind each verdict is in the function's docstring and in its ``reason``.
Adding a claim is one decorated function in a claim module: ``render`` lists every registered claim.
This module: the verdict type and the registry. The claim modules: ``toy_claims`` (H1-H3, Hayou et al. Sec. 3.7,
Thm 1-2, Figs 2-3), ``mf_claims`` (R1, R2, R4, Chen et al. Fig. 1) and ``tasks`` (the real-task claims H4, R3, R5,
L1); ``every_claim`` imports them in that order, which is the order of the report.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from .load import Studies

HOLDS, FAILS, OPEN, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"


@dataclasses.dataclass
class Verdict:
    id: str
    title: str
    paper: str  # the paper's statement and numbers
    setup: str  # our setup and how it differs
    numbers: list[str]  # markdown lines with our numbers and their uncertainty
    verdict: str
    reason: str
    figures: list[Path] = dataclasses.field(default_factory=list)  # the PNGs drawn for it


CLAIMS: dict[str, Callable[[Studies, Path], Verdict]] = {}
MODULES = ("toy_claims", "mf_claims", "tasks")  # the modules of claims, in the report's order


def claim(fn):
    CLAIMS[fn.__name__.upper()] = fn
    return fn


def every_claim() -> dict[str, Callable[[Studies, Path], Verdict]]:
    """Every registered claim by id, in the report's order: by module in ``MODULES`` order, then as defined."""
    mods = [importlib.import_module(f"{__package__}.{name}").__name__ for name in MODULES]
    rank = {m: i for i, m in enumerate(mods)}  # a claim registered elsewhere (a test's) comes last
    return dict(sorted(CLAIMS.items(), key=lambda kv: rank.get(kv[1].__module__, len(mods))))


def not_run(id_, title, paper, what) -> Verdict:
    return Verdict(id_, title, paper, "", [], NOT_RUN, f"no {what} study in the study folder (see 'Regenerate')")
