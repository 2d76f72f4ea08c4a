"""Benchmark: where one sweep batch's wall time goes. K fine-tunes of one init at K learning rates train together
(``experiments.finetune_run.run``, exactly what a sweep worker runs per batch) while each phase is timed, the
GPU synchronized at its edges: the process start and imports, the CUDA context, the set-up (model files
read, model and tokenizer built, task read, its training data tokenized, the model fingerprint, starts, adapters
attached, optimizer), every evaluation (per split), the |Z_A|/|Z_B|
probe, every checkpoint, and the rest of the loop (training steps). Written to JSON with the provenance.

    python bench/batch_phases.py --task mathqa --k 8 --steps 200 --out bench/results/batch_phases_mathqa_h200.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import torch  # noqa: E402
from torch.nn.attention import sdpa_kernel  # noqa: E402

from lorainit import batches, checkpoint, data, io, models, multi, speed, train  # noqa: E402
from lorainit.experiments import finetune_eval, finetune_run, finetune_setup, finetune_train  # noqa: E402
from lorainit.experiments.finetune import FinetuneConfig  # noqa: E402
from lorainit.sweeps.liveness import process_age  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import multi_run  # noqa: E402

SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(module, name: str, label=None) -> None:
    """Replace ``module.name`` by a wrapper adding its synchronized wall time to SECONDS[label(args) or name]."""
    inner = getattr(module, name)

    def wrapper(*args, **kw):
        _sync()
        t = time.perf_counter()
        try:
            return inner(*args, **kw)
        finally:
            _sync()
            key = label(*args, **kw) if label else name
            SECONDS[key] += time.perf_counter() - t
            CALLS[key] += 1

    setattr(module, name, wrapper)


def profiled(path: Path, first: int, steps: int) -> None:
    """Profile training steps first .. first+steps-1 (CPU and CUDA activity): ``multi.optimizer``'s optimizer
    advances the profiler's schedule at each ``step()``; the tables go to ``path`` when the window closes. The
    window's steps are slower than the others (the profiler's own cost) and step_times does not leave them out:
    compare step medians of runs without --profile."""
    from torch.profiler import ProfilerActivity, profile, schedule

    def ready(prof) -> None:
        tables = [
            prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
            for key in ("cuda_time_total", "cpu_time_total")
        ]
        path.write_text(f"steps {first}..{first + steps - 1}, by GPU time then by CPU time\n" + "\n".join(tables))

    prof = profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
        schedule=schedule(wait=first - 2, warmup=2, active=steps, repeat=1),
        on_trace_ready=ready,
    )
    build = multi.optimizer

    def optimizer(*a, **kw):
        opt = build(*a, **kw)
        inner = opt.step

        def step(*sa, **skw):
            out = inner(*sa, **skw)
            prof.step()
            return out

        opt.step = step
        prof.start()
        return opt

    multi.optimizer = optimizer


def step_times(log: Path, eval_every: int) -> dict:
    """Median wall seconds of a training step, from the log's "elapsed" (seconds since the loop began, evaluations
    included): differences between consecutive steps, leaving out those that contain an evaluation or a checkpoint
    (a step that is a multiple of eval_every: checkpoints here fall on the same steps) and the first two steps
    (compilation, warm-up)."""
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    at = {r["step"]: r["elapsed"] for r in recs if "elapsed" in r}
    diffs = [
        at[s] - at[s - 1] for s in sorted(at) if s >= 2 and s - 1 in at and s % eval_every and (s - 1) % eval_every
    ]
    if not diffs:
        return {}
    return {"median_step_seconds": statistics.median(diffs), "steps_timed": len(diffs), "first_step_elapsed": at.get(0)}


def _time_autotuning() -> None:
    """Triton's autotuner benchmarking its configs (``Autotuner._bench``, one call per config and key): inside the
    first training step, part of what the compile costs. Counted under the phase ``autotune_bench``."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:  # (a CPU-only install)
        return
    if hasattr(Autotuner, "_bench"):
        timed(
            Autotuner,
            "_bench",
            lambda self, *a, **k: "autotune_bench." + getattr(getattr(self, "base_fn", None), "__name__", "kernel"),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="mathqa")
    ap.add_argument("--init", default="init_a")
    ap.add_argument("--k", type=int, default=8, help="runs in the batch (learning rates 1e-4 * 2^(k/2))")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--max-eval", type=int, default=0, help="examples (or blocks) per evaluation, 0: all")
    ap.add_argument(
        "--eval-batch-size",
        type=int,
        default=0,
        help="examples per evaluation batch (0: the default, 64 or --batch-size where larger; it was --batch-size before 49e468c)",
    )
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="the fine-tune's --compile")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write torch.profiler tables (by GPU time, by CPU time) of --profile-steps training steps from --profile-from",
    )
    ap.add_argument("--profile-from", type=int, default=101, help="(101: clear of the step-100 evaluation)")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument(
        "--attention",
        choices=("lorainit", "torch", "no-cudnn"),
        default="lorainit",
        help="'torch': torch's own attention kernel choice for padded batches too (cuDNN's on an H100), the "
        "baseline of speed.attention; 'no-cudnn': the padded batches' choice (flash or memory-efficient) for language "
        "modelling too, where lorainit keeps cuDNN's (a candidate: the K=16 wiki profile shows ~260 device-to-device "
        "copies a step)",
    )
    ap.add_argument(
        "--readback",
        choices=("lagged", "wait"),
        default="lagged",
        help="'wait': the host reads each loss as soon as it is computed (a wait for the GPU per micro-batch and "
        "per step, as before the losses were read back late), the baseline of speed.Readback",
    )
    ap.add_argument(
        "--upload",
        choices=("reuse", "pin"),
        default="reuse",
        help="'pin': each training input pinned anew (Tensor.pin_memory, batches.to_device), the baseline of "
        "batches.Uploader",
    )
    ap.add_argument(
        "--checkpoint-write",
        choices=("background", "inline"),
        default="background",
        help="'inline': checkpoints written in the training thread, the baseline of checkpoint.Writer",
    )
    ap.add_argument(
        "--eval-compiled",
        action="store_true",
        help="evaluations run the compiled blocks (a graph for their own shape and no-grad mode, compiled on first "
        "use) instead of eager: the candidate against finetune_train.evaluating's speed.eager",
    )
    ap.add_argument(
        "--lora-path",
        choices=multi_run.LORA_PATHS,
        default="default",
        help=multi_run.lora_path.__doc__.split(": ", 1)[1].rstrip(".") + "; 'baddbmm' is the baseline",
    )
    ap.add_argument(
        "--graphs",
        choices=("auto", "on", "off"),
        default="auto",
        help="the runs' --cuda-graphs: 'auto' is lorainit's choice (CUDA graphs for adapters on language modelling in "
        "one process, since 9f14ca7); 'off' the baseline (compiled blocks in torch.compile's default mode)",
    )
    ap.add_argument(
        "--mark-step",
        action="store_true",
        help="torch.compiler.cudagraph_mark_step_begin() before each training micro-batch (the candidate torch "
        "suggests in its warning 'Unable to hit fast path of CUDAGraphs because of pending, uninvoked backwards')",
    )
    ap.add_argument(
        "--autotune-store",
        choices=("on", "off"),
        default="on",
        help="'off': the Triton kernels tune in this process whatever the machine's store holds "
        "(lorainit.autotune_store), the baseline",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    multi_run.lora_path(args.lora_path)
    if args.mark_step:
        uploader = finetune_train.Uploader

        def marking(device):
            upload = uploader(device)
            return lambda batch: (torch.compiler.cudagraph_mark_step_begin(), upload(batch))[1]

        finetune_train.Uploader = marking
    if args.autotune_store == "off":
        from lorainit import dual_kernels

        for kernel in dual_kernels.TUNED:
            kernel.cache_results = False  # (Triton then never asks the store)
    if args.eval_compiled:
        speed.eager = contextlib.nullcontext
    if args.readback == "wait":

        class Waiting(speed.Readback):
            def __init__(self, t):
                super().__init__(t)
                self.values()  # read at once

        speed.Readback = Waiting
    if args.upload == "pin":
        finetune_train.Uploader = lambda device: lambda batch: batches.to_device(batch, device)
    if args.checkpoint_write == "inline":
        checkpoint.Writer.submit = lambda self, write: write()
    if args.attention == "torch":
        speed.attention = lambda padded: contextlib.nullcontext()
    elif args.attention == "no-cudnn":
        speed.attention = lambda padded: sdpa_kernel(speed.PADDED_ATTENTION)
    cfg = FinetuneConfig(
        model=args.model,
        task=args.task,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        eval_every=args.eval_every,
        checkpoint_every=args.eval_every,
        max_eval=args.max_eval,
        eval_batch_size=args.eval_batch_size,
        compile=args.compile,
        cuda_graphs=args.graphs,
    )
    started = process_age()  # interpreter start and imports, before main (whole seconds of /proc: up to 1 s more)
    if torch.cuda.is_available():  # the CUDA context, which the set-up would otherwise pay in its first copy
        t = time.perf_counter()
        torch.zeros(1, device="cuda")
        _sync()
        SECONDS["cuda_init"] += time.perf_counter() - t
        CALLS["cuda_init"] += 1
    points = [{"init": args.init, "lr": 1e-4 * 2 ** (k / 2), "seed": 0} for k in range(args.k)]
    seen = []  # the first test evaluation is the step-0 one, made before the loop starts

    def evaluation(model, K, task, tok, split, *a, **kw) -> str:
        seen.append(split)
        return "evaluate_test_at_start" if split == "test" and seen.count("test") == 1 else f"evaluate_{split}"

    timed(finetune_eval, "evaluate", evaluation)
    timed(finetune_eval, "features")
    timed(finetune_setup, "load")  # (phases named load.* are parts of load, starts_for.* of starts_for)
    timed(models, "load", lambda *a, **k: "load.models_load")
    timed(models, "fingerprint", lambda *a, **k: "load.fingerprint")
    timed(data, "load", lambda *a, **k: "load.data_load")
    timed(finetune_setup, "items", lambda *a, **k: "starts_for.items")  # (tokenized on the first call only)
    timed(multi, "attach")
    timed(multi, "optimizer")
    timed(finetune_setup, "starts_for")
    if args.profile:
        profiled(args.profile, args.profile_from, args.profile_steps)
    timed(train, "save_checkpoint")
    _time_autotuning()
    with tempfile.TemporaryDirectory() as work:
        _sync()
        t = time.perf_counter()
        cards = finetune_run.run(cfg, points, Path(work) / "batch", progress=False)
        _sync()
        wall = time.perf_counter() - t
        steps = step_times(Path(work) / "batch" / "log.jsonl", args.eval_every)
    loop = cards[0]["timing"]["loop_seconds"]
    inside = sum(v for k, v in SECONDS.items() if k in ("evaluate_val", "evaluate_test", "features", "save_checkpoint"))
    res = {
        "benchmark": "batch_phases",
        "provenance": io.provenance(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_seconds": wall,
        "process_start_and_imports_seconds": started,
        "setup_seconds": cards[0]["timing"].get("batch_setup_seconds"),
        "loop_seconds": loop,
        "training_seconds": loop - inside,
        "phases": {k: {"seconds": v, "calls": CALLS[k]} for k, v in sorted(SECONDS.items())},
        "train_tokens_per_second": cards[0]["timing"]["tokens_per_second"],
        "compiled": cards[0]["execution"]["compile"],
        "steps": steps
        | {"first_steps_excess_seconds": loop - inside - steps["median_step_seconds"] * args.steps if steps else None},
        "final": [c["metrics"]["final"] for c in cards] if "metrics" in cards[0] else None,
    }
    io.write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("provenance", "final")}, indent=1))


if __name__ == "__main__":
    main()
