"""The ``finetune`` experiment of ``lorainit sweep`` (the contract: ``experiment.Experiment``), registered here: a
worker's claimed points, whatever their inits, train as K runs on one frozen base (``lorainit.multi`` through
``experiments.finetune_run``). An outcome is (value, attrs): value is the final validation metric (None for a
diverged run), attrs the test metric, curves and divergence step and reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..experiments import finetune
from ..full import FULL
from .experiment import Experiment, register
from .grid import point_key


class Finetune(Experiment):
    """A real fine-tune (``lorainit finetune``); value: the final validation metric, test reported beside it.
    A worker's claimed points, whatever their inits, train together as K runs on one frozen base
    (``experiments.finetune_run``) in a batch folder ``trials/batch-<hash>``; each point's adapter and run card go to
    ``trials/<point>``, and every batch shares the starts cached in ``inits/``. A ``full`` point (full fine-tuning)
    is claimed alone, so a worker trains it as a batch of one while other workers go on with LoRA batches. A point
    whose run card is already there (its batch finished but the worker died before recording it) is not trained again. A batch that does not
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

        name = data.metric_of(cfg.task)
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


register(Finetune())
