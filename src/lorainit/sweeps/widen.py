"""``lorainit sweep --widen N``: push the LR grid past an edge only where an init's selected LR sits on it.

The fair comparison needs every init's selected LR inside the LRs it ran at (Hayou et al. tune each init's LR; an
optimum at the grid's edge may lie beyond it). Growing ``--lrs`` adds a column for every init; widening adds the
next LR beyond the edge (one more step of the grid's own log spacing there: lo^2 / lo_2 below, hi^2 / hi_2 above)
for that init alone, in that width or mode, at every seed, as the grid's ``extra`` points (``grid.py``).

Once every point is finished the sweep asks ``next_lrs`` and goes on with what it returns, until no selected LR is
at an edge or each edge-selected init has ``N`` extra LRs. An init whose every LR diverged widens downwards. An edge
chosen only by the tie rule (the next LR has the same mean: a curve flat at one class) is left alone. The rule reads
only the stored study, so several workers (or hosts) that finish together add the same points, and a resumed sweep
with the same N adds nothing more.
An init whose metric is flat towards LR -> 0 (the base model's) can stay at the lower edge: the cap ends that.
"""

from __future__ import annotations

from .grid import Grid


def beyond(own: list[float], low: bool) -> float | None:
    """The next LR past the lower (``low``) or upper edge of ``own`` (ascending), one step of the log spacing between
    the edge and its neighbour, to 6 significant digits; None with fewer than two LRs (no spacing to repeat)."""
    if len(own) < 2:
        return None
    lr = own[0] ** 2 / own[1] if low else own[-1] ** 2 / own[-2]
    return float(f"{lr:.6g}")


def next_lrs(grid: dict, summary: dict, cap: int) -> list[tuple[dict, str]]:
    """The extra points to add now: (partial point without seed, why) for each init, in each group, whose selected LR is
    at an edge of its own LRs and that has fewer than ``cap`` extra LRs."""
    shape = Grid(**grid)
    out = []
    for g in summary["groups"]:
        group = g["group"]
        for init, s in g["inits"].items():
            rows = [r for r in s["rows"] if r.get("in_grid", True)]
            if s["selected_at_edge"]:
                low = s["selected_lr"] == rows[0]["lr"]
                edge = rows[0] if low else rows[-1]
                inner = rows[1] if low else rows[-2]
                if inner["val_mean"] == edge["val_mean"] and not inner["diverged"]:
                    continue  # chosen by the tie rule on a flat curve (one class everywhere): nothing beyond it
                why = f"selected LR {s['selected_lr']:.3g} is its {'lowest' if low else 'highest'}"
            elif s["selected_lr"] is None and rows and all(r["diverged"] for r in rows):
                low, why = True, "every LR diverged"  # its stable LRs, if any, lie below the grid
            else:
                continue
            own = [r["lr"] for r in rows]
            lr = beyond(own, low)
            if len(shape.extra_of(init, group)) >= cap or lr is None or not lr > 0:
                continue
            where = "".join(f", {k} {v}" for k, v in group.items())
            out.append(({**group, "init": init, "lr": lr}, f"{init}{where}: {why}; adding LR {lr:.3g}"))
    return out
