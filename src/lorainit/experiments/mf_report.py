"""Findings and Figure 1 of Chen et al. 2025 (HRP) from a matrix-factorization run (``mf.run``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .. import plots


def _f(x, spec=".4g") -> str:
    return "-" if x is None else format(x, spec)


def target_text(cfg: dict) -> str:
    """M as a formula: diag(I_12, 0_20), or diag(5, 4, 3, 0_29) with --singular-values."""
    sv = cfg.get("singular_values") or []
    if sv:
        return f"diag({', '.join(f'{v:g}' for v in sv)}" + (f", 0_{cfg['n'] - len(sv)})" if cfg["n"] > len(sv) else ")")
    return f"diag(I_{cfg['ones']}, 0_{cfg['n'] - cfg['ones']})"


def findings(res: dict, cfg: dict) -> str:
    best, rand = res["optimal_loss"], res["expected_random_asymmetric_loss"]
    lines = [
        f"Matrix factorization toward {target_text(cfg)}, rank {cfg['rank']}, "
        f"{cfg['seeds']} seeds, {cfg['steps']} GD steps (lr {cfg['lr']:g}); HRP preheat: rank {cfg['preheat_rank']}, "
        f"{cfg['preheat_steps']} steps. Optimal rank-{cfg['rank']} loss L* = {best:.4g}; "
        f"expected asymmetric loss of an isotropic random A = {rand:.4g}.",
        "",
        f"{'mode':>10} {'init':>10} {'final loss':>18} {'seeds within ' + format(cfg['tolerance'], '.0%') + ' of L*':>24} "
        f"{'steps to reach':>15} {'+ preheat':>10}",
    ]
    for mode, per_init in res["summary"].items():
        for name, s in per_init.items():
            final = f"{s['final_loss_mean']:.4f} ± {_f(s['final_loss_sem'], '.3f')}"
            lines.append(
                f"{mode:>10} {name:>10} {final:>18} {s['seeds_reaching_optimum']:>13}/{cfg['seeds']:<10} "
                f"{_f(s['steps_to_optimum_mean'], '.1f'):>15} {_f(s['steps_to_optimum_mean_with_preheat'], '.1f'):>10}"
            )
    if res["hrp_preheat_sweep"]:
        lines += ["", "HRP vs preheat length (final loss; mean steps to within tolerance, preheat included):"]
        for t, modes in res["hrp_preheat_sweep"].items():
            lines.append(
                f"  preheat {t:>4} steps: "
                + "; ".join(
                    f"{m} {v['final_loss_mean']:.4f}, {v['seeds_reaching_optimum']}/{cfg['seeds']} reach, {_f(v['steps_to_optimum_mean_with_preheat'], '.1f')} steps"
                    for m, v in modes.items()
                )
            )
    return "\n".join(lines)


def figure(res: dict, cfg: dict, path: Path) -> Path:
    modes = list(res["curves"])
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for i, (name, per_seed) in enumerate(res["curves"][mode].items()):
            y = np.array(per_seed)  # (seeds, steps+1)
            x = np.arange(y.shape[1]) + 1  # step + 1, for the log axis
            c = plots.color(name, i)
            if name == "target":  # dashed and on top: it coincides with hrp where HRP finds M's directions
                ax.plot(x, y.mean(0), "--", color="black", lw=1.5, zorder=4, label=name)
            else:
                ax.plot(
                    x,
                    y.mean(0),
                    "-",
                    color=c,
                    label=name,
                    lw=4 if name == "hrp" else 1.2,
                    alpha=0.6 if name == "hrp" else 1,
                )
                ax.fill_between(x, y.min(0), y.max(0), color=c, alpha=0.2)
            if name == "hrp":
                ax.plot(
                    x + cfg["preheat_steps"],
                    y.mean(0),
                    ":",
                    color=c,
                    label=f"hrp, x shifted by {cfg['preheat_steps']} preheat steps",
                )
        ax.axhline(
            res["optimal_loss"],
            color="gray",
            lw=0.8,
            label=f"optimal rank-{cfg['rank']} loss {res['optimal_loss']:.3g}",
        )
        if mode == "asymmetric":
            ax.axhline(
                res["expected_random_asymmetric_loss"],
                color="gray",
                ls="--",
                lw=0.8,
                label=f"expected, random A: {res['expected_random_asymmetric_loss']:.4g}",
            )
        ax.set(
            xscale="log",
            xlabel="step + 1",
            ylabel="1/2 ||BA - M||²",
            title=f"{mode} LoRA toward M = {target_text(cfg)}",
        )
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # one legend for both panels, below them
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.02),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    plots.caption(
        fig,
        f"Lines: the mean over {cfg['seeds']} seeds; bands: their min to max. hrp's own steps start after its "
        "preheat (dotted: the same curve moved right by the preheat's steps).",
    )
    plots.save(fig, path)
    return path
