"""What a teacher-student study found: a plain-text summary and the figures of Hayou et al. 2024.

Figures: ``opt_lr_vs_width.png`` (Fig. 2: optimal LR vs width with n^-1 and n^-1/2 references,
and the max-stable LR), ``feature_norms.png`` (Fig. 3: |Z_A|, |Z_B| over steps at the smallest and
largest width, each init at its optimal LR), ``loss_vs_lr.png`` (final loss vs LR per width).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .. import plots


def _fmt(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def findings(study: dict) -> str:
    an = study["analysis"]
    inits = list(an["per_width"])
    lines = [
        f"Teacher-student study: {len(study['widths'])} widths, inits {', '.join(inits)}, "
        f"{study['config']['seeds']} seeds, {len(study['config']['lrs'])} LRs, {study['config']['steps']} steps "
        f"(optimal LR chosen on final {an['select_on']} loss; stable = no divergence and per-coordinate |Z_B| < {an['zb_bound']:g})",
        "",
        f"{'width':>6} "
        + " ".join(f"{h + ' ' + plots.label(i):>22}" for i in inits for h in ("opt LR", "max-stable LR", "loss@opt")),
    ]
    for k in range(len(study["widths"])):
        cells = []
        for i in inits:
            r = an["per_width"][i][k]
            opt = f"{_fmt(r['opt_lr'])} [{_fmt(r['opt_lr_seed_min'])},{_fmt(r['opt_lr_seed_max'])}]" + (
                "*" if r["opt_at_grid_edge"] else ""
            )
            ms = (">=" if r["max_stable_censored"] else "") + _fmt(r["max_stable_lr"])
            cells += [opt, ms, _fmt(r["opt_loss_mean"], ".4g")]
        lines.append(f"{an['per_width'][inits[0]][k]['width']:>6} " + " ".join(f"{c:>22}" for c in cells))
    lines += ["  [lo,hi]: per-seed optima; *: optimum at the grid edge; >=: grid ends before instability", ""]
    for i, s in an["slopes"].items():
        ms, op = s["max_stable"], s["optimal"]
        theory = f" (theory {s['theory_max_stable']:g})" if s["theory_max_stable"] is not None else ""
        sens = ", ".join(f"{_fmt(v, '+.2f')} at bound {b}" for b, v in s["max_stable_vs_zb_bound"].items())
        lines.append(
            f"{plots.label(i)}: max-stable LR slope vs width {_fmt(ms['slope'], '+.2f')} ± {_fmt(ms['stderr'], '.2f')}"
            f" over {ms['points']} widths{theory}; optimal LR slope {_fmt(op['slope'], '+.2f')} ± {_fmt(op['stderr'], '.2f')}"
            f" [robustness: {sens}]"
        )
    ch = an["checks"]
    if ch:
        ok = ch["opt_lr_a_ge_b_at_width_ge_512"]
        verdict = "holds" if ok and all(ok.values()) else "does NOT hold" if ok else "not tested (no width >= 512)"
        lines.append(
            f"Paper: optimal LR of Init[A] >= Init[B] at every width >= 512: {verdict} ({', '.join(f'{w}: {v}' for w, v in ok.items())})"
        )
        z = ch["za_at_largest_width"]
        rel = "larger" if (z["init_a"] or 0) > (z["init_b"] or 0) else "NOT larger"
        lines.append(
            f"Paper: |Z_A| at width {z['width']} larger under Init[A]: {rel} ({_fmt(z['init_a'])} vs {_fmt(z['init_b'])}, final step at each init's optimal LR)"
        )
    return "\n".join(lines)


def figures(study: dict, out: Path) -> list[Path]:
    an = study["analysis"]
    out = Path(out)
    paths = [out / "opt_lr_vs_width.png", out / "feature_norms.png", out / "loss_vs_lr.png"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in (
        (axes[0], "opt_lr", f"optimal LR (final {an['select_on']} loss)"),
        (axes[1], "max_stable_lr", "max-stable LR"),
    ):
        series = {}
        for i, rows in an["per_width"].items():
            s = {"widths": [r["width"] for r in rows], "lr": [np.nan if r[key] is None else r[key] for r in rows]}
            if key == "opt_lr":
                s |= {"lo": [r["opt_lr_seed_min"] for r in rows], "hi": [r["opt_lr_seed_max"] for r in rows]}
            else:
                s["censored"] = [r["max_stable_censored"] for r in rows]
            series[i] = s
        plots.lr_vs_width(ax, series, title)
    fig.tight_layout(w_pad=3)
    plots.caption(
        fig,
        "Optimal LR: the grid LR with the lowest seed-mean loss; bars span the per-seed optima. Max-stable LR: "
        "the largest LR at which every seed stays stable; open triangles: stable at the grid's top (a lower "
        "bound). Grey lines: n^-1 and n^-1/2 through the first point, for slope only.",
    )
    plots.save(fig, paths[0])
    plots.save(_feature_figure(study), paths[1])
    plots.save(_loss_figure(study), paths[2])
    return paths


def _feature_figure(study: dict):
    an = study["analysis"]
    widths = sorted(study["widths"], key=lambda w: w["width"])
    chosen = [widths[0], widths[-1]] if len(widths) > 1 else widths
    fig, axes = plt.subplots(2, len(chosen), figsize=(5.5 * len(chosen), 7), squeeze=False)
    for col, res in enumerate(chosen):
        k = [w["width"] for w in widths].index(res["width"])
        for i, (name, rows) in enumerate(an["per_width"].items()):
            lr = rows[k]["opt_lr"]
            for run in (r for r in res["runs"] if r["init"] == name and r["lr"] == lr):
                style = ["-", "--", ":", "-."][run["seed"] % 4]
                for row, key in enumerate(("za", "zb")):
                    y = [np.nan if v is None else v for v in run[key]]
                    axes[row, col].plot(
                        res["steps"],
                        y,
                        style,
                        color=plots.color(name, i),
                        label=f"{plots.label(name)} lr={lr:.2g} seed {run['seed']} loss={_fmt(run['train_loss'][-1], '.3g')}",
                    )
        for row, key in enumerate(("|Z_A|", "|Z_B|")):
            axes[row, col].set(
                title=f"{key}, width {res['width']}", xlabel="step", ylabel=f"mean {key} over train data", yscale="log"
            )
            plots.tidy_log_axis(axes[row, col].yaxis)
            axes[row, col].legend(fontsize=8)
    fig.tight_layout()
    plots.caption(
        fig,
        "Each init at its optimal LR of that width; one line per seed (solid, dashed, dotted). Z_A = A z and "
        "Z_B = B A z for the hidden features z of the training inputs (Hayou et al. 2024, Fig. 3).",
    )
    return fig


def _loss_figure(study: dict):
    an = study["analysis"]
    n = len(study["widths"])
    cols = min(4, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4 * cols, 3.3 * math.ceil(n / cols)), squeeze=False)
    for k in range(n):
        ax = axes.flat[k]
        drawn = False  # any finite loss in this panel (none: every run of the width diverged)
        for i, (name, rows) in enumerate(an["per_width"].items()):
            r = rows[k]
            lrs = np.array(r["loss_by_lr"]["lrs"])
            per_seed = np.array(r["loss_by_lr"]["per_seed"], float)  # (seeds, lrs)
            per_seed[~np.isfinite(per_seed)] = np.nan
            whole = ~np.isnan(per_seed).any(0)  # every seed finished: the mean is a mean over all of them
            c = plots.color(name, i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an LR where every seed diverged
                mean = np.nanmean(per_seed, 0)
                ax.plot(lrs[whole], mean[whole], "o-", ms=3, color=c, label=plots.label(name))
                ax.fill_between(
                    lrs[whole], np.nanmin(per_seed, 0)[whole], np.nanmax(per_seed, 0)[whole], color=c, alpha=0.2
                )
            part = ~whole & ~np.isnan(mean)
            drawn |= bool(whole.any() or part.any())
            if part.any():  # some seeds diverged: the survivors' mean, marked
                ax.plot(lrs[part], mean[part], "x", ms=7, mew=2, color=c, label=f"{plots.label(name)}: a seed diverged")
            if r["opt_lr"] is not None:
                ax.plot([r["opt_lr"]], [r["opt_loss_mean"]], "*", ms=12, color=c)
        ax.set(title=f"width {rows[k]['width']}", xlabel="learning rate", ylabel=f"final {an['select_on']} loss")
        if not drawn:  # (a log axis of no data cannot be drawn)
            ax.text(0.5, 0.5, "every run diverged at every LR", transform=ax.transAxes, ha="center", va="center")
            ax.set(xticks=[], yticks=[])
            continue
        ax.set(xscale="log", yscale="log")
        plots.tidy_log_axis(ax.yaxis)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    plots.caption(
        fig,
        "Line: the mean over seeds where every seed finished; band: their min to max; x: LRs where a seed "
        "diverged (the mean of the others); star: the optimal LR.",
    )
    return fig
