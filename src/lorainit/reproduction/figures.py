"""The reproduction's figures, one PNG per call, each with a caption saying what its lines, bands and markers are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots
from ..plots import plt
from .paired import per_seed

INITS = ("init_a", "init_b")


def _per_width(st, init: str, key: str) -> tuple[list[int], np.ndarray]:
    """Widths and a (data seeds, widths) array of ``key`` (NaN where missing)."""
    widths = [p["width"] for p in st.toy[0]["analysis"]["per_width"][init]]
    rows = []
    for r in st.toy:
        got = {p["width"]: p.get(key) for p in r["analysis"]["per_width"][init]}
        rows.append([got.get(w) if got.get(w) is not None else np.nan for w in widths])
    return widths, np.array(rows, dtype=float)


def toy_lr_vs_width(st, key: str, path: Path) -> Path:
    """Optimal or max-stable LR vs width: one thin line per data seed, the geometric mean bold, n^-1 and n^-1/2 dotted."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    anchors = []
    for i, init in enumerate(INITS):
        w, y = _per_width(st, init, key)
        for row in y:
            ax.plot(w, row, color=plots.color(init, i), lw=0.7, alpha=0.5)
        mean = np.exp(np.nanmean(np.log(y), axis=0))
        ax.plot(w, mean, marker="o", color=plots.color(init, i), lw=2, label=plots.label(init))
        anchors.append(mean[0])
    plots.reference_lines(ax, w, float(np.exp(np.mean(np.log(anchors)))))
    what = "max stable LR" if key == "max_stable_lr" else "optimal LR"
    ax.set(xscale="log", yscale="log", xlabel="width n", ylabel=what, title=f"Toy model: {what} vs width")
    plots.width_axis(ax, w)
    ax.legend(fontsize=8)
    plots.caption(
        fig,
        f"Thin lines: each of {len(st.toy)} data seeds (3 LoRA seeds each); bold: their geometric mean; "
        "gray: n^-1 and n^-1/2 through the first point.",
    )
    plots.save(fig, path)
    return path


def toy_features(st, path: Path) -> Path:
    """|Z_A| and |Z_B| at each init's optimal LR (final step) vs width."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in zip(axes, ("za_final_at_opt", "zb_final_at_opt"), ("|Z_A|", "|Z_B|")):
        for i, init in enumerate(INITS):
            w, y = _per_width(st, init, key)
            for row in y:
                ax.plot(w, row, color=plots.color(init, i), lw=0.7, alpha=0.5)
            ax.plot(
                w,
                np.exp(np.nanmean(np.log(y), axis=0)),
                marker="o",
                color=plots.color(init, i),
                lw=2,
                label=plots.label(init),
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="width n",
            ylabel=f"{name} (per coordinate)",
            title=f"{name} at the optimal LR",
        )
        plots.width_axis(ax, w)
        ax.legend(fontsize=8)
    plots.caption(
        fig, "Final step of the run at each init's optimal LR; thin lines: each data seed; bold: geometric mean."
    )
    plots.save(fig, path)
    return path


def mf_final(st, path: Path) -> Path:
    """Per target: asymmetric final loss relative to L* by init (left), classic steps to L* with and without HRP's
    preheat (right)."""
    from .mf_claims import mf_default

    runs = mf_default(st)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    inits = ("gaussian", "orthogonal", "hrp", "target")
    x = np.arange(len(inits))
    for j, (t, r) in enumerate(runs.items()):
        a, c = r["summary"]["asymmetric"], r["summary"]["classic"]
        rel = [a[i]["final_loss_mean"] / r["optimal_loss"] for i in inits]
        axes[0].bar(x + 0.4 * j - 0.2, rel, 0.4, label=t, color=f"C{j}")
        steps = [c[i]["steps_to_optimum_mean"] or np.nan for i in inits]
        pre = [(c[i]["steps_to_optimum_mean_with_preheat"] or np.nan) - s for i, s in zip(inits, steps)]
        axes[1].bar(x + 0.4 * j - 0.2, steps, 0.4, color=f"C{j}", label=f"{t}: main run")
        axes[1].bar(
            x + 0.4 * j - 0.2, pre, 0.4, bottom=steps, color=f"C{j}", alpha=0.35, hatch="//", label=f"{t}: HRP preheat"
        )
    axes[0].axhline(1.0, color="gray", lw=0.8)
    axes[0].set(xticks=x, xticklabels=inits, ylabel="final loss / L*", title="Asymmetric LoRA (A frozen): final loss")
    axes[1].set(
        xticks=x, xticklabels=inits, ylabel="steps to within 1% of L*", title="Classic LoRA: steps to the optimum"
    )
    for ax in axes:
        ax.legend(fontsize=8)
    plots.caption(
        fig, "Means over seeds; 'target' starts at M's own top singular directions (a reference, not a method)."
    )
    plots.save(fig, path)
    return path


def mf_rank(st, path: Path) -> Path:
    """HRP's asymmetric final loss above L* vs preheat rank, per target (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, (t, runs) in enumerate(st.mf.items()):
        ranks = sorted(runs)
        gap = [
            max(runs[k]["summary"]["asymmetric"]["hrp"]["final_loss_mean"] / runs[k]["optimal_loss"] - 1, 1e-7)
            for k in ranks
        ]
        ax.plot(ranks, gap, marker="o", color=f"C{j}", label=t)
    ax.set(
        yscale="log",
        xlabel="preheat rank",
        ylabel="(final loss - L*) / L*",
        title="HRP, asymmetric LoRA: distance to the optimum",
    )
    ax.legend(fontsize=8)
    plots.caption(fig, "Mean over seeds of HRP's final loss; values at or below 1e-7 are drawn at 1e-7 (L* reached).")
    plots.save(fig, path)
    return path


