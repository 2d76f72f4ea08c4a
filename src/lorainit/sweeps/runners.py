"""What one sweep trial runs, per experiment: each runner turns claimed grid points into outcomes.

A runner knows its experiment's config class, which of its fields the sweep's grid replaces, the extra
grid dimension it contributes (toy: width, mf: mode), the metric and its direction, and how to run a
batch of points: toy and mf train all claimed points of one width / mode as one batched program
(``lorainit.batched``); finetune runs them one after another, each in its own resumable run folder.
An outcome is (value, attrs): value is the validation metric (None for a diverged run), attrs the test
metric, curves and divergence step and reason.
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

from ..experiments import finetune, mf, toy
from .store import point_key

DIVERGE_FACTOR = 1e4  # toy and mf: a loss above this multiple of the initial loss stops the run


def _curve(values: list) -> list:
    return [None if v is None or not math.isfinite(v) else float(v) for v in values]


def _last(values: list) -> float | None:
    v = values[-1] if values else None
    return None if v is None or not math.isfinite(v) else float(v)


class Toy:
    """Teacher-student model (Hayou et al. 2024, eq. 4). The 'validation' value is the final loss on the
    ``select_on`` split: the train set by default, as the paper selects; test is the held-out test loss."""

    config = toy.ToyConfig
    replaced = ("inits", "lrs", "seeds", "widths")  # the grid's dimensions carry these
    from_config = ("widths",)  # ...but this one comes from the experiment's flags
    validate = staticmethod(toy.validate)
    defaults = {"inits": ("init_a", "init_b"), "lrs": toy.ToyConfig.lrs, "seeds": 2, "batch": 64}

    def dims(self, cfg) -> dict:
        return {"width": list(cfg.widths)}

    def metric(self, cfg) -> tuple[str, str]:
        return "final loss", "minimize"

    def batch_key(self, point: dict):
        return point["width"]

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        data = toy.teacher_data(cfg)
        device = toy.resolve_device(cfg.device)
        results = {}
        for chunk in _seed_balanced(points):
            grid = [(p["seed"], p["init"], p["lr"]) for p in chunk]
            c = dataclasses.replace(cfg, widths=(chunk[0]["width"],), seeds=max(s for s, _, _ in grid) + 1,
                                    inits=tuple(dict.fromkeys(i for _, i, _ in grid)), lrs=tuple(dict.fromkeys(lr for _, _, lr in grid)),
                                    diverge_factor=min(cfg.diverge_factor, DIVERGE_FACTOR))
            toy.validate(c)
            res = toy.train_width(c, c.widths[0], data, device, grid=grid)
            for p, r in zip(chunk, res["runs"]):
                key = "train_loss" if cfg.select_on == "train" else "test_loss"
                diverged = r["diverged_step"] is not None
                attrs = {"test": _last(r["test_loss"]), "diverged_step": r["diverged_step"], "reason": r["diverged_reason"],
                         **{k: _curve(r[k]) for k in ("train_loss", "test_loss", "za", "zb")},
                         "steps": list(res["steps"]), "seconds": res["seconds"] / len(chunk)}
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


class MF:
    """Matrix factorization (Chen et al. 2025, Fig. 1) by gradient descent; value: final loss (no held-out data)."""

    config = mf.MFConfig
    replaced = ("inits", "lr", "seeds", "modes")
    from_config = ("modes",)
    validate = staticmethod(mf.validate)
    defaults = {"inits": ("gaussian", "orthogonal", "hrp", "target"), "lrs": tuple(0.0125 * 2**k for k in range(6)), "seeds": 3, "batch": 64}

    def dims(self, cfg) -> dict:
        return {"mode": list(cfg.modes)}

    def metric(self, cfg) -> tuple[str, str]:
        return "final loss", "minimize"

    def batch_key(self, point: dict):
        return point["mode"]

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        start = time.perf_counter()
        c = dataclasses.replace(cfg, seeds=max(p["seed"] for p in points) + 1,
                                inits=tuple(dict.fromkeys(p["init"] for p in points)), lr=max(p["lr"] for p in points))
        mf.validate(c)
        M = mf.target_matrix(c)
        pre = mf.preheat(c, M, c.preheat_steps) if any(p["init"] == "hrp" for p in points) else None
        fs = [mf.factors(c, M, p["init"], p["seed"], pre[p["seed"]] if pre else None) for p in points]
        lrs = torch.tensor([p["lr"] for p in points], dtype=M.dtype)
        losses, _, _, hist = mf.train_history(torch.stack([f.A for f in fs]), torch.stack([f.B for f in fs]), M, c.steps, lrs,
                                              freeze_A=points[0]["mode"] == "asymmetric", diverge_factor=DIVERGE_FACTOR)
        level = mf.optimal_loss(M, c.rank) * (1 + c.tolerance)
        every = max(1, c.steps // 100)
        outcomes = []
        for k, p in enumerate(points):
            curve = _curve(losses[:, k].tolist())
            diverged = int(hist.diverged_step[k]) >= 0
            reach = None if diverged else mf.steps_to_reach(curve, level)
            outcomes.append((None if diverged else _last(curve), {
                "test": None if diverged else _last(curve), "train_loss": curve[::every], "log_every": every,
                "diverged_step": int(hist.diverged_step[k]) if diverged else None, "reason": hist.reason[k],
                "steps_to_optimum": reach, "seconds": (time.perf_counter() - start) / len(points)}))
        return outcomes


class Finetune:
    """A real fine-tune (``lorainit finetune``); value: the final validation metric, test reported beside it.
    Claimed points of a language-modelling task with data-free, base-preserving inits train together on one
    frozen base (``experiments.finetune_multi``); other points run one at a time, each in its own run folder."""

    config = finetune.FinetuneConfig
    replaced = ("init", "lr", "seed")
    from_config = ()
    validate = staticmethod(finetune.validate)
    defaults = {"inits": ("init_a", "init_b"), "lrs": tuple(1e-5 * 300 ** (k / 9) for k in range(10)), "seeds": 1, "batch": 8}

    def dims(self, cfg) -> dict:
        return {}

    def metric(self, cfg, task=None) -> tuple[str, str]:
        from .. import data

        name = (task or data.load(cfg.task)).metric
        return name, "minimize" if name == "perplexity" else "maximize"

    def batch_key(self, point: dict):
        from ..experiments.finetune_multi import batchable

        # data-free, base-preserving inits can share one frozen base; the rest run one at a time
        return "shared-base" if batchable(point["init"]) else point_key(point)

    def run(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        from .. import data

        task = data.load(cfg.task)  # parsed once here, not once per point
        if len(points) > 1 and task.kind == "lm":
            return self._batched(cfg, points, out)
        metric, _ = self.metric(cfg, task)
        return [self._one(cfg, p, out, metric) for p in points]

    def _batched(self, cfg, points: list[dict], out: Path) -> list[tuple]:
        import hashlib

        from ..experiments import finetune_multi

        tag = hashlib.sha256(json.dumps(points, sort_keys=True).encode()).hexdigest()[:12]
        folder = Path(out) / "trials" / f"batch-{tag}"
        results = finetune_multi.run(cfg, points, folder)
        return [(None if r["diverged_step"] is not None else r["val_perplexity"], {
            "test": r["test_perplexity"], "val_history": r["val_history"], "diverged_step": r["diverged_step"],
            "reason": r["reason"], "seconds": r["seconds"], "batched_with": len(points), "run": str(folder)}) for r in results]

    def _one(self, cfg, p: dict, out: Path, metric: str) -> tuple:
        from ..experiments import finetune_run

        c = dataclasses.replace(cfg, init=p["init"], lr=p["lr"], seed=p["seed"])
        folder = Path(out) / "trials" / slug(p)
        try:
            card = finetune_run.run(c, folder, progress=False)
        except FloatingPointError as e:
            logged = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line]
            div = next((r for r in reversed(logged) if r.get("diverged")), {})
            return None, {"diverged_step": div.get("step"), "reason": div.get("reason", str(e)), "run": str(folder)}
        m = card["metrics"]
        return m["final"][f"val_{metric}"], {
            "test": m["final"].get(f"test_{metric}"), "base_test": m["base_test"].get(f"test_{metric}"),
            "val_history": [{"step": r["step"], "val": r.get(f"val_{metric}")} for r in m["val_history"]],
            "tokens_per_second": card["timing"]["tokens_per_second"], "seconds": card["timing"]["seconds"],
            "diverged_step": None, "reason": None, "run": str(folder)}


def slug(point: dict) -> str:
    """A folder name for a point: 'init_a-lr0.001-seed0'."""
    text = "-".join(f"{k}{v:g}" if isinstance(v, float) else (str(v) if k == "init" else f"{k}{v}") for k, v in sorted(point.items()))
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)


RUNNERS = {"toy": Toy(), "mf": MF(), "finetune": Finetune()}
