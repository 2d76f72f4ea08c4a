"""Running a teacher-student study to completion, resumably, and reading the paper's quantities off it.

A study folder holds ``config.json``, one ``widths/width_NNNNN.json`` per finished width (written
atomically as soon as the width is done) and, at the end, ``results.json`` with the analysis. Running
the same config into the same folder skips finished widths; a different config is refused.

Analysis (Hayou et al. 2024, Sec. 3.7): for each (init, width), the optimal LR (lowest seed-mean final
loss) with the per-seed optima as its spread; the largest grid LR at which every seed stays stable
(never diverged, per-coordinate |Z_B| = mean ||B A z|| / sqrt(n) below ``zb_bound`` at every logged
step); and the log-log slopes of both against width, next to the theory's -1/2 (Init[A], Thm. 1) and
-1 (Init[B], Thm. 2).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import io
from ..devices import resolve_device
from .toy import PRESETS, ToyConfig, check_fits, train_width, validate
from .toy_model import teacher_data

THEORY_SLOPE = {"init_a": -0.5, "init_b": -1.0}


def config_dict(cfg: ToyConfig) -> dict:
    return io.config_dict(cfg)


def preset(name: str, **overrides) -> ToyConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(ToyConfig(), **{**PRESETS[name], **overrides})


def run_study(cfg: ToyConfig, out: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Train every width not yet in ``out``, then analyse; returns the results dict also written to results.json."""
    validate(cfg)
    check_fits(cfg)
    device = resolve_device(cfg.device)
    out = Path(out)
    wanted = io.config_dict(cfg, drop=io.EXECUTION)  # where it ran does not change what the study is
    io.claim_folder(out, wanted, overwrite=overwrite, stale=["widths/width_*.json", "results.json"])
    data = teacher_data(cfg)
    results = []
    # the bar counts work, not steps: a step of width n costs about n times a step of width 1 (N x n per run)
    bar = tqdm(
        total=sum(cfg.widths) * cfg.steps,
        desc="toy",
        disable=not progress,
        mininterval=2.0,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
    )
    for width in cfg.widths:
        path = out / "widths" / f"width_{width:05d}.json"
        if path.exists():
            results.append(io.read_json(path))
            bar.update(width * cfg.steps)
            continue
        bar.set_postfix(width=width, runs=cfg.seeds * len(cfg.inits) * len(cfg.lrs))
        res = train_width(cfg, width, data, device, on_step=lambda _t, w=width: bar.update(w))
        res["provenance"] = io.provenance()
        io.write_json(path, res)
        results.append(res)
    bar.close()
    study = {"config": wanted, "provenance": io.provenance(), "widths": results, "analysis": analyse(cfg, results)}
    io.write_json(out / "results.json", study)
    return study


def _final(run: dict, key: str) -> float:
    v = run[key][-1]
    return math.inf if v is None or run["diverged_step"] is not None else v


def _stable(run: dict, width: int, zb_bound: float) -> bool:
    if run["diverged_step"] is not None:
        return False
    return max(z for z in run["zb"] if z is not None) / math.sqrt(width) < zb_bound


