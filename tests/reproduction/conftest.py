"""Study folders for the reproduction tests: toy analyses and mf summaries with known answers (for the verdict
rules), finetune sweep folders written by the real sweep report code from given per-seed values, and a tiny
real toy and mf study (for the end-to-end regeneration)."""

from __future__ import annotations

import itertools
from pathlib import Path

from lorainit import io
from lorainit.sweeps import report
from lorainit.sweeps.summary import summarize

WIDTHS = (128, 256, 512, 1024)


def toy_results(data_seed: int, slope_a: float, slope_b: float, za_exp: float = 0.3, noise: float = 0.0) -> dict:
    """A toy results.json whose analysis follows exact power laws in the width (plus ``noise`` on the slopes)."""
    sa, sb = slope_a + noise * (data_seed - 1), slope_b - noise * (data_seed - 1)

    def rows(slope, za, opt_scale, loss):
        return [
            {
                "width": w,
                "opt_lr": opt_scale * (w / 128) ** slope,
                "max_stable_lr": 0.1 * (w / 128) ** slope,
                "opt_loss_mean": loss,
                "za_final_at_opt": 5 * (w / 128) ** za,
                "zb_final_at_opt": 10.0 - w / 1e4,
            }
            for w in WIDTHS
        ]

    slopes = lambda s: {
        "max_stable": {"slope": s},
        "optimal": {"slope": s},
        "max_stable_vs_zb_bound": {"3.33": s, "30": s},
    }
    return {
        "config": {"widths": list(WIDTHS), "data_seed": data_seed, "zb_bound": 10.0},
        "provenance": {"device": "test", "commit": "0" * 40, "date": "today"},
        "analysis": {
            "per_width": {"init_a": rows(sa, za_exp, 0.02, 1e-3), "init_b": rows(sb, 0.0, 0.01, 2e-3)},
            "slopes": {"init_a": slopes(sa), "init_b": slopes(sb)},
        },
    }


def mf_results(
    optimal: float, rand_reach: int, hrp_final: float, hrp_reach: int, seeds: int = 4, steps=(30.0, 10.0, 110.0)
) -> dict:
    """An mf results.json summary: random inits end at 1.2 L* (``rand_reach`` seeds reach), HRP at ``hrp_final``."""
    rand, hrp_steps, hrp_with = steps
    entry = lambda final, reach, st, stp: {
        "final_loss_mean": final,
        "final_loss_sem": 0.0,
        "seeds_reaching_optimum": reach,
        "steps_to_optimum_mean": st,
        "steps_to_optimum_mean_with_preheat": stp,
    }
    classic = {i: entry(optimal, seeds, rand, rand) for i in ("gaussian", "orthogonal", "target")}
    classic["hrp"] = entry(optimal, seeds, hrp_steps, hrp_with)
    asym = {i: entry(1.2 * optimal, rand_reach, None, None) for i in ("gaussian", "orthogonal")}
    asym["hrp"], asym["target"] = entry(hrp_final, hrp_reach, 15.0, 115.0), entry(optimal, seeds, 15.0, 15.0)
    return {
        "config": {"seeds": seeds},
        "provenance": {"device": "test", "commit": "0" * 40},
        "optimal_loss": optimal,
        "summary": {"classic": classic, "asymmetric": asym},
    }


def sweep_folder(
    folder: Path,
    values: dict,
    *,
    lrs=(1e-4, 2e-4, 1e-3),
    seeds=(0, 1, 2),
    direction="minimize",
    name_metric="perplexity",
    extra=(),
) -> Path:
    """A finetune sweep folder as ``lorainit report`` writes it. ``values``: init -> function (lr, seed) -> (val, test);
    None for a point that has not finished. ``extra``: (init, lr) pairs run beyond the grid (``--widen``)."""
    grid = {
        "experiment": "finetune",
        "dims": {"seed": list(seeds), "init": list(values), "lr": list(lrs)},
        "config": {
            "model": "tiny",
            "task": "wiki",
            "rank": 4,
            "alpha": 4.0,
            "steps": 10,
            "batch_size": 2,
            "seq_len": 8,
        },
        "metric": name_metric,
        "direction": direction,
        **({"extra": [{"init": i, "lr": lr} for i, lr in extra]} if extra else {}),
    }
    records = []
    more = [(seed, i, lr) for i, lr in extra for seed in seeds]
    for n, (seed, init, lr) in enumerate([*itertools.product(seeds, values, lrs), *more]):
        got = values[init](lr, seed)
        if got is not None:
            records.append(
                {
                    "number": n,
                    "state": "COMPLETE",
                    "seed": seed,
                    "init": init,
                    "lr": lr,
                    "value": got[0],
                    "test": got[1],
                }
            )
    summary = summarize(grid, records)
    folder.mkdir(parents=True)
    io.write_text(folder / "trials.csv", report.trials_csv(grid, records))
    io.write_json(folder / "summary.json", {"grid": grid, **summary})
    return folder
