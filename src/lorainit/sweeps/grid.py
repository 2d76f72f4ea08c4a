"""What a sweep study is: the experiment, its fixed config, the grid dimensions and the metric's direction (stored as
the study's ``lorainit`` attribute by ``store``), and the key that names one grid point."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

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

    def points(self) -> list[dict]:
        names = list(self.dims)
        return [dict(zip(names, values)) for values in itertools.product(*self.dims.values())]

    def signature(self) -> dict:
        keys = ("experiment", "dims", "config", "metric", "direction")
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))
