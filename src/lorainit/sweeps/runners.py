"""The built-in experiments of ``lorainit sweep`` (the contract: ``experiment.Experiment``), registered here.

Each knows its config class, which of its fields the sweep's grid replaces, the extra grid dimension it
contributes (toy: width, mf: mode), the metric and its direction, and how to run a batch of points: toy and mf
train all claimed points of one width / mode as one batched program (``lorainit.batched``); finetune trains any
claimed points as K runs on one frozen base (``lorainit.multi``). An outcome is (value, attrs): value is the
validation metric (None for a diverged run), attrs the test metric, curves and divergence step and reason. Toy
adds the paper's width analysis to its report (``report_section``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path

import torch

from .. import divergence
from ..experiments import finetune, mf, toy
from ..full import FULL
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
        from .report import finished

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
                if r["width"] == w
            ]
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
        data = toy.teacher_data(cfg)
        device = toy.resolve_device(cfg.device)
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


class Finetune(Experiment):
    """A real fine-tune (``lorainit finetune``); value: the final validation metric, test reported beside it.
    A worker's claimed points, whatever their inits, train together as K runs on one frozen base
    (``experiments.finetune_run``) in a batch folder ``trials/batch-<hash>``; each point's adapter and run card go to
    ``trials/<point>``, and every batch shares the starts cached in ``inits/``. A ``full`` point (full fine-tuning)
    is claimed alone, so a worker trains it as a batch of one while other workers go on with LoRA batches. A point whose run card is already
    there (its batch finished but the worker died before recording it) is not trained again. A batch that does not
    fit the GPU's memory is split in two, and again, down to single runs."""

    name = "finetune"
    config = finetune.FinetuneConfig
    methods = (FULL,)  # full fine-tuning: a method beside the inits, trained alone (it shares no frozen base)
    replaced = ("init", "lr", "seed")
    defaults = {
        "inits": ("init_a", "init_b"),
        "lrs": tuple(1e-5 * 300 ** (k / 9) for k in range(10)),
        "seeds": 1,
        "batch": 8,
    }
    command = "lorainit.experiments.finetune_cli:main"
    summary = "one LoRA fine-tune of a real model with any init (resumable; torchrun for data parallel)"

    def validate(self, cfg) -> None:
        finetune.validate(cfg)

    def metric(self, cfg) -> tuple[str, str]:
        from .. import data

        name = data.load(cfg.task).metric
        return name, "minimize" if name == "perplexity" else "maximize"

    def batch_key(self, point: dict):
        """Every init trains on the one frozen base; a full fine-tune alone (a key no other point has)."""
        return ("full", point_key(point)) if point["init"] == FULL else "base"

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        from ..experiments import finetune_run

        out = Path(out)
        dirs = [out / "trials" / slug(p) for p in points]
        cards = {point_key(p): finetune_run.finished(d, cfg, p) for p, d in zip(points, dirs)}
        todo = [p for p in points if cards[point_key(p)] is None]
        groups = [[p for p in todo if p["init"] != FULL]] + [[p] for p in todo if p["init"] == FULL]  # full: alone
        for group in groups:
            for p, card in zip(group, self._batched(cfg, group, out)):
                cards[point_key(p)] = card
        return [self._outcome(cards[point_key(p)], dirs[i]) for i, p in enumerate(points)]

    def _batched(self, cfg, points: list[dict], out: Path) -> list[dict]:
        """Run cards of ``points`` trained as one batch, or as halves of it where it does not fit the GPU."""
        import hashlib
        import shutil

        from ..experiments import finetune_run

        if not points:
            return []
        folder = (
            out / "trials" / f"batch-{hashlib.sha256(json.dumps(points, sort_keys=True).encode()).hexdigest()[:12]}"
        )
        try:
            return finetune_run.run(
                cfg,
                points,
                folder,
                run_dirs=[out / "trials" / slug(p) for p in points],
                init_cache=out / "inits",
                progress=False,
            )
        except torch.OutOfMemoryError:
            if len(points) == 1:
                raise
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        shutil.rmtree(folder, ignore_errors=True)
        half = len(points) // 2
        return self._batched(cfg, points[:half], out) + self._batched(cfg, points[half:], out)

    @staticmethod
    def _outcome(card: dict, folder: Path) -> tuple:
        m, metric = card["metrics"], card["task"]["metric"]
        div = card["diverged"] or {}
        value = None if card["diverged"] else m["final"][f"val_{metric}"]
        return value, {
            "test": None if card["diverged"] else m["final"].get(f"test_{metric}"),
            "base_test": m["base_test"].get(f"test_{metric}"),
            "val_history": [{"step": r["step"], "val": r.get(f"val_{metric}")} for r in m["val_history"]],
            "diverged_step": div.get("step"),
            "reason": div.get("reason"),
            "seconds": card["timing"]["seconds"],
            "tokens_per_second": card["timing"]["tokens_per_second"],
            "batched_with": card["timing"]["runs_in_batch"],
            "run": str(folder),
        }


def slug(point: dict) -> str:
    """A folder name for a point: 'init_a-lr0.001-seed0'."""
    text = "-".join(
        f"{k}{v:g}" if isinstance(v, float) else (str(v) if k == "init" else f"{k}{v}")
        for k, v in sorted(point.items())
    )
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)


for _exp in (Toy(), MF(), Finetune()):
    register(_exp)
