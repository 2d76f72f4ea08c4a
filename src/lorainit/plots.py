"""Matplotlib figures as a paper would show them. Headless (Agg); every function writes one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import write_atomic  # noqa: E402

COLORS = {"init_a": "tab:blue", "init_b": "tab:red", "full": "black"}
OTHERS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "tab:green", "tab:orange", "navy")
LABELS = {"init_a": "Init[A]", "init_b": "Init[B]", "full": "full FT"}


def color(name: str, i: int = 0) -> str:
    """Init[A] blue, Init[B] red and full FT black as everywhere in lorainit; the method at position ``i`` of a figure
    one of ``OTHERS`` (none of those three: the nine other registered inits fit without a repeat)."""
    return COLORS.get(name, OTHERS[i % len(OTHERS)])


def label(name: str) -> str:
    return LABELS.get(name, name)


def save(fig, path: Path, *, tight: bool = True) -> None:
    """Render to memory, then write atomically: a crash never leaves a half-written PNG. ``tight``: cropped to what
    is drawn (one more drawing pass; False for a figure laid out by hand)."""
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight" if tight else None)
    plt.close(fig)
    write_atomic(Path(path), buf.getvalue())


def plain(v: float) -> str:
    """A tick value as people write it: 1000, 20, 2.5, 0.02, 0.0003; 1e-5 below 1e-4."""
    if v >= 1 and abs(v - round(v)) <= 1e-9 * v:
        return f"{round(v):d}"
    return f"{v:.2g}" if v >= 1e-4 else f"{v:.0e}".replace("e-0", "e-")


def tidy_log_axis(axis) -> None:
    """Plain-number tick labels on a log axis (0.02, not 2x10^-2); under two decades, also the 2s and 5s in between,
    so that a narrow range still has a few labels and none overlap. Call once the data are plotted."""
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: plain(v))
    axis.set_major_formatter(fmt)
    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo < 100:
        axis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(fmt)
    else:
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def caption(fig, text: str) -> None:
    """A line under everything the figure shows (axes, tick labels, legends) saying what its bands, bars and markers are."""
    fig.canvas.draw()  # the layout, so that the caption goes below all of it
    renderer = fig.canvas.get_renderer()
    to_fig = fig.transFigure.inverted()
    boxes = [a.get_tightbbox(renderer) for a in fig.axes] + [leg.get_window_extent(renderer) for leg in fig.legends]
    bottom = min(b.transformed(to_fig).y0 for b in boxes if b is not None)
    fig.text(0.5, bottom - 0.02, text, ha="center", va="top", fontsize=8, wrap=True)


def width_axis(ax, widths) -> None:
    """A log-log plot against width: one labelled tick per width on x, plain numbers on the log y axis."""
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    tidy_log_axis(ax.yaxis)


def reference_lines(ax, widths, anchor: float) -> None:
    """C1 n^-1 and C2 n^-1/2 through ``anchor`` at the smallest width (constants only for visualization)."""
    w = np.array(sorted(widths), dtype=float)
    for power, style in ((-1.0, ":"), (-0.5, "--")):
        ax.plot(w, anchor * (w / w[0]) ** power, style, color="gray", lw=1, label=f"$n^{{{power:g}}}$")


def lr_vs_width(ax, series: dict[str, dict], title: str) -> None:
    """``series``: name -> {widths, lr, lo, hi, censored}; [lo, hi] (per-seed optima) as a vertical bar,
    censored points as up-triangles."""
    anchors = []
    for i, (name, s) in enumerate(series.items()):
        w, lr = np.array(s["widths"], float), np.array(s["lr"], float)
        ok = ~np.isnan(lr)
        if not ok.any():
            continue
        ax.plot(w[ok], lr[ok], marker="o", color=color(name, i), label=label(name))
        if "lo" in s:  # the per-seed optima; the seed-mean optimum need not lie between them
            lo, hi = np.array(s["lo"], float)[ok], np.array(s["hi"], float)[ok]
            ax.vlines(w[ok], np.minimum(lo, lr[ok]), np.maximum(hi, lr[ok]), color=color(name, i), lw=1)
            ax.plot(w[ok], lo, "_", w[ok], hi, "_", color=color(name, i), ms=8)
        cens = np.array(s.get("censored", [False] * len(w)), bool) & ok
        if cens.any():
            ax.plot(
                w[cens],
                lr[cens],
                "^",
                ms=10,
                mfc="none",
                color=color(name, i),
                label=f"{label(name)}: grid edge (lower bound)",
            )
        anchors.append(lr[ok][0])
    all_w = sorted({w for s in series.values() for w in s["widths"]})
    if anchors:
        reference_lines(ax, all_w, float(np.exp(np.mean(np.log(anchors)))))
    ax.set(xscale="log", yscale="log", xlabel="width n", ylabel="learning rate", title=title)
    width_axis(ax, all_w)
    ax.legend(fontsize=8)
