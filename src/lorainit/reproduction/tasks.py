"""Real-task claims (H4: Hayou et al. Sec. 4, Figs 4-5; R3, R5: Chen et al. NLU/NLG tables; L1: 'LR matters',
arXiv 2602.04998), judged on ``lorainit sweep --experiment finetune`` studies, every init at its own LR selected on
validation, compared on test. Comparisons are paired by seed: a seed fixes the data order of every init's run, so
the per-seed difference removes the data order's share of the noise. Intervals are 95% t over the seeds. Full
fine-tuning (``full``) is a reference method, not an init: R5 compares against it, the init claims leave it out."""

from __future__ import annotations

from pathlib import Path

from . import figures
from .claims import FAILS, HOLDS, NOT_RUN, OPEN, Verdict, claim
from .load import Studies, Sweep
from .stats import fmt_ci, mean_ci

SHARED_LR = 2e-4  # L1's one shared learning rate
FULL = "full"  # full fine-tuning (lorainit.full)
BAND = 0.02  # "comparable" / "within 1-2%": a relative gap of at most 2% (L1 and R5)
STANDS_IN = {  # our task: the paper's task it stands in for, and why the study exists where that is not obvious
    "wiki": "WikiText-2",
    "mathqa": "GSM8k",
    "nli": "MNLI",
    "sentiment": "SST-2, of the paper's GLUE tasks; added after the 200-step nli study, in which no method, full fine-tuning included, learned its task",
}


def lora(s: Sweep) -> list[str]:
    """The study's LoRA inits (every method but full fine-tuning)."""
    return [i for i in s.per_init() if i != FULL]


def setup(st: Studies) -> str:
    if not st.sweeps:
        return ""
    out = []
    for s in st.sweeps:
        c, d = s.config, s.grid["dims"]
        i = s.summary["integrity"]
        out.append(
            f"`{s.name}`: {c['model']} on {c['task']}, LoRA rank {c['rank']} (alpha {c['alpha']:g}) on every linear "
            f"projection, {c['steps']} steps of {c['batch_size']} x {c['seq_len']} tokens, "
            f"{len([i for i in d['init'] if i != FULL])} inits{' and full fine-tuning' if FULL in d['init'] else ''} x "
            f"{len(d['lr'])} LRs ({min(d['lr']):.3g}..{max(d['lr']):.3g}) x {len(d['seed'])} seeds; "
            f"{i['finished_points']}/{i['points']} points finished"
            + (f" (stands in for {STANDS_IN[c['task']]})." if c["task"] in STANDS_IN else ".")
        )
    return " ".join(out) + (
        " The paper's models are larger (RoBERTa-large, TinyLlama, Llama-7b) and train for epochs; "
        "these are the package-shipped stand-ins (ASSETS.md)."
    )


def per_seed(s: Sweep, init: str, lr: float) -> dict[int, float]:
    return {
        p["seed"]: p["test"]
        for p in s.points
        if p["init"] == init and p["lr"] == lr and p["state"] == "COMPLETE" and p["test"] is not None
    }


def mean_at(s: Sweep, init: str, lr: float) -> float | None:
    """The mean test value of ``init`` at ``lr`` over the seeds, None unless every seed finished there."""
    t = per_seed(s, init, lr)
    return sum(t.values()) / len(t) if len(t) == len(s.grid["dims"]["seed"]) else None


def paired(s: Sweep, a: str, b: str) -> tuple[float, float | None, int] | None:
    """How much better a is than b on test at their selected LRs: mean and 95% half-width of the per-seed difference
    (positive = a better), and the number of seeds; None where either has no selected LR."""
    la, lb = s.per_init()[a]["selected_lr"], s.per_init()[b]["selected_lr"]
    if la is None or lb is None:
        return None
    ta, tb = per_seed(s, a, la), per_seed(s, b, lb)
    diffs = [s.sign * (tb[k] - ta[k]) for k in sorted(set(ta) & set(tb))]
    return (*mean_ci(diffs), len(diffs)) if diffs else None


