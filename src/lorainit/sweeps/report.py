"""``lorainit report``: what a sweep found, with every init at its own validation-selected learning rate.

For each group of the extra dimensions (toy: width, mf: mode) and each init:
- the metric per LR over seeds (mean and standard error s.d./sqrt(n)); an LR where any seed diverged
  counts as diverged and is never selected;
- the selected LR: best mean validation metric among LRs where every seed finished without diverging
  (ties: the smaller LR); '*' marks a selection at the edge of the grid (widen the grid);
- the test metric at the selected LR (mean and standard error): the number to compare inits by;
- the divergence boundary: the largest LR below the first LR where any seed diverged.
An experiment adds its own section (``Experiment.report_section``: toy, the paper's optimal / max-stable LR vs width
analysis) and says what its values are (``Experiment.note``).
Exports: trials.csv (one row per trial attempt), summary.json, report.md and PNG figures.
"""

from __future__ import annotations

import csv
import io as _io
import itertools
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import io
from .grid import DONE_STATES

DIMS = ("seed", "init", "lr")


def _group_names(grid: dict) -> list[str]:
    return [d for d in grid["dims"] if d not in DIMS]


def finished(records: list[dict], names: list[str]) -> tuple[dict, int]:
    """The finished trial of each point (the first, by number), keyed by the sorted (dim, value) pairs,
    and how many points were finished more than once."""
    by: dict[tuple, list] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["number"]):
        if r["state"] in DONE_STATES:
            by[tuple(sorted((k, r[k]) for k in names))].append(r)
    return {k: v[0] for k, v in by.items()}, sum(len(v) > 1 for v in by.values())


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values, dtype=float)
    sd = 0.0 if np.ptp(a) == 0 else float(a.std(ddof=1))  # equal values: exactly 0, not the mean's rounding (4e-17)
    return float(a.mean()), sd / math.sqrt(len(a)) if len(a) > 1 else None


