"""``lorainit report``: what a sweep found (the numbers: ``summary``), written out as report.md, summary.json,
trials.csv (one row per trial attempt) and PNG figures, and the winning run's adapter on request (--export-best).
'*' marks a selected LR at the edge of the init's LRs (widen the grid: ``lorainit sweep --widen``). An experiment
adds its own section (``Experiment.report_section``: toy, the paper's optimal / max-stable LR vs width analysis) and
says what its values are (``Experiment.note``).
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path

from .. import io
from .summary import group_names, summarize


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
            " (at the edge of its LRs: the optimum may lie outside; widen the grid: --widen)"
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
        if run and Path(run).exists():
            lines.append(
                f"  Winning run: trial {b['trial']['number']} (seed {b['trial']['seed']}), `{run}`; its adapter: "
                "`lorainit report STUDY --export-best DIR`."
            )
        elif run:
            lines.append(
                f"  Winning run: trial {b['trial']['number']} (seed {b['trial']['seed']}), `{run}` (not kept in this "
                "folder: the run folders were left out of this copy)."
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


def _extra(grid: dict) -> str:
    """The grid line's note on extra (init, LR) points added by ``--widen``; '' for a plain product grid."""
    extra = grid.get("extra", [])
    if not extra:
        return ""
    shown = ", ".join(
        f"{e['init']} at {e['lr']:.3g}" + "".join(f" ({k} {v})" for k, v in e.items() if k not in ("init", "lr"))
        for e in extra
    )
    return f" + {len(extra)} extra LRs of single inits ({shown}; --widen) x {len(grid['dims']['seed'])} seeds"


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
        + "".join(f" x {len(grid['dims'][g])} {g}s" for g in group_names(grid))
        + _extra(grid)
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
            cells = [
                "" if not r.get("in_grid", True) else "div" if r["diverged"] else _fmt(r["val_mean"], r["val_se"])
                for r in s["rows"]
            ]
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["*: selected LR at the edge of the init's LRs: the optimum may lie outside them (`--widen`).", ""]
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


def located(run: str | None, folder: Path) -> str | None:
    """A run folder as its trial recorded it, or, where that path is gone (the sweep folder was moved or copied),
    where the sweep folder ``folder`` keeps it: trials/ under the same name."""
    if not run or Path(run).exists():
        return run
    return str(Path(folder) / "trials" / Path(run).name)


def write(store, out: Path, folder: Path | None = None) -> dict:
    """Everything ``lorainit report`` writes into ``out``, from a loaded ``Store`` of the sweep folder ``folder``
    (default ``out``); returns the summary."""
    from . import report_plots

    grid = store.grid.signature()
    records = store.records()
    summary = summarize(grid, records)
    out = Path(out)
    for g in summary["groups"]:
        if g["best"] is not None:
            g["best"]["trial"]["run"] = located(g["best"]["trial"]["run"], folder or out)
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