def per_width(cfg: ToyConfig, res: dict, init: str, zb_bound: float | None = None) -> dict:
    """Optimal and max-stable LR of one init at one width, with their seed spread and feature norms."""
    zb_bound = cfg.zb_bound if zb_bound is None else zb_bound
    key = "train_loss" if cfg.select_on == "train" else "test_loss"
    runs = [r for r in res["runs"] if r["init"] == init]
    lrs = sorted({r["lr"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["seed"], r["lr"]): r for r in runs}
    loss = np.array([[_final(by[s, lr], key) for lr in lrs] for s in seeds])  # (S, L)
    mean = loss.mean(0)
    best = int(np.argmin(mean))
    seed_best = [lrs[int(np.argmin(row))] for row in loss]
    stable = [all(_stable(by[s, lr], res["width"], zb_bound) for s in seeds) for lr in lrs]
    max_stable = max((lr for lr, ok in zip(lrs, stable) if ok), default=None)
    opt_runs = [by[s, lrs[best]] for s in seeds]
    za = [r["za"][-1] for r in opt_runs if r["za"][-1] is not None]
    zb = [r["zb"][-1] for r in opt_runs if r["zb"][-1] is not None]
    return {
        "width": res["width"],
        "opt_lr": lrs[best] if math.isfinite(mean[best]) else None,
        "opt_lr_seed_min": min(seed_best),
        "opt_lr_seed_max": max(seed_best),
        "opt_at_grid_edge": best in (0, len(lrs) - 1),
        "opt_loss_mean": float(mean[best]),
        "opt_loss_sem": float(loss[:, best].std(ddof=1) / math.sqrt(len(seeds))) if len(seeds) > 1 else None,
        "opt_test_loss_mean": float(np.mean([_final(r, "test_loss") for r in opt_runs])),
        "max_stable_lr": max_stable,
        "max_stable_censored": max_stable == lrs[-1],  # the grid ends before instability: a lower bound
        "diverged_runs": sum(r["diverged_step"] is not None for r in runs),
        "za_final_at_opt": float(np.mean(za)) if za else None,
        "zb_final_at_opt": float(np.mean(zb)) if zb else None,
        "loss_by_lr": {"lrs": lrs, "mean": mean.tolist(), "per_seed": loss.tolist()},
    }


def fit_slope(points: list[tuple[int, float]]) -> dict:
    """Least-squares slope of log(lr) against log(width), with its standard error."""
    if len(points) < 2:
        return {"slope": None, "stderr": None, "points": len(points)}
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    coef, res, *_ = np.polyfit(x, y, 1, full=True)
    stderr = None
    if len(points) > 2:
        resid = y - np.polyval(coef, x)
        stderr = float(math.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean()))))
    return {"slope": float(coef[0]), "stderr": stderr, "points": len(points)}


def analyse(cfg: ToyConfig, results: list[dict]) -> dict:
    """Per-(init, width) optima and stability, the slopes vs width, and the paper's two observations."""
    results = sorted(results, key=lambda r: r["width"])
    rows = {i: [per_width(cfg, res, i) for res in results] for i in cfg.inits}
    slopes = {}
    for init, rs in rows.items():
        stable_pts = [
            (r["width"], r["max_stable_lr"]) for r in rs if r["max_stable_lr"] and not r["max_stable_censored"]
        ]
        opt_pts = [(r["width"], r["opt_lr"]) for r in rs if r["opt_lr"]]
        sens = {}
        for factor in (1 / 3, 3.0):
            b = cfg.zb_bound * factor
            pts = [
                (r["width"], r["max_stable_lr"])
                for r in (per_width(cfg, res, init, b) for res in results)
                if r["max_stable_lr"] and not r["max_stable_censored"]
            ]
            sens[f"{b:.3g}"] = fit_slope(pts)["slope"]
        slopes[init] = {
            "max_stable": fit_slope(stable_pts),
            "optimal": fit_slope(opt_pts),
            "theory_max_stable": THEORY_SLOPE.get(init),
            "max_stable_vs_zb_bound": sens,
        }
    checks = {}
    if {"init_a", "init_b"} <= set(cfg.inits):
        a = {r["width"]: r for r in rows["init_a"]}
        b = {r["width"]: r for r in rows["init_b"]}
        big = [w for w in a if w >= 512]
        checks["opt_lr_a_ge_b_at_width_ge_512"] = {
            str(w): (a[w]["opt_lr"] is not None and b[w]["opt_lr"] is not None and a[w]["opt_lr"] >= b[w]["opt_lr"])
            for w in big
        }
        wmax = max(a)
        checks["za_at_largest_width"] = {
            "width": wmax,
            "init_a": a[wmax]["za_final_at_opt"],
            "init_b": b[wmax]["za_final_at_opt"],
        }
    return {"select_on": cfg.select_on, "zb_bound": cfg.zb_bound, "per_width": rows, "slopes": slopes, "checks": checks}
