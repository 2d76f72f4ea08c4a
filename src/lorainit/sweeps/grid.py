"""What a sweep study is: the experiment, its fixed config, the grid dimensions and the metric's direction (stored as
the study's ``lorainit`` attribute by ``store``), and the key that names one grid point.

The points are the product of the dimensions, plus ``extra`` LRs of single inits: ``lorainit sweep --widen`` adds
the next LR beyond a grid edge only for the init (of one width or mode) selected there, for every seed, rather than
a whole column of the product (``widen.py``)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

DONE_STATES = ("COMPLETE", "PRUNED")  # a point is done when a trial of it is COMPLETE, or PRUNED (diverged)


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


@dataclass(frozen=True)
class Grid:
    """What a study is: the experiment, its fixed config, the grid dimensions and the metric's direction."""

    experiment: str
    dims: dict  # name -> list of values, in enqueue order (outermost first)
    config: dict
    metric: str
    direction: str  # "minimize" or "maximize"
    extra: list = field(default_factory=list)  # partial points (every dimension but seed), each run at every seed

    def points(self) -> list[dict]:
        names = list(self.dims)
        out = [dict(zip(names, values)) for values in itertools.product(*self.dims.values())]
        keys = {point_key(p) for p in out}
        for e in self.extra:
            for s in self.dims["seed"]:
                p = {n: s if n == "seed" else e[n] for n in names}
                if (k := point_key(p)) not in keys:
                    out.append(p)
                    keys.add(k)
        return out

    def extra_of(self, init: str, group: dict) -> list[dict]:
        """The extra points of ``init`` in ``group`` (the values of the other dimensions)."""
        return [e for e in self.extra if e["init"] == init and all(e.get(k) == v for k, v in group.items())]

    def lrs(self, init: str, group: dict) -> list[float]:
        """The LRs ``init`` runs at in ``group``: the grid's, plus its extra ones, ascending."""
        return sorted(set(self.dims["lr"]) | {e["lr"] for e in self.extra_of(init, group)})

    def signature(self) -> dict:
        keys = ("experiment", "dims", "config", "metric", "direction") + (("extra",) if self.extra else ())
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))