def stuck(s: Sweep) -> tuple[float, float | None]:
    """The share of (init, LR) cells whose validation value is exactly the most common one in every seed, and that
    value: a large share marks a classifier predicting one class everywhere (the value is that class's frequency)."""
    cells: dict[tuple, set] = {}
    for p in s.points:
        if p["value"] is not None:
            cells.setdefault((p["init"], p["lr"]), set()).add(round(p["value"], 12))
    singles = [next(iter(v)) for v in cells.values() if len(v) == 1]
    if not singles:
        return 0.0, None
    mode = max(set(singles), key=singles.count)
    return singles.count(mode) / len(cells), mode


ONE_CLASS = 0.25  # a value that at least this share of the cells sits at exactly is a one-class predictor's
LEARNED = 0.10  # the best method must remove at least this share of that predictor's errors to have learned the task


def not_learned(s: Sweep) -> str | None:
    """Why the study cannot rank inits, or None: where many cells collapsed to one class (``stuck``), the task counts
    as learned only if the best (init, LR) cell's mean validation accuracy removes at least 10% of the errors of
    predicting that class. Both thresholds were set after the 200-step nli study (81% of cells collapsed, best
    1.8%); every committed study lies far from them (sentiment: 34% collapsed, best 69%; mathqa: 1% collapsed)."""
    share, one = stuck(s)
    if share < ONE_CLASS or s.sign > 0 or one is None or one >= 1:
        return None
    best = max(
        (r["val_mean"] for i in s.per_init().values() for r in i["rows"] if r.get("val_mean") is not None), default=one
    )
    gain = (best - one) / (1 - one)
    if gain >= LEARNED:
        return None
    return (
        f"the best (init, LR) cell's validation accuracy, {best:.3g}, removes {gain:.1%} of the errors of predicting "
        f"one class ({one:.3g}, the value {share:.0%} of the (init, LR) cells sit at in every seed): these "
        "fine-tunes did not learn the task, so they cannot rank inits"
    )


def edge_checked(s: Sweep, v: str, r: str, a: str, b: str) -> tuple[str, str]:
    """A verdict that a beats b (HOLDS) or b beats a (FAILS) is provisional where the loser's selected LR is at the
    grid's edge: its optimum may lie outside the grid, so its tuned value is not established (the protocol widens
    the grid until no selected LR is at an edge)."""
    loser = b if v == HOLDS else a if v == FAILS else None
    if loser is not None and s.per_init()[loser]["selected_at_edge"]:
        return OPEN, r + f", but {loser}'s selected LR {s.per_init()[loser]['selected_lr']:.3g} is at the grid's edge"
    return v, r


def _fmt(s: Sweep, init: str) -> str:
    r = s.per_init()[init]
    if r["selected_lr"] is None:
        return f"{init}: no LR with every seed finished"
    return f"{init} {fmt_ci(*r['test_at_selected'], '.4g')} at LR {r['selected_lr']:.3g}{'*' if r['selected_at_edge'] else ''}"


def _judge(d, what: str) -> tuple[str, str]:
    if d is None:
        return OPEN, f"{what}: not every seed has finished"
    m, h, n = d
    if h is None:
        return OPEN, f"{what}: one seed, no interval"
    if m - h > 0:
        return HOLDS, f"{what}: better by {m:.3g} ± {h:.3g} over {n} paired seeds"
    if m + h < 0:
        return FAILS, f"{what}: worse by {-m:.3g} ± {h:.3g} over {n} paired seeds"
    return OPEN, f"{what}: {m:+.3g} ± {h:.3g} over {n} paired seeds, within the noise"


def combine(per_task: list[str]) -> str:
    """All tasks hold -> holds; any task does not -> does not hold; else inconclusive."""
    if not per_task:
        return NOT_RUN
    return HOLDS if all(v == HOLDS for v in per_task) else FAILS if FAILS in per_task else OPEN


