"""Matplotlib figures as a paper would show them. Headless (Agg); every function writes one PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import write_atomic  # noqa: E402

COLORS = {"init_a": "tab:blue", "init_b": "tab:red"}
LABELS = {"init_a": "Init[A]", "init_b": "Init[B]"}


def color(name: str, i: int = 0) -> str:
    return COLORS.get(name, f"C{i + 2}")


def label(name: str) -> str:
    return LABELS.get(name, name)


def save(fig, path: Path) -> None:
    """Render to memory, then write atomically: a crash never leaves a half-written PNG."""
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    write_atomic(Path(path), buf.getvalue())


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
            ax.plot(w[cens], lr[cens], "^", ms=10, mfc="none", color=color(name, i), label=f"{label(name)}: grid edge (lower bound)")
        anchors.append(lr[ok][0])
    all_w = sorted({w for s in series.values() for w in s["widths"]})
    if anchors:
        reference_lines(ax, all_w, float(np.exp(np.mean(np.log(anchors)))))
    ax.set(xscale="log", yscale="log", xlabel="width n", ylabel="learning rate", title=title)
    ax.set_xticks(all_w, [str(w) for w in all_w])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
