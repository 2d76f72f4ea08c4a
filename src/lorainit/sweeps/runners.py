"""The built-in toy and mf experiments of ``lorainit sweep`` (the contract: ``experiment.Experiment``), registered here;
finetune's is in ``runners_finetune``.

Each knows its config class, which of its fields the sweep's grid replaces, the extra grid dimension it
contributes (toy: width, mf: mode), the metric and its direction, and how to run a batch of points: all claimed
points of one width / mode train as one batched program (``lorainit.batched``). An outcome is (value, attrs): value
is the final loss (None for a diverged run), attrs the curves and divergence step and reason. Toy adds the paper's
width analysis to its report (``report_section``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from .. import devices, divergence
from ..experiments import mf, toy, toy_model
from .experiment import Experiment, Section, register
from .grid import point_key

DIVERGE_FACTOR = divergence.STUDY_FACTOR  # toy and mf (lorainit.divergence)


def _curve(values: list) -> list:
    return [None if v is None or not math.isfinite(v) else float(v) for v in values]


def _last(values: list) -> float | None:
    v = values[-1] if values else None
    return None if v is None or not math.isfinite(v) else float(v)


class Toy(Experiment):
    """Teacher-student model (Hayou et al. 2024, eq. 4). The 'validation' value is the final loss on the
    ``select_on`` split: the train set by default, as the paper selects; test is the held-out test loss."""

    name = "toy"
    config = toy.ToyConfig
    replaced = ("inits", "lrs", "seeds", "widths")  # the grid's dimensions carry these
    from_config = ("widths",)  # ...but this one comes from the experiment's flags
    defaults = {"inits": ("init_a", "init_b"), "lrs": toy.ToyConfig.lrs, "seeds": 2, "batch": 64}
    dim_flags = {"width": "widths"}
    command = "lorainit.experiments.toy_cli:main"
    summary = "teacher-student study of Hayou et al. 2024: optimal and max-stable LR vs width, Init[A] vs Init[B]"

    def validate(self, cfg) -> None:
        toy.validate(cfg)
        toy.check_fits(cfg)

    def dims(self, cfg) -> dict:
        return {"width": list(cfg.widths)}

    def metric(self, cfg) -> tuple[str, str]:
        return "final loss", "minimize"

    def batch_key(self, point: dict):
        return point["width"]

    def selection_label(self, grid: dict) -> str:
        return f"final {grid['config'].get('select_on', 'train')} loss"

    def note(self, grid: dict) -> str:
        return (
            f"Toy: 'validation' is the final loss on the {grid['config']['select_on']} set (the paper selects on train), "
            "'test' the held-out test loss."
        )

    def report_section(self, grid: dict, records: list[dict], out: Path) -> Section | None:
        """The paper's optimal / max-stable LR vs width analysis (``toy_study.analyse``), once every point is finished."""
        from ..experiments import toy_report, toy_study
        from .summary import finished

        points, _ = finished(records, list(grid["dims"]))
        if not grid["dims"]["width"] or len(points) < math.prod(len(v) for v in grid["dims"].values()):
            return None
        d = grid["dims"]
        cfg = toy.ToyConfig(
            **{
                **{k: tuple(v) if isinstance(v, list) else v for k, v in grid["config"].items()},
                "widths": tuple(d["width"]),
                "inits": tuple(d["init"]),
                "lrs": tuple(d["lr"]),
                "seeds": len(d["seed"]),
            }
        )
        widths = []
        for w in d["width"]:
            runs = [
                {
                    "seed": r["seed"],
                    "init": r["init"],
                    "lr": r["lr"],
                    "diverged_step": r.get("diverged_step"),
                    "diverged_reason": r.get("reason"),
                    **{k: r.get(k) or [None] for k in ("train_loss", "test_loss", "za", "zb")},
                }
                for r in points.values()
                if r["width"] == w and r["lr"] in d["lr"]  # (the paper's analysis is of the grid: --widen's extra LRs
            ]  # are in the tables above, not here)
            steps = next(r["steps"] for r in points.values() if r["width"] == w and r.get("steps"))
            widths.append({"width": w, "runs": runs, "steps": steps})
        study = {"config": toy_study.config_dict(cfg), "widths": widths, "analysis": toy_study.analyse(cfg, widths)}
        return Section(
            "Width study (Hayou et al. 2024, Sec. 3.7)",
            toy_report.findings(study),
            toy_report.figures(study, out),
            {"toy_analysis": study["analysis"]},
        )

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        data = toy_model.teacher_data(cfg)
        device = devices.resolve_device(cfg.device)
        results = {}
        for chunk in _seed_balanced(points):
            grid = [(p["seed"], p["init"], p["lr"]) for p in chunk]
            c = dataclasses.replace(
                cfg,
                widths=(chunk[0]["width"],),
                seeds=max(s for s, _, _ in grid) + 1,
                inits=tuple(dict.fromkeys(i for _, i, _ in grid)),
                lrs=tuple(dict.fromkeys(lr for _, _, lr in grid)),
                diverge_factor=min(cfg.diverge_factor, DIVERGE_FACTOR),
            )
            toy.validate(c)
            res = toy.train_width(c, c.widths[0], data, device, grid=grid)
            for p, r in zip(chunk, res["runs"]):
                key = "train_loss" if cfg.select_on == "train" else "test_loss"
                diverged = r["diverged_step"] is not None
                attrs = {
                    "test": _last(r["test_loss"]),
                    "diverged_step": r["diverged_step"],
                    "reason": r["diverged_reason"],
                    **{k: _curve(r[k]) for k in ("train_loss", "test_loss", "za", "zb")},
                    "steps": list(res["steps"]),
                    "seconds": res["seconds"] / len(chunk),
                }
                results[point_key(p)] = (None if diverged else _last(r[key]), attrs)
        return [results[point_key(p)] for p in points]