def summarize(grid: dict, records: list[dict]) -> dict:
    """Per group and init: per-LR statistics, the selected LR, test at it, and the divergence boundary."""
    points, duplicates = finished(records, list(grid["dims"]))
    gnames = _group_names(grid)
    sign = 1 if grid["direction"] == "minimize" else -1
    seeds, lrs = grid["dims"]["seed"], sorted(grid["dims"]["lr"])
    groups = []
    for gvals in itertools.product(*[grid["dims"][g] for g in gnames]):
        gpoint = dict(zip(gnames, gvals))
        per_init = {}
        for init in grid["dims"]["init"]:
            rows = []
            for lr in lrs:
                rs = [points.get(tuple(sorted({**gpoint, "seed": s, "init": init, "lr": lr}.items()))) for s in seeds]
                got = [r for r in rs if r is not None]
                div = [r for r in got if r["state"] == "PRUNED"]
                ok = [r for r in got if r["state"] == "COMPLETE"]
                mean, se = _mean_se([r["value"] for r in ok])
                tmean, tse = _mean_se([r["test"] for r in ok if r.get("test") is not None])
                rows.append(
                    {
                        "lr": lr,
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
                "selected_at_edge": bool(best) and best["lr"] in (lrs[0], lrs[-1]),
                "val_at_selected": (best["val_mean"], best["val_se"]) if best else (None, None),
                "test_at_selected": (best["test_mean"], best["test_se"]) if best else (None, None),
                "first_diverging_lr": first_div,
                "max_stable_lr": max(below) if below else None,
            }
        groups.append({"group": gpoint, "inits": per_init, "best": _best(per_init, points, gpoint, sign)})
    states = defaultdict(int)
    for r in records:
        states[r["state"]] += 1
    total = len(seeds) * len(lrs) * len(grid["dims"]["init"]) * math.prod(len(grid["dims"][g]) for g in gnames)
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


def _best(per_init: dict, points: dict, gpoint: dict, sign: int) -> dict | None:
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


def answer_lines(summary: dict) -> list[str]:
    """The report's first section: per group, the best init at its own LR and how sure that is."""
    lines = ["## Answer", ""]
    for g in summary["groups"]:
        title = ", ".join(f"{k} {v}" for k, v in g["group"].items())
        b = g["best"]
        if b is None:
            lines += [f"- {title + ': ' if title else ''}no init has a finished, non-diverged LR yet.", ""]
            continue
        edge = (
            " (at the grid's edge: the optimum may lie outside; widen --lrs)"
            if g["inits"][b["init"]]["selected_at_edge"]
            else ""
        )
        text = (
            f"**{b['init']}** at LR {b['lr']:.3g}{edge}: validation {summary['metric']} {_fmt(*b['val'])}, "
            f"test {_fmt(*b['test'])}"
        )
        r = b["runner_up"]
        if r is not None:
            text += (
                f"; runner-up {r['init']} at LR {r['lr']:.3g} (validation {_fmt(*r['val'])}, test {_fmt(*r['test'])})"
            )
            if r["margin_se"] is None:
                text += f", margin {r['margin']:.3g}: with one seed there is no standard error to judge it by (run --seeds 3 or more)"
            elif r["margin"] == 0:
                text += ": a tie (the order of the two is arbitrary)"
            else:
                verdict = "exceeds" if r["exceeds_se"] else "is within"
                text += f", margin {r['margin']:.3g} = {r['margin_in_se']:.1f} standard errors: it {verdict} the seeds' noise"
        lines.append(f"- {title + ': ' if title else ''}{text}.")
        run = b["trial"]["run"]
        if run:
            lines.append(
                f"  Winning run: trial {b['trial']['number']} (seed {b['trial']['seed']}), `{run}`; its adapter: "
                "`lorainit report STUDY --export-best DIR`."
            )
        lines.append("")
    return lines


def export_best(summary: dict, dest: Path) -> Path:
    """Copy the winning run's adapter (a plain PEFT folder) and its run card to ``dest``; refuses an existing ``dest``."""
    import shutil

    dest = Path(dest)
    if dest.exists():
        raise ValueError(f"{dest} exists; give --export-best a new folder")
    bests = [g["best"] for g in summary["groups"] if g["best"] is not None]
    if not bests:
        raise ValueError("no finished, non-diverged point yet: nothing to export")
    if len(bests) > 1:
        raise ValueError(
            "this study has one answer per group (width or mode), and none of them has an adapter to export"
        )
    run = bests[0]["trial"]["run"]
    if not run or not (Path(run) / "adapter" / "adapter_config.json").exists():
        raise ValueError(
            f"the winning trial {bests[0]['trial']['number']} has no saved adapter "
            f"({'toy and mf runs save none' if not run else f'none in {run}'})"
        )

    def fill(tmp: Path) -> None:
        for f in (Path(run) / "adapter").iterdir():
            shutil.copy2(f, tmp / f.name)
        shutil.copy2(Path(run) / "run_card.json", tmp / "run_card.json")

    io.replace_folder(dest, fill)
    return dest


def _fmt(mean, se, spec=".4g") -> str:
    if mean is None:
        return "-"
    return f"{mean:{spec}}" + (f" ± {se:.2g}" if se is not None else "")


def experiment_of(grid: dict):
    """The study's experiment; a study of one not registered in this process reads as a plain ``Experiment``."""
    from .experiment import Experiment, get

    try:
        return get(grid["experiment"])
    except ValueError:
        return Experiment()


def markdown(grid: dict, summary: dict, figures: list[str], section=None) -> str:
    integ = summary["integrity"]
    lines = [
        f"# Sweep report: {grid['experiment']}",
        "",
        f"Metric: **{grid['metric']}** ({grid['direction']}d), selected per init on validation; test reported at the selected LR.",
        f"Grid: {len(grid['dims']['init'])} inits x {len(grid['dims']['lr'])} LRs x {len(grid['dims']['seed'])} seeds"
        + "".join(f" x {len(grid['dims'][g])} {g}s" for g in _group_names(grid))
        + f" = {integ['points']} points; "
        f"finished {integ['finished_points']}, finished twice {integ['points_finished_twice']}; "
        f"trial states {', '.join(f'{k} {v}' for k, v in sorted(integ['trial_states'].items()))} "
        "(PRUNED = diverged, FAIL = an attempt lost with its worker, re-queued).",
        "",
        *answer_lines(summary),
    ]
    note = experiment_of(grid).note(grid)
    if note:
        lines += [note, ""]
    for g in summary["groups"]:
        title = ", ".join(f"{k} {v}" for k, v in g["group"].items()) or "all"
        lines += [
            f"## {title}",
            "",
            "| init | selected LR | val at selected | test at selected | largest LR below divergence | first diverging LR |",
            "|---|---|---|---|---|---|",
        ]
        for init, s in g["inits"].items():
            sel = (
                "-" if s["selected_lr"] is None else f"{s['selected_lr']:.3g}" + ("*" if s["selected_at_edge"] else "")
            )
            stable = "-" if s["max_stable_lr"] is None else format(s["max_stable_lr"], ".3g")
            if s["max_stable_lr"] is not None and s["first_diverging_lr"] is None:
                stable = f">= {stable} (none diverged: the grid's top is a lower bound)"
            lines.append(
                f"| {init} | {sel} | {_fmt(*s['val_at_selected'])} | {_fmt(*s['test_at_selected'])} | {stable} | "
                f"{'none' if s['first_diverging_lr'] is None else format(s['first_diverging_lr'], '.3g')} |"
            )
        lrs = [r["lr"] for r in next(iter(g["inits"].values()))["rows"]]
        lines += [
            "",
            "Validation metric by LR (mean ± s.e. over seeds; div = a seed diverged):",
            "",
            "| init | " + " | ".join(f"{lr:.3g}" for lr in lrs) + " |",
            "|---" * (len(lrs) + 1) + "|",
        ]
        for init, s in g["inits"].items():
            cells = ["div" if r["diverged"] else _fmt(r["val_mean"], r["val_se"]) for r in s["rows"]]
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["*: selected LR at the edge of the grid: the optimum may lie outside it.", ""]
    if section is not None:
        lines += [f"## {section.title}", "", "```", section.text, "```", ""]
    lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(lines) + "\n"


def trials_csv(grid: dict, records: list[dict]) -> str:
    cols = ["number", "state", *grid["dims"], "value", "test", "diverged_step", "reason", "failure", "seconds"]
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in sorted(records, key=lambda r: r["number"]):
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue()


def write(store, out: Path) -> dict:
    """Everything ``lorainit report`` writes into ``out``, from a loaded ``Store``; returns the summary."""
    from . import report_plots

    grid = store.grid.signature()
    records = store.records()
    summary = summarize(grid, records)
    out = Path(out)
    figs = report_plots.figures(summary, grid, out)
    section = experiment_of(grid).report_section(grid, records, out)
    if section is not None:
        figs += section.figures
        summary.update(section.summary)
    io.write_text(out / "trials.csv", trials_csv(grid, records))
    io.write_json(
        out / "summary.json",
        {"grid": grid, "storage": store.shown, "study": store.study_name, "provenance": io.provenance(), **summary},
    )
    io.write_text(out / "report.md", markdown(grid, summary, [str(f) for f in figs], section))
    return summary
