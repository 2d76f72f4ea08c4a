"""What a sweep found, as numbers (``report`` writes them out), with every init at its own validation-selected LR.

For each group of the extra dimensions (toy: width, mf: mode) and each init:
- the metric per LR over seeds (mean and standard error s.d./sqrt(n)); an LR where any seed diverged
  counts as diverged and is never selected;
- the selected LR: best mean validation metric among LRs where every seed finished without diverging
  (ties: the smaller LR); ``selected_at_edge`` marks a selection at the edge of the init's own LRs (the grid's and
  its extra ones: widen the grid);
- the test metric at the selected LR (mean and standard error): the number to compare inits by;
- the divergence boundary: the largest LR below the first LR where any seed diverged.
Per group, the answer: the best init at its own LR, its margin over the runner-up in standard errors, and the winning
trial.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from .grid import DONE_STATES, Grid

DIMS = ("seed", "init", "lr")


def group_names(grid: dict) -> list[str]:
    return [d for d in grid["dims"] if d not in DIMS]


def finished(records: list[dict], names: list[str]) -> tuple[dict, int]:
    """The finished trial of each point (the first, by number), keyed by the sorted (dim, value) pairs,
    and how many points were finished more than once."""
    by: dict[tuple, list] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["number"]):
        if r["state"] in DONE_STATES:
            by[tuple(sorted((k, r[k]) for k in names))].append(r)
    return {k: v[0] for k, v in by.items()}, sum(len(v) > 1 for v in by.values())


def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values, dtype=float)
    sd = 0.0 if np.ptp(a) == 0 else float(a.std(ddof=1))  # equal values: exactly 0, not the mean's rounding (4e-17)
    return float(a.mean()), sd / math.sqrt(len(a)) if len(a) > 1 else None


def summarize(grid: dict, records: list[dict]) -> dict:
    """Per group and init: per-LR statistics, the selected LR, test at it, and the divergence boundary."""
    points, duplicates = finished(records, list(grid["dims"]))
    gnames = group_names(grid)
    sign = 1 if grid["direction"] == "minimize" else -1
    shape = Grid(**grid)
    seeds = grid["dims"]["seed"]
    groups = []
    for gvals in itertools.product(*[grid["dims"][g] for g in gnames]):
        gpoint = dict(zip(gnames, gvals))
        per_init = {}
        lrs = sorted({lr for init in grid["dims"]["init"] for lr in shape.lrs(init, gpoint)})  # one table: every column
        for init in grid["dims"]["init"]:
            own = shape.lrs(init, gpoint)
            rows = []
            for lr in lrs:
                rs = [points.get(tuple(sorted({**gpoint, "seed": s, "init": init, "lr": lr}.items()))) for s in seeds]
                got = [r for r in rs if r is not None]
                div = [r for r in got if r["state"] == "PRUNED"]
                ok = [r for r in got if r["state"] == "COMPLETE"]
                mean, se = mean_se([r["value"] for r in ok])
                tmean, tse = mean_se([r["test"] for r in ok if r.get("test") is not None])
                rows.append(
                    {
                        "lr": lr,
                        "in_grid": lr in own,  # False: another init's extra LR (widen), not run for this one
                        "finished": len(got),
                        "diverged": len(div),
                        "val_mean": mean,
                        "val_se": se,
                        "test_mean": tmean,
                        "test_se": tse,
                        "diverged_steps": [r.get("diverged_step") for r in div],
                        "reasons": sorted({r.get("reason") for r in div}),
                    }
                )
            eligible = [
                r for r in rows if r["finished"] == len(seeds) and not r["diverged"] and r["val_mean"] is not None
            ]
            best = min(eligible, key=lambda r: (sign * r["val_mean"], r["lr"])) if eligible else None
            first_div = next((r["lr"] for r in rows if r["diverged"]), None)
            below = [r["lr"] for r in rows if r["finished"] and (first_div is None or r["lr"] < first_div)]
            per_init[init] = {
                "rows": rows,
                "selected_lr": best["lr"] if best else None,
                "selected_at_edge": bool(best) and best["lr"] in (own[0], own[-1]),
                "val_at_selected": (best["val_mean"], best["val_se"]) if best else (None, None),
                "test_at_selected": (best["test_mean"], best["test_se"]) if best else (None, None),
                "first_diverging_lr": first_div,
                "max_stable_lr": max(below) if below else None,
            }
        groups.append({"group": gpoint, "inits": per_init, "best": best_of(per_init, points, gpoint, sign)})
    states = defaultdict(int)
    for r in records:
        states[r["state"]] += 1
    total = len(shape.points())
    return {
        "metric": grid["metric"],
        "direction": grid["direction"],
        "groups": groups,
        "integrity": {
            "points": total,
            "finished_points": len(points),
            "points_finished_twice": duplicates,
            "trial_states": dict(states),
        },
    }


def best_of(per_init: dict, points: dict, gpoint: dict, sign: int) -> dict | None:
    """The answer of a group: the init whose validation metric at its own selected LR is best, its margin over the
    runner-up in standard errors (over seeds; sqrt(se_1^2 + se_2^2)), and the winning trial (the best seed there)."""
    ranked = sorted(
        ((sign * s["val_at_selected"][0], init) for init, s in per_init.items() if s["selected_lr"] is not None)
    )
    if not ranked:
        return None
    init = ranked[0][1]
    s = per_init[init]
    seeds = [
        r
        for r in points.values()
        if r["state"] == "COMPLETE"
        and r["init"] == init
        and r["lr"] == s["selected_lr"]
        and all(r.get(k) == v for k, v in gpoint.items())
    ]
    trial = min(seeds, key=lambda r: sign * r["value"])
    out = {
        "init": init,
        "lr": s["selected_lr"],
        "val": s["val_at_selected"],
        "test": s["test_at_selected"],
        "trial": {"number": trial["number"], "seed": trial["seed"], "run": trial.get("run")},
        "runner_up": None,
    }
    if len(ranked) > 1:
        other = per_init[ranked[1][1]]
        margin = abs(s["val_at_selected"][0] - other["val_at_selected"][0])
        ses = (s["val_at_selected"][1], other["val_at_selected"][1])
        se = math.hypot(*ses) if None not in ses else None
        out["runner_up"] = {
            "init": ranked[1][1],
            "lr": other["selected_lr"],
            "val": other["val_at_selected"],
            "test": other["test_at_selected"],
            "margin": margin,
            "margin_se": se,
            "margin_in_se": None if se is None else margin / se if se else (math.inf if margin else 0.0),
            "exceeds_se": None if se is None else margin > se,
        }
    return out