def _seed_balanced(points: list[dict]) -> list[list[dict]]:
    """Split points (one width) into seed-major chunks with the same number of points per seed."""
    by_seed = defaultdict(list)
    for p in points:
        by_seed[p["seed"]].append(p)
    chunks = []
    while any(by_seed.values()):
        m = min(len(v) for v in by_seed.values() if v)
        chunks.append([p for s in sorted(by_seed) if by_seed[s] for p in by_seed[s][:m]])
        by_seed = defaultdict(list, {s: v[m:] for s, v in by_seed.items() if v[m:]})
    return chunks


class MF(Experiment):
    """Matrix factorization (Chen et al. 2025, Fig. 1) by gradient descent; value: final loss (no held-out data)."""

    name = "mf"
    config = mf.MFConfig
    replaced = ("inits", "lr", "seeds", "modes")
    from_config = ("modes",)
    defaults = {
        "inits": ("gaussian", "orthogonal", "hrp", "target"),
        "lrs": tuple(0.0125 * 2**k for k in range(6)),
        "seeds": 3,
        "batch": 64,
    }
    dim_flags = {"mode": "modes"}
    command = "lorainit.experiments.mf_cli:main"
    summary = "matrix factorization of Chen et al. 2025 (HRP, Fig. 1): HRP vs random inits"

    def validate(self, cfg) -> None:
        mf.validate(cfg)

    def dims(self, cfg) -> dict:
        return {"mode": list(cfg.modes)}

    def metric(self, cfg) -> tuple[str, str]:
        return "final loss", "minimize"

    def batch_key(self, point: dict):
        return point["mode"]

    def selection_label(self, grid: dict) -> str:
        return "final loss"

    def note(self, grid: dict) -> str:
        return "Matrix factorization has no held-out data: 'validation' and 'test' are both the final loss."

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        start = time.perf_counter()
        c = dataclasses.replace(
            cfg,
            seeds=max(p["seed"] for p in points) + 1,
            inits=tuple(dict.fromkeys(p["init"] for p in points)),
            lr=max(p["lr"] for p in points),
        )
        mf.validate(c)
        M = mf.target_matrix(c)
        pre = mf.preheat(c, M, c.preheat_steps) if any(p["init"] == "hrp" for p in points) else None
        fs = [mf.factors(c, M, p["init"], p["seed"], pre[p["seed"]] if pre else None) for p in points]
        lrs = torch.tensor([p["lr"] for p in points], dtype=M.dtype)
        losses, _, _, hist = mf.train_history(
            torch.stack([f.A for f in fs]),
            torch.stack([f.B for f in fs]),
            M,
            c.steps,
            lrs,
            freeze_A=points[0]["mode"] == "asymmetric",
            diverge_factor=DIVERGE_FACTOR,
        )
        level = mf.optimal_loss(M, c.rank) * (1 + c.tolerance)
        every = max(1, c.steps // 100)
        outcomes = []
        for k, p in enumerate(points):
            curve = _curve(losses[:, k].tolist())
            diverged = int(hist.diverged_step[k]) >= 0
            reach = None if diverged else mf.steps_to_reach(curve, level)
            outcomes.append(
                (
                    None if diverged else _last(curve),
                    {
                        "test": None if diverged else _last(curve),
                        "train_loss": curve[::every],
                        "log_every": every,
                        "diverged_step": int(hist.diverged_step[k]) if diverged else None,
                        "reason": hist.reason[k],
                        "steps_to_optimum": reach,
                        "seconds": (time.perf_counter() - start) / len(points),
                    },
                )
            )
        return outcomes


for _exp in (Toy(), MF()):
    register(_exp)