@claim
def h4(st: Studies, figdir: Path) -> Verdict:
    """On real models Init[A] is better at its tuned LR, and its optimal LR is larger. Rule per task: holds if the
    paired test difference favours Init[A] (interval above 0) and its selected LR is >= Init[B]'s; does not hold if
    the difference favours Init[B] or Init[A]'s LR is smaller; inconclusive otherwise or where the task was not learned."""
    title, paper = (
        "Real models: Init[A] vs Init[B] at tuned LRs",
        (
            "Sec. 4, Figs 4-5: Init[A] beats Init[B] at each's best "
            "LR, with a larger optimal LR (RoBERTa-large MNLI 90.69 vs 89.47 at LR 8e-5 vs 1e-5; TinyLlama "
            "WikiText-2 and Llama-7b Flan-v2/GSM8k likewise)."
        ),
    )
    runs = [s for s in st.sweeps if {"init_a", "init_b"} <= set(s.per_init())]
    if not runs:
        return Verdict("H4", title, paper, "", [], NOT_RUN, "no finetune study with init_a and init_b")
    nums, verdicts, reasons = [], [], []
    for s in runs:
        v, r = edge_checked(s, *_judge(paired(s, "init_a", "init_b"), "Init[A] vs Init[B]"), "init_a", "init_b")
        la, lb = (s.per_init()[i]["selected_lr"] for i in ("init_a", "init_b"))
        if v == HOLDS and la is not None and lb is not None and la < lb:
            v, r = FAILS, r + f", but Init[A]'s LR {la:.3g} is smaller than Init[B]'s {lb:.3g}"
        if note := not_learned(s):
            v, r = OPEN, note
        nums.append(f"`{s.name}` ({s.summary['metric']}, test): {_fmt(s, 'init_a')}; {_fmt(s, 'init_b')}.")
        verdicts.append(v)
        reasons.append(f"{s.name}: {v} ({r})")
    figs = [figures.task_curves(s, figdir / f"task_{s.name}.png", SHARED_LR) for s in runs]
    return Verdict("H4", title, paper, setup(st), nums, combine(verdicts), "; ".join(reasons), figs)


@claim
def r3(st: Studies, figdir: Path) -> Verdict:
    """HRP beats the other inits. Rule per task: holds if HRP's paired test difference to every other init is above 0,
    does not hold if some init beats HRP (its interval above 0), else inconclusive; the task verdicts combine."""
    title, paper = (
        "HRP vs every other init",
        "Chen et al. Tables 2-4: HRP improves over LoRA's default and the other inits on NLU and NLG fine-tunes.",
    )
    runs = [s for s in st.sweeps if "hrp" in s.per_init()]
    if not runs:
        return Verdict("R3", title, paper, "", [], NOT_RUN, "no finetune study with hrp")
    nums, verdicts, reasons = [], [], []
    for s in runs:
        others = [i for i in lora(s) if i != "hrp"]
        judged = {i: edge_checked(s, *_judge(paired(s, "hrp", i), f"vs {i}"), "hrp", i) for i in others}
        vs = [v for v, _ in judged.values()]
        v = HOLDS if all(x == HOLDS for x in vs) else FAILS if FAILS in vs else OPEN
        r = "; ".join(x for _, x in judged.values())
        if s.per_init()["hrp"]["selected_lr"] is None:
            v, r = OPEN, "hrp has no LR where every seed has finished (the study is unfinished)"
        if note := not_learned(s):
            v, r = OPEN, note
        nums.append(
            f"`{s.name}`: {_fmt(s, 'hrp')}; best other: "
            + (
                _fmt(
                    s,
                    min(
                        (i for i in others if s.per_init()[i]["selected_lr"] is not None),
                        key=lambda i: s.sign * s.per_init()[i]["test_at_selected"][0],
                        default=others[0],
                    ),
                )
            )
            + "."
        )
        verdicts.append(v)
        reasons.append(f"{s.name}: {v} ({r})")
    figs = [figures.task_curves(s, figdir / f"task_{s.name}.png", SHARED_LR) for s in runs]
    return Verdict("R3", title, paper, setup(st), nums, combine(verdicts), "; ".join(reasons), figs)


def spread(values: dict[str, float], sign: int) -> tuple[float, str, str]:
    """Relative gap between the best and the worst value, and which inits they are."""
    best = min(values, key=lambda i: sign * values[i])
    worst = max(values, key=lambda i: sign * values[i])
    return abs(values[worst] - values[best]) / abs(values[best]), best, worst


