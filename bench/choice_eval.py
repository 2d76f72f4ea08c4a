"""Benchmark: multiple-choice evaluation (mathqa) of K stacked runs, each question scored once with its options on
its key/value cache (``finetune_eval._scores_shared``) vs each question + option text scored whole
(``_scores_whole``, how every study before it was evaluated), side by side in one process on the same model, runs
and questions, alternating ``--repeats`` times. Reports seconds, the ratio, and the agreement: each run's accuracy
under both, and the largest difference of an option's total log-likelihood.

    python bench/choice_eval.py --k 8 --questions 200 --out bench/results/choice_eval_h100.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import torch  # noqa: E402

from lorainit import data, devices, io, models, multi, starts  # noqa: E402
from lorainit.experiments import finetune_eval, finetune_train  # noqa: E402
from lorainit.experiments.finetune import FinetuneConfig  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def attach(model, K: int) -> None:
    """K init_b runs with A moved off zero (B A != 0: runs that differ, as after training)."""
    linears = multi.targets_of(model, TARGETS)
    fs = []
    for k in range(K):
        f = {}
        for n, m in linears.items():
            d = starts.draw("init_b", m.weight, 16, seed=k, layer=n, layer_scaling=1.0)
            g = torch.Generator().manual_seed(k)
            f[starts.PEFT_PREFIX + n] = dataclasses.replace(
                d, A=d.A + 0.02 * torch.randn(d.A.shape, generator=g).to(d.A.device)
            )
        fs.append(f)
    multi.attach(model, [multi.Run("init_b", 1e-3, seed=k) for k in range(K)], fs, scaling=1.0, targets=TARGETS)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(way, model, K, task, tok, cfg, device) -> tuple[float, dict, list]:
    """Seconds, accuracies and every option score of one evaluation with ``way`` as the scorer."""
    scores = []
    inner = way

    def keep(*a):
        s = inner(*a)
        scores.append(s)
        return s

    shared, whole = finetune_eval._scores_shared, finetune_eval._scores_whole
    finetune_eval._scores_shared = finetune_eval._scores_whole = keep
    try:
        _sync()
        t0 = time.perf_counter()
        with finetune_train.evaluating(device):
            acc = finetune_eval.evaluate(model, K, task, tok, "val", cfg, device)
        _sync()
        return time.perf_counter() - t0, acc, scores
    finally:
        finetune_eval._scores_shared, finetune_eval._scores_whole = shared, whole


def profile(ways, model, K, task, tok, device, path: Path) -> dict:
    """One evaluation per scorer under torch.profiler: the operator tables go to ``path``; returned, per scorer, the
    wall seconds and the summed self time of the CUDA kernels (a wall far above it: the evaluation waits on the host)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out, text = {}, []
    for w, (f, c) in ways.items():
        with prof(activities=acts) as p:
            s, _, _ = timed(f, model, K, task, tok, c, device)
        ev = p.key_averages()
        gpu = sum(e.self_device_time_total for e in p.events() if e.device_type.name == "CUDA") / 1e6  # kernels only
        out[w] = {"wall_s": s, "device_self_s": gpu}
        text += [
            f"== {w}: K={K}, wall {s:.3f} s, CUDA kernels {gpu:.3f} s",
            ev.table(sort_by="self_cpu_time_total", row_limit=25),
        ]
        if device.type == "cuda":
            text.append(ev.table(sort_by="self_device_time_total", row_limit=15))
    path.write_text("\n".join(text))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--questions", type=int, default=200, help="validation questions evaluated")
    ap.add_argument("--batch-size", type=int, default=16, help="questions per evaluation batch (as the sweeps)")
    ap.add_argument(
        "--eval-batch-sizes",
        default="",
        help="also time the cached-prefix scorer at these questions per batch (comma-separated; --eval-batch-size)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also profile one evaluation per scorer (CPU + CUDA) into this text file",
    )
    args = ap.parse_args()
    device = devices.resolve_device(args.device)
    cfg = FinetuneConfig(
        task="mathqa",
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,  # (not the default: --batch-size is what this bench times)
        max_eval=args.questions,
        device=str(device),
    )
    task = data.load("mathqa")
    model, tok, _, _ = models.load("smollm2-135m", dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device).eval().requires_grad_(False)  # as finetune_setup loads it
    attach(model, args.k)
    base = {"shared": finetune_eval._scores_shared, "whole": finetune_eval._scores_whole}
    ways = {w: (f, cfg) for w, f in base.items()}  # name: (scorer, config)
    for b in [int(x) for x in args.eval_batch_sizes.split(",") if x.strip()]:
        ways[f"shared_b{b}"] = (base["shared"], dataclasses.replace(cfg, eval_batch_size=b))
    timed(base["shared"], model, args.k, task, tok, cfg, device)  # warm-up: allocator, kernels, tokenizer caches
    seconds, last, peak = {w: [] for w in ways}, {}, {}
    for _ in range(args.repeats):
        for w, (f, c) in ways.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            s, acc, scores = timed(f, model, args.k, task, tok, c, device)
            seconds[w].append(s)
            peak[w] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            last[w] = {"acc": acc["val_accuracy"], "scores": torch.cat(scores, 1)}  # (K, every option)
    diff = (last["shared"]["scores"] - last["whole"]["scores"]).abs()
    med = {w: sorted(v)[len(v) // 2] for w, v in seconds.items()}
    res = {
        "benchmark": "choice_eval",
        "provenance": io.provenance(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": seconds,
        "median_seconds": med,
        "speedup_median": med["whole"] / med["shared"],
        "speedup_median_vs_whole": {w: med["whole"] / m for w, m in med.items() if w != "whole"},
        "peak_gib": peak,
        "accuracy": {w: last[w]["acc"] for w in ways},
        "max_abs_score_diff": float(diff.max()),
        "max_abs_score_diff_vs_shared": {
            w: float((last[w]["scores"] - last["shared"]["scores"]).abs().max())
            for w in ways
            if w.startswith("shared_")
        },
        "mean_abs_score": float(last["whole"]["scores"].abs().mean()),
    }
    if args.profile:
        res["profile"] = profile(ways, model, args.k, task, tok, device, args.profile)
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}, indent=1))
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
