"""Sweep figures: the init x LR heatmap of the metric (Hayou et al. 2024, Fig. 4/5 style: mean and
standard error over seeds in each cell, diverged cells greyed) and metric-vs-LR curves per init with
the selected LR starred. One PNG of each per group of the extra dimensions (toy width, mf mode)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np

from .. import plots


def _tag(group: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(f"{k}{v}" for k, v in group.items())) or "all"


def selection_label(grid: dict) -> str:
    """What a trial's value is, as the study's experiment says (``Experiment.selection_label``)."""
    from .report import experiment_of

    return experiment_of(grid).selection_label(grid)


def heatmap(group: dict, grid: dict, path: Path) -> Path:
    inits = list(group["inits"])
    lrs = [r["lr"] for r in group["inits"][inits[0]]["rows"]]
    M = np.full((len(inits), len(lrs)), np.nan)
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(lrs), 0.9 + 0.6 * len(inits)))
    for i, init in enumerate(inits):
        for j, r in enumerate(group["inits"][init]["rows"]):
            if not r["diverged"] and r["val_mean"] is not None:
                M[i, j] = r["val_mean"]
    cmap = plt.get_cmap("viridis" if grid["direction"] == "maximize" else "viridis_r").with_extremes(bad="lightgrey")
    finite = M[np.isfinite(M)]
    log = (grid["metric"].endswith("loss") or grid["metric"] == "perplexity") and finite.size and finite.min() > 0
    norm = matplotlib.colors.LogNorm() if log else None
    im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, norm=norm, aspect="auto")
    for i, init in enumerate(inits):
        s = group["inits"][init]
        for j, r in enumerate(s["rows"]):
            if not r.get("in_grid", True):
                text = ""  # another init's extra LR
            elif r["diverged"]:
                text = f"div\n{r['diverged']}/{r['finished']}"
            elif r["val_mean"] is None:
                text = "-"
            else:
                text = f"{r['val_mean']:.3g}" + (f"\n±{r['val_se']:.1g}" if r["val_se"] is not None else "")
            bold = r["lr"] == s["selected_lr"]
            rgb = (0.8, 0.8, 0.8) if np.isnan(M[i, j]) else im.cmap(im.norm(M[i, j]))[:3]
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=6.5,
                fontweight="bold" if bold else "normal",
                color="black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5 else "white",
            )
    ax.set_xticks(range(len(lrs)), [f"{lr:.2g}" for lr in lrs], rotation=45, fontsize=7)
    ax.set_yticks(range(len(inits)), [plots.label(i) for i in inits], fontsize=8)
    title = ", ".join(f"{k} {v}" for k, v in group["group"].items())
    ax.set(xlabel="learning rate", title=f"{selection_label(grid)}{': ' + title if title else ''}; bold = selected LR")
    bar = fig.colorbar(im, ax=ax, fraction=0.04)
    if log:
        plots.tidy_log_axis(bar.ax.yaxis)
    plots.caption(fig, "Each cell: mean ± standard error over seeds; grey 'div k/n': k of n seeds diverged.")
    plots.save(fig, path)
    return path


def curves(group: dict, grid: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, (init, s) in enumerate(group["inits"].items()):
        c = plots.color(init, i)
        rows = [r for r in s["rows"] if not r["diverged"] and r["val_mean"] is not None]
        x = [r["lr"] for r in rows]
        y = [r["val_mean"] for r in rows]
        err = [r["val_se"] or 0.0 for r in rows]
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=3, capsize=2, color=c, label=plots.label(init))
        if s["selected_lr"] is not None:
            ax.plot([s["selected_lr"]], [s["val_at_selected"][0]], "*", ms=14, color=c, markeredgecolor="black")
        if s["first_diverging_lr"] is not None:
            ax.axvline(s["first_diverging_lr"], color=c, ls=":", lw=1)
    title = ", ".join(f"{k} {v}" for k, v in group["group"].items())
    ax.set(xscale="log", xlabel="learning rate", ylabel=selection_label(grid), title=title or None)
    plotted = [v for line in ax.get_lines() for v in line.get_ydata()]
    if (grid["metric"].endswith("loss") or grid["metric"] == "perplexity") and any(v > 0 for v in plotted):
        ax.set_yscale("log")  # (not with nothing finished yet: an empty log axis is an error)
        plots.tidy_log_axis(ax.yaxis)
    if plotted:
        plots.tidy_log_axis(ax.xaxis)
    ax.legend(
        fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )  # (beside the curves: ten methods would cover them)
    plots.caption(
        fig,
        "Mean ± standard error over seeds at LRs where no seed diverged; star: the selected LR; dotted: the "
        "init's first LR where a seed diverged.",
    )
    plots.save(fig, path)
    return path


def figures(summary: dict, grid: dict, out: Path) -> list[Path]:
    paths = []
    for g in summary["groups"]:
        tag = _tag(g["group"])
        paths.append(heatmap(g, grid, Path(out) / f"heatmap_{tag}.png"))
        paths.append(curves(g, grid, Path(out) / f"curves_{tag}.png"))
    return paths
