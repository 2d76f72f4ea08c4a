"""The toy-model claims of Hayou, Ghosh, Yu 2024 (H1-H3: Sec. 3.7, Thm 1-2, Figs 2-3), judged on the committed
``lorainit toy --preset paper`` studies, one per data seed (``load.Studies.toy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import figures
from .claims import FAILS, HOLDS, OPEN, Verdict, claim, not_run
from .load import Studies
from .stats import fmt_ci, loglog_slope, mean_ci

TOY_SETUP = (
    "Teacher-student model of the paper (eq. 4, App. B.1.1): `lorainit toy --preset paper` (rank 4, 29 LRs "
    "2^-15..2^-1, 3 LoRA seeds, 400 full-batch AdamW steps, optimal LR chosen on the final train loss) with widths "
    "{widths} and {k} data seeds (teacher and data; the paper uses one). Stable = no divergence and "
    "per-coordinate |Z_B| < 10."
)


def _toy_setup(st: Studies) -> str:
    return TOY_SETUP.format(widths=", ".join(map(str, st.toy[0]["config"]["widths"])), k=len(st.toy))


def _slopes(st: Studies, init: str, kind: str, bound: str | None = None) -> list[float]:
    s = [r["analysis"]["slopes"][init] for r in st.toy]
    return [x[kind]["slope"] if bound is None else x["max_stable_vs_zb_bound"][bound] for x in s]


@claim
def h1(st: Studies, figdir: Path) -> Verdict:
    """Max stable LR ~ n^-1/2 under Init[A], n^-1 under Init[B]. Rule: holds if each init's slope (mean over data
    seeds, 95% t interval) contains its theory value and Init[B]'s slope is below Init[A]'s in every data seed; does
    not hold if the order fails or an interval misses its theory value by more than 0.25; else inconclusive. The same
    rule is applied at the other |Z_B| bounds the toy records (the sensitivity to the stability definition)."""
    title, paper = (
        "Max stable LR vs width",
        (
            "Thm 1-2, Fig. 2: the largest stable LR scales as n^-1/2 under Init[A] and "
            "n^-1 under Init[B] (gamma-operator analysis, width n)."
        ),
    )
    if not st.toy:
        return not_run("H1", title, paper, "toy")

    def judge(a: list, b: list) -> tuple[str, str]:
        if None in a or None in b:
            return OPEN, "a data seed has no slope (too few widths with a finite max stable LR)"
        (ma, ha), (mb, hb) = mean_ci(a), mean_ci(b)
        order = all(x < y for x, y in zip(b, a))
        if ha is None:
            return OPEN, "one data seed: no interval"
        miss = max(abs(ma + 0.5) - ha, abs(mb + 1.0) - hb)
        if not order or miss > 0.25:
            return (
                FAILS,
                "Init[B] is not steeper in every data seed"
                if not order
                else f"an interval misses its theory value by {miss:.2f}",
            )
        if miss <= 0:
            return HOLDS, "both intervals contain the theory values and Init[B] is steeper in every data seed"
        return OPEN, f"an interval misses its theory value by {miss:.2f} (under 0.25)"

    a, b = _slopes(st, "init_a", "max_stable"), _slopes(st, "init_b", "max_stable")
    verdict, reason = judge(a, b)
    bound = st.toy[0]["config"]["zb_bound"]
    if verdict == OPEN and (None in a or None in b):
        return Verdict(
            "H1",
            title,
            paper,
            _toy_setup(st),
            [],
            verdict,
            reason,
            [figures.toy_lr_vs_width(st, "max_stable_lr", figdir / "h1_max_stable_lr.png")],
        )
    nums = [
        (
            f"Slope of log max-stable LR vs log n (95% t interval over {len(a)} data seeds; per seed {', '.join(f'{x:.2f}' for x in a)} "
            f"and {', '.join(f'{x:.2f}' for x in b)}): Init[A] **{fmt_ci(*mean_ci(a), '.2f')}** (theory -0.5), "
            f"Init[B] **{fmt_ci(*mean_ci(b), '.2f')}** (theory -1), at |Z_B| bound {bound:g}."
        )
    ]
    for other in st.toy[0]["analysis"]["slopes"]["init_a"]["max_stable_vs_zb_bound"]:
        oa, ob = _slopes(st, "init_a", "", other), _slopes(st, "init_b", "", other)
        v, _ = judge(oa, ob)
        if v != OPEN or None not in oa + ob:
            nums.append(
                f"At |Z_B| bound {other}: Init[A] {fmt_ci(*mean_ci(oa), '.2f')}, Init[B] {fmt_ci(*mean_ci(ob), '.2f')}: {v}."
            )
    figs = [figures.toy_lr_vs_width(st, "max_stable_lr", figdir / "h1_max_stable_lr.png")]
    return Verdict("H1", title, paper, _toy_setup(st), nums, verdict, reason, figs)


@claim
def h2(st: Studies, figdir: Path) -> Verdict:
    """Init[A]'s optimal LR >= Init[B]'s at widths >= 512, and Init[A] reaches a lower loss. Rule: holds if both are
    true at every such width in every data seed; does not hold if either fails in most (width, seed) pairs; else
    inconclusive."""
    title, paper = (
        "Optimal LR and loss: Init[A] vs Init[B]",
        (
            "Fig. 2: for large widths the optimal LR of Init[A] is at "
            "least Init[B]'s, and Init[A] reaches a lower train loss."
        ),
    )
    if not st.toy:
        return not_run("H2", title, paper, "toy")
    lr_ok, loss_ok, ratios = [], [], []
    for r in st.toy:
        pa, pb = (r["analysis"]["per_width"][i] for i in ("init_a", "init_b"))
        for x, y in zip(pa, pb):
            if x["width"] >= 512 and x["opt_lr"] and y["opt_lr"]:
                lr_ok.append(x["opt_lr"] >= y["opt_lr"])
                loss_ok.append(x["opt_loss_mean"] < y["opt_loss_mean"])
                ratios.append(x["opt_lr"] / y["opt_lr"])
    if not lr_ok:
        return Verdict("H2", title, paper, _toy_setup(st), [], OPEN, "no width >= 512 in the toy studies")
    n = len(lr_ok)
    verdict = HOLDS if all(lr_ok) and all(loss_ok) else FAILS if min(sum(lr_ok), sum(loss_ok)) < n / 2 else OPEN
    nums = [
        (
            f"Optimal LR of Init[A] >= Init[B]'s in **{sum(lr_ok)}/{n}** (width >= 512, data seed) pairs; ratio A/B "
            f"median {np.median(ratios):.2f} (range {min(ratios):.2f}..{max(ratios):.2f})."
        ),
        f"Train loss at the optimum lower under Init[A] in **{sum(loss_ok)}/{n}** pairs.",
    ]
    reason = {
        HOLDS: "both hold in every (width, data seed) pair",
        FAILS: "one of the two fails in most pairs",
        OPEN: "both hold in most, not all, pairs",
    }[verdict]
    figs = [figures.toy_lr_vs_width(st, "opt_lr", figdir / "h2_optimal_lr.png")]
    return Verdict("H2", title, paper, _toy_setup(st), nums, verdict, reason, figs)


@claim
def h3(st: Studies, figdir: Path) -> Verdict:
    """Internal instability: under Init[A], |Z_A| grows with width while |Z_B| stays bounded (at the optimal LR,
    final step). Rule: holds if the log-log slope of |Z_A| vs n under Init[A] has a 95% interval above 0 and |Z_B|'s
    interval does not lie above 0; does not hold if |Z_A|'s interval lies at or below 0; else inconclusive."""
    title, paper = (
        "Internal instability of Init[A]",
        (
            "Fig. 3, Sec. 3.5: under Init[A] with the maximal stable LR, "
            "Z_A = A z grows with width (as n^1/2) while Z_B = B A z stays bounded."
        ),
    )
    if not st.toy:
        return not_run("H3", title, paper, "toy")

    def slopes(init, key):
        out = []
        for r in st.toy:
            p = [x for x in r["analysis"]["per_width"][init] if x.get(key)]
            out.append(loglog_slope([x["width"] for x in p], [x[key] for x in p]) if len(p) > 2 else None)
        return out

    za, zb, zb_b = (
        slopes("init_a", "za_final_at_opt"),
        slopes("init_a", "zb_final_at_opt"),
        slopes("init_b", "zb_final_at_opt"),
    )
    if None in za + zb + zb_b:
        return Verdict(
            "H3",
            title,
            paper,
            _toy_setup(st),
            [],
            OPEN,
            "a data seed has fewer than three widths with features at the optimum: no slope",
            [figures.toy_features(st, figdir / "h3_feature_norms.png")],
        )
    (ma, ha), (mb, hb) = mean_ci(za), mean_ci(zb)
    if ha is None:
        verdict, reason = OPEN, "one data seed: no interval"
    elif ma - ha > 0 and not mb - hb > 0:
        verdict, reason = (
            HOLDS,
            "|Z_A| grows (interval above 0) and |Z_B| shows no growth (interval reaches 0 or below)",
        )
    elif ma + ha <= 0:
        verdict, reason = FAILS, "|Z_A| does not grow with width"
    else:
        verdict, reason = OPEN, "the intervals do not settle it"
    nums = [
        (
            f"Under Init[A] at its optimal LR: |Z_A| ~ n^**{fmt_ci(ma, ha, '.2f')}** (theory at the max stable LR: 0.5), "
            f"|Z_B| ~ n^**{fmt_ci(mb, hb, '.2f')}** (95% t intervals over {len(za)} data seeds)."
        ),
        f"For contrast, Init[B] at its optimal LR: |Z_B| ~ n^{fmt_ci(*mean_ci(zb_b), '.2f')}.",
    ]
    figs = [figures.toy_features(st, figdir / "h3_feature_norms.png")]
    return Verdict("H3", title, paper, _toy_setup(st), nums, verdict, reason, figs)
