"""A training run's folder: the one place that knows its layout (issue 20, item 5).

    log.jsonl       one JSON record per line: per optimizer step {"step", "loss", "lr", "elapsed", ...}, per
                    evaluation {"step", <metrics>, ...}, at the start {"step": 0, "base": ...}
    checkpoint/     the loop's resumable state (``checkpoint.save_checkpoint``): state.json {"step", ...} and tensors;
                    removed once the run is finished
    run_card.json   what a finished run leaves (``experiments.finetune_card``): config, metrics, divergence, timing

The training loop writes the checkpoint, the fine-tune writes the log and the card; readers (resume, sweeps,
benchmarks) ask this class instead of rebuilding paths and re-parsing the log.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import io

LOG, CHECKPOINT, CARD = "log.jsonl", "checkpoint", "run_card.json"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def card_path(self) -> Path:
        return self.path / CARD

    def checkpoint_state(self) -> dict | None:
        """The checkpoint's state.json ({"step", "processes", ...}), or None without a checkpoint."""
        state = self.checkpoint / "state.json"
        return json.loads(state.read_text()) if state.exists() else None

    def resume_step(self) -> int:
        """The step a re-run starts from: the checkpoint's, or 0."""
        state = self.checkpoint_state()
        return state["step"] if state else 0

    def records(self) -> list[dict]:
        """Every record of the log, in order ([] without a log)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def steps(self) -> list[dict]:
        """The optimizer steps' records (those with a "loss")."""
        return [r for r in self.records() if "loss" in r]

    def open_log(self, resume_step: int):
        """(log, file, kept): ``log(record)`` appends one record and flushes; on resume the records of steps at or
        past ``resume_step`` (which the checkpoint does not cover) are dropped first, and ``kept`` are the records
        left. Close ``file`` when done."""
        keep = [r for r in self.records() if r.get("step", 0) < resume_step] if resume_step else []
        io.write_text(self.log, "".join(json.dumps(r) + "\n" for r in keep))
        f = open(self.log, "a")

        def log(rec: dict) -> None:
            f.write(json.dumps(rec) + "\n")
            f.flush()

        return log, f, keep

    def card(self) -> dict | None:
        """The run card of a finished run, or None."""
        return io.read_json(self.card_path) if self.card_path.exists() else None