def task_curves(s, path: Path, shared_lr: float) -> Path:
    """Validation metric vs LR per init (mean over seeds, s.e. bars), the shared LR dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (init, r) in enumerate(s.per_init().items()):
        rows = [x for x in r["rows"] if x["val_mean"] is not None and not x["diverged"]]
        if not rows:
            continue
        lr = [x["lr"] for x in rows]
        ax.errorbar(
            lr,
            [x["val_mean"] for x in rows],
            yerr=[x["val_se"] or 0 for x in rows],
            marker="o",
            ms=3,
            color=plots.color(init, i),
            label=plots.label(init),
            lw=1.2,
            capsize=2,
        )
        if r["selected_lr"] is not None:
            sel = next(x for x in rows if x["lr"] == r["selected_lr"])
            ax.plot(r["selected_lr"], sel["val_mean"], "*", ms=11, color=plots.color(init, i))
    ax.axvline(shared_lr, color="gray", ls="--", lw=0.8)
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel=f"validation {s.summary['metric']}",
        title=f"{s.name}: every init across LRs",
    )
    vals = [x["val_mean"] for r in s.per_init().values() for x in r["rows"] if x["val_mean"] is not None]
    if s.sign > 0 and vals:  # perplexity: the diverged top LRs would squash the rest
        ax.set_ylim(min(vals) * 0.98, min(vals) * 1.25)
    plots.tidy_log_axis(ax.xaxis)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.caption(
        fig,
        "Mean over seeds with s.e. bars; star: the LR selected on validation; dashed: the shared LR 2e-4 of claim L1.",
    )
    plots.save(fig, path)
    return path


def _bar_range(ax, values: list[float], pad: float) -> None:
    """The y range of a bar figure around its values (``pad`` of their spread either side); with none, a note saying so."""
    if values:
        lo, hi = min(values), max(values)
        spread = (
            hi - lo if hi - lo > 1e-9 * max(1.0, abs(hi)) else 0.05 * (abs(hi) or 1.0)
        )  # equal values: 5% of the value
        ax.set_ylim(lo - pad * spread, hi + pad * spread)
    else:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "nothing to show yet:\nno LR has every seed finished\n(the study is unfinished)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
            color="gray",
        )


def shared_vs_tuned(s, lr: float, path: Path, inits: list[str]) -> Path:
    """Test metric per init (of ``inits``) at its tuned LR and at the one shared LR."""

    tuned = [s.per_init()[i]["test_at_selected"] for i in inits]
    seeds = len(s.grid["dims"]["seed"])
    shared = [v if len(v) == seeds else [] for v in (list(per_seed(s, i, lr).values()) for i in inits)]
    x = np.arange(len(inits))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(
        x - 0.2,
        [t[0] if t[0] is not None else np.nan for t in tuned],
        0.4,
        yerr=[t[1] or 0 for t in tuned],
        label="tuned LR",
        color="C0",
    )
    ax.bar(
        x + 0.2,
        [np.mean(v) if v else np.nan for v in shared],
        0.4,
        yerr=[np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0 for v in shared],
        label=f"shared LR {lr:.3g}",
        color="C1",
    )
    _bar_range(ax, [v for t in tuned for v in [t[0]] if v is not None] + [np.mean(v) for v in shared if v], 0.15)
    ax.set(xticks=x, ylabel=f"test {s.summary['metric']}", title=f"{s.name}: tuned vs shared LR")
    ax.set_xticklabels(inits, rotation=30, ha="right")
    ax.legend(fontsize=8)
    plots.caption(fig, "Mean over seeds with s.e. bars; a missing bar: not every seed finished there.")
    plots.save(fig, path)
    return path


def full_vs_lora(s, path: Path, methods: list[str]) -> Path:
    """Test metric of each method at its selected LR (s.e. bars), the LR written on its bar."""
    rows = [s.per_init()[m] for m in methods]
    x = np.arange(len(methods))
    means = [r["test_at_selected"][0] if r["selected_lr"] is not None else np.nan for r in rows]
    errs = [(r["test_at_selected"][1] or 0) if r["selected_lr"] is not None else 0 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    order = list(s.per_init())  # each method in the colour task_curves gives it
    ax.bar(x, means, 0.6, yerr=errs, color=[plots.color(m, order.index(m)) for m in methods])
    for i, r in enumerate(rows):
        if r["selected_lr"] is not None:
            ax.annotate(
                f"LR {r['selected_lr']:.2g}",
                (x[i], means[i] + errs[i]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 6),
                textcoords="offset points",
            )
    _bar_range(
        ax, [v for m, e in zip(means, errs) if not np.isnan(m) for v in (m - e, m + e)], 0.3
    )  # the bars' whiskers too
    ax.set(
        xticks=x,
        ylabel=f"test {s.summary['metric']}",
        title=f"{s.name}: full fine-tuning vs LoRA, each at its tuned LR",
    )
    ax.set_xticklabels([plots.label(m) for m in methods])
    plots.caption(
        fig, "Mean over seeds with s.e. bars at each method's LR selected on validation (written on the bar)."
    )
    plots.save(fig, path)
    return path
