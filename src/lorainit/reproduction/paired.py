"""How a ``lorainit sweep --experiment finetune`` study is read for a real-task verdict (``tasks``): each method's
test values at its LR selected on validation, compared paired by seed (a seed fixes the data order of every init's
run, so the per-seed difference removes the data order's share of the noise; intervals are 95% t over the seeds),
and the two checks that keep a comparison from saying more than the study can: a fine-tune that did not learn its
task, and an LR selected at the grid's edge."""

from __future__ import annotations

from .claims import FAILS, HOLDS, NOT_RUN, OPEN
from .load import Sweep
from .stats import mean_ci

SHARED_LR = 2e-4  # L1's one shared learning rate


FULL = "full"  # full fine-tuning (lorainit.full)


BAND = 0.02  # "comparable" / "within 1-2%": a relative gap of at most 2% (L1 and R5)


def lora(s: Sweep) -> list[str]:
    """The study's LoRA inits (every method but full fine-tuning)."""
    return [i for i in s.per_init() if i != FULL]


def per_seed(s: Sweep, init: str, lr: float) -> dict[int, float]:
    return {
        p["seed"]: p["test"]
        for p in s.points
        if p["init"] == init and p["lr"] == lr and p["state"] == "COMPLETE" and p["test"] is not None
    }


def mean_at(s: Sweep, init: str, lr: float) -> float | None:
    """The mean test value of ``init`` at ``lr`` over the seeds, None unless every seed finished there."""
    t = per_seed(s, init, lr)
    return sum(t.values()) / len(t) if len(t) == len(s.grid["dims"]["seed"]) else None


def paired(s: Sweep, a: str, b: str) -> tuple[float, float | None, int] | None:
    """How much better a is than b on test at their selected LRs: mean and 95% half-width of the per-seed difference
    (positive = a better), and the number of seeds; None where either has no selected LR."""
    la, lb = s.per_init()[a]["selected_lr"], s.per_init()[b]["selected_lr"]
    if la is None or lb is None:
        return None
    ta, tb = per_seed(s, a, la), per_seed(s, b, lb)
    diffs = [s.sign * (tb[k] - ta[k]) for k in sorted(set(ta) & set(tb))]
    return (*mean_ci(diffs), len(diffs)) if diffs else None


def stuck(s: Sweep) -> tuple[float, float | None]:
    """The share of (init, LR) cells whose validation value is exactly the most common one in every seed, and that
    value: a large share marks a classifier predicting one class everywhere (the value is that class's frequency)."""
    cells: dict[tuple, set] = {}
    for p in s.points:
        if p["value"] is not None:
            cells.setdefault((p["init"], p["lr"]), set()).add(round(p["value"], 12))
    singles = [next(iter(v)) for v in cells.values() if len(v) == 1]
    if not singles:
        return 0.0, None
    mode = max(set(singles), key=singles.count)
    return singles.count(mode) / len(cells), mode


ONE_CLASS = 0.25  # a value that at least this share of the cells sits at exactly is a one-class predictor's


LEARNED = 0.10  # the best method must remove at least this share of that predictor's errors to have learned the task


def not_learned(s: Sweep) -> str | None:
    """Why the study cannot rank inits, or None: where many cells collapsed to one class (``stuck``), the task counts
    as learned only if the best (init, LR) cell's mean validation accuracy removes at least 10% of the errors of
    predicting that class. Both thresholds were set after the 200-step nli study (81% of cells collapsed, best
    1.8%); every committed study lies far from them (sentiment: 34% collapsed, best 69%; mathqa: 1% collapsed)."""
    share, one = stuck(s)
    if share < ONE_CLASS or s.sign > 0 or one is None or one >= 1:
        return None
    best = max(
        (r["val_mean"] for i in s.per_init().values() for r in i["rows"] if r.get("val_mean") is not None), default=one
    )
    gain = (best - one) / (1 - one)
    if gain >= LEARNED:
        return None
    return (
        f"the best (init, LR) cell's validation accuracy, {best:.3g}, removes {gain:.1%} of the errors of predicting "
        f"one class ({one:.3g}, the value {share:.0%} of the (init, LR) cells sit at in every seed): these "
        "fine-tunes did not learn the task, so they cannot rank inits"
    )


def edge_checked(s: Sweep, v: str, r: str, a: str, b: str) -> tuple[str, str]:
    """A verdict that a beats b (HOLDS) or b beats a (FAILS) is provisional where the loser's selected LR is at the
    grid's edge: its optimum may lie outside the grid, so its tuned value is not established (the protocol widens
    the grid until no selected LR is at an edge)."""
    loser = b if v == HOLDS else a if v == FAILS else None
    if loser is not None and s.per_init()[loser]["selected_at_edge"]:
        return OPEN, r + f", but {loser}'s selected LR {s.per_init()[loser]['selected_lr']:.3g} is at the grid's edge"
    return v, r


def judge(d, what: str) -> tuple[str, str]:
    if d is None:
        return OPEN, f"{what}: not every seed has finished"
    m, h, n = d
    if h is None:
        return OPEN, f"{what}: one seed, no interval"
    if m - h > 0:
        return HOLDS, f"{what}: better by {m:.3g} ± {h:.3g} over {n} paired seeds"
    if m + h < 0:
        return FAILS, f"{what}: worse by {-m:.3g} ± {h:.3g} over {n} paired seeds"
    return OPEN, f"{what}: {m:+.3g} ± {h:.3g} over {n} paired seeds, within the noise"


def combine(per_task: list[str]) -> str:
    """All tasks hold -> holds; any task does not -> does not hold; else inconclusive."""
    if not per_task:
        return NOT_RUN
    return HOLDS if all(v == HOLDS for v in per_task) else FAILS if FAILS in per_task else OPEN


def spread(values: dict[str, float], sign: int) -> tuple[float, str, str]:
    """Relative gap between the best and the worst value, and which inits they are."""
    best = min(values, key=lambda i: sign * values[i])
    worst = max(values, key=lambda i: sign * values[i])
    return abs(values[worst] - values[best]) / abs(values[best]), best, worst


def lr_nearest(s: Sweep) -> float:
    return min(s.grid["dims"]["lr"], key=lambda x: abs(x / SHARED_LR - 1))


def relative(s: Sweep, a: str, b: str) -> tuple[float, float | None, int] | None:
    """How much better a is than b on test at their selected LRs, relative to b: mean and 95% half-width over paired
    seeds of sign (b - a) / |mean b| (positive = a better), and the number of seeds; None where either is unselected."""
    la, lb = s.per_init()[a]["selected_lr"], s.per_init()[b]["selected_lr"]
    if la is None or lb is None:
        return None
    ta, tb = per_seed(s, a, la), per_seed(s, b, lb)
    seeds = sorted(set(ta) & set(tb))
    if not seeds:
        return None
    scale = abs(sum(tb[k] for k in seeds) / len(seeds))
    return (*mean_ci([s.sign * (tb[k] - ta[k]) / scale for k in seeds]), len(seeds))


def lr_ratios(s: Sweep) -> dict[str, float]:
    """Each LoRA init's selected LR over full fine-tuning's (inits without a selected LR left out)."""
    lf = s.per_init()[FULL]["selected_lr"]
    return (
        {}
        if lf is None
        else {i: s.per_init()[i]["selected_lr"] / lf for i in lora(s) if s.per_init()[i]["selected_lr"] is not None}
    )