@claim
def l1(st: Studies, figdir: Path) -> Verdict:
    """Once each init's LR is tuned, the inits land within 1-2% of each other; at one shared LR the gaps look larger.
    Rule per task: holds if the tuned spread (best vs worst test, relative) is <= 2% and smaller than the spread at the
    shared LR 2e-4 (the grid's LR nearest it); does not hold if the tuned spread is above 2%; inconclusive where not
    every init is selected or the task was not learned."""
    title, paper = (
        "Tuned LRs shrink the gaps between inits",
        (
            "'LR matters' (arXiv 2602.04998): with each method's LR "
            "tuned, LoRA inits land within 1-2% of each other; compared at one LR, the gaps look larger."
        ),
    )
    if not st.sweeps:
        return Verdict("L1", title, paper, "", [], NOT_RUN, "no finetune study")
    nums, verdicts, reasons = [], [], []
    for s in st.sweeps:
        sel = {
            i: r["test_at_selected"][0] for i, r in s.per_init().items() if r["selected_lr"] is not None and i != FULL
        }
        lr = lr_nearest(s)
        shared = {i: m for i in lora(s) if (m := mean_at(s, i, lr)) is not None}
        if len(sel) < 2 or len(shared) < 2:
            verdicts.append(OPEN)
            reasons.append(f"{s.name}: inconclusive (too few inits finished)")
            continue
        (tsp, tb, tw), (ssp, sb, sw) = spread(sel, s.sign), spread(shared, s.sign)
        missing = sorted(set(lora(s)) - set(sel))
        v = FAILS if tsp > BAND else HOLDS if tsp < ssp and not missing else OPEN
        r = f"tuned spread {tsp:.1%} ({tb} to {tw}), at LR {lr:.3g} {ssp:.1%} ({sb} to {sw})"
        edge = sorted(i for i in sel if s.per_init()[i]["selected_at_edge"])
        firm = {i: x for i, x in sel.items() if i not in edge}
        if edge and (
            (v == HOLDS and tb in edge) or (v == FAILS and tw in edge)
        ):  # the edge init's optimum may lie outside
            r += f"; selected at the grid's edge: {', '.join(edge)}"
            if v == HOLDS or len(firm) < 2 or spread(firm, s.sign)[0] <= BAND:
                v = OPEN
            elif edge != [tw]:  # a lone edge-selected worst init is left out just below
                r += f" (without them: {spread(firm, s.sign)[0]:.1%})"
        if missing:
            r += f"; not selected yet: {', '.join(missing)}"
        rest = {i: x for i, x in sel.items() if i != tw}
        if len(rest) > 1:
            r += f"; without {tw}: {spread(rest, s.sign)[0]:.1%}"
        if note := not_learned(s):
            v, r = OPEN, note + f" ({r})"
        nums.append(f"`{s.name}`: {r}.")
        verdicts.append(v)
        reasons.append(
            f"{s.name}: {v}"
            + (" (tuned spread above 2%: a missing init can only widen it)" if v == FAILS and missing else "")
        )
    figs = [figures.shared_vs_tuned(s, lr_nearest(s), figdir / f"l1_{s.name}.png", lora(s)) for s in st.sweeps]
    return Verdict("L1", title, paper, setup(st), nums, combine(verdicts), "; ".join(reasons), figs)


def lr_nearest(s: Sweep) -> float:
    return min(s.grid["dims"]["lr"], key=lambda x: abs(x / SHARED_LR - 1))


def relative(s: Sweep, a: str, b: str) -> tuple[float, float | None, int] | None:
    """How much better a is than b on test at their selected LRs, relative to b: mean and 95% half-width over paired
    seeds of sign (b - a) / |mean b| (positive = a better), and the number of seeds; None where either is unselected."""
    la, lb = s.per_init()[a]["selected_lr"], s.per_init()[b]["selected_lr"]
    if la is None or lb is None:
        return None
    ta, tb = per_seed(s, a, la), per_seed(s, b, lb)
    seeds = sorted(set(ta) & set(tb))
    if not seeds:
        return None
    scale = abs(sum(tb[k] for k in seeds) / len(seeds))
    return (*mean_ci([s.sign * (tb[k] - ta[k]) / scale for k in seeds]), len(seeds))


def _fmt_rel(d, a: str, b: str) -> str:
    if d is None:
        return f"{a} vs {b}: not every seed finished"
    m, h, n = d
    return f"{a} vs {b} {m:+.2%}" + (f" ± {h:.2%}" if h is not None else "") + f" ({n} paired seeds; + = {a} better)"


def lr_ratios(s: Sweep) -> dict[str, float]:
    """Each LoRA init's selected LR over full fine-tuning's (inits without a selected LR left out)."""
    lf = s.per_init()[FULL]["selected_lr"]
    return (
        {}
        if lf is None
        else {i: s.per_init()[i]["selected_lr"] / lf for i in lora(s) if s.per_init()[i]["selected_lr"] is not None}
    )


@claim
def r5(st: Studies, figdir: Path) -> Verdict:
    """HRP is comparable to full fine-tuning. Rule per task (each method at its own LR selected on validation, test
    compared over paired seeds, relative to full's test value): holds if HRP is worse than full by less than 2% with
    95% confidence (the interval of the relative gap lies above -2%: L1's band for "comparable"); does not hold if it
    is worse by more than 2% (interval below -2%); inconclusive otherwise or where the task was not learned. Written
    after the wiki study's summary had been seen; the 2% band is L1's, fixed before. Also reported: Init[A] vs full,
    and each LoRA init's selected LR over full's."""
    title, paper = (
        "HRP vs full fine-tuning, and LoRA's LR vs full fine-tuning's",
        'Chen et al. Sec. 5: HRP "achieves '
        "results comparable to full-parameter fine-tuning\" (NLU/NLG tables). Rule of thumb: LoRA's best LR "
        "is about 10x full fine-tuning's; muA (Hayou et al.): Init[B]'s LR transfers to full fine-tuning.",
    )
    runs = [s for s in st.sweeps if FULL in s.per_init()]
    if not runs:
        return Verdict(
            "R5", title, paper, "", [], NOT_RUN, "no finetune study with full (lorainit sweep --inits ...,full)"
        )
    nums, verdicts, reasons = [], [], []
    for s in runs:
        d = relative(s, "hrp", FULL) if "hrp" in s.per_init() else None
        if d is None:
            v, r = OPEN, "hrp or full has no LR where every seed has finished"
        elif d[1] is None:
            v, r = OPEN, "one seed, no interval"
        else:
            m, h, n = d
            v = HOLDS if m - h > -BAND else FAILS if m + h < -BAND else OPEN
            v, r = edge_checked(s, v, f"HRP {m:+.2%} ± {h:.2%} relative to full over {n} paired seeds", "hrp", FULL)
        if note := not_learned(s):
            v, r = OPEN, note
        best = min(
            ((m, lr) for lr in s.grid["dims"]["lr"] if (m := mean_at(s, FULL, lr)) is not None),
            key=lambda b: s.sign * b[0],
            default=None,
        )
        oracle = f" (full's best mean test at any LR, an oracle: {best[0]:.4g} at LR {best[1]:.3g})" if best else ""
        ratios = lr_ratios(s)
        shown = ", ".join(f"{i} {x:.3g}x" for i, x in ratios.items() if i in ("init_a", "init_b", "hrp"))
        spread_ = (
            f"; over {len(ratios)} inits {min(ratios.values()):.3g}x..{max(ratios.values()):.3g}x" if ratios else ""
        )
        nums.append(
            f"`{s.name}`: {_fmt(s, FULL)}{oracle}; {_fmt(s, 'hrp') if 'hrp' in s.per_init() else 'no hrp'}; "
            f"{_fmt(s, 'init_a') if 'init_a' in s.per_init() else 'no init_a'}. "
            f"{_fmt_rel(d, 'hrp', FULL)}; {_fmt_rel(relative(s, 'init_a', FULL) if 'init_a' in s.per_init() else None, 'init_a', FULL)}. "
            f"Selected LR over full's: {shown or 'n/a'}{spread_}."
        )
        verdicts.append(v)
        reasons.append(f"{s.name}: {v} ({r})")
    figs = [
        figures.full_vs_lora(
            s, figdir / f"r5_{s.name}.png", [i for i in ("full", "hrp", "init_a", "init_b") if i in s.per_init()]
        )
        for s in runs
    ]
    return Verdict("R5", title, paper, setup(st), nums, combine(verdicts), "; ".join(reasons), figs)
