"""Benchmark: a host's GPUs on one sweep (``--gpus``) and one data-parallel fine-tune (torchrun), vs one GPU.

1. The same ``lorainit sweep --experiment finetune`` on one GPU (``--gpus 1``) and on ``--gpus N``, one after
   the other: wall time ratio, and the validation metric of every point on both (each point trains as the same
   batches either way, so they must agree up to float rounding). With ``--warm-up``, the same sweep at 2 steps
   runs first, compiled (``--compile on``: 'auto' compiles from 200 steps), so that neither measured sweep finds
   the compiler's on-disk cache (or the page cache) cold: otherwise the first sweep alone pays inductor's code
   generation, and the order favours the second.
2. ``lorainit finetune`` in one process at B x T, and under ``torchrun --nproc_per_node N`` with
   ``--batch-per-process`` at B x T per process: tokens/s ratio (weak scaling), ``--repeats`` times, the two
   alternating so that a drift of the host or card shows in every pair alike; over the whole loop and in the
   steady state past ``--skip`` warm-up steps (compilation, allocator and NCCL set-up); and at an equal global batch
   (N processes at B/N each) the loss curve against the one-process run's (median relative difference).
3. ``--parts graphs``: the N-process torchrun run of part 2 with ``--cuda-graphs off`` and ``on`` (the compiled
   blocks replayed as CUDA graphs), ``--repeats`` pairs in alternating order: tokens/s ratio, and the two loss
   curves against each other.
Every run is a real CLI process; results in one JSON with device, host CPU, date and commit.

    python bench/scale_out.py --gpus 2 --out bench/results/scale_out_h100x2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lorainit import io  # noqa: E402
from lorainit.runfolder import RunFolder  # noqa: E402
from lorainit.sweeps.gpus import stamp  # noqa: E402
from lorainit.sweeps.store import Store  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}


def timed(cmd: list[str], log: Path) -> float | None:
    """Run ``cmd``; its wall seconds. A fine-tune whose folder (--out) already holds its run card is not run
    again (None): a call killed after its runs is read back with the same command and --work."""
    out = Path(cmd[cmd.index("--out") + 1])
    if RunFolder(out).card_path.exists():
        return None
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - t0


def values(folder: Path) -> dict:
    st = Store(f"sqlite:///{folder / 'study.db'}", "sweep")
    st.load()
    return {(r["init"], r["lr"], r["seed"]): r["value"] for r in st.records()}


def busy(folder: Path, wall: float | None) -> dict:
    """Where a sweep's wall time went: per worker process, its batches (wall from the model load to the last run card,
    the set-up part of it, the training loop), from the run cards of the study's trials; and the wall time outside
    the busiest worker's batches (process start, imports, the study, the report)."""
    st = Store(f"sqlite:///{folder / 'study.db'}", "sweep")
    st.load()
    per: dict[str, set] = {}
    for t in st.study.get_trials(deepcopy=False):
        run, w = t.user_attrs.get("run"), t.user_attrs.get("worker") or {}
        if not run:
            continue
        card = folder / "trials" / Path(run).name / "run_card.json"
        if not card.exists():
            continue
        tm = json.loads(card.read_text())["timing"]
        per.setdefault(f"{w.get('host')}/{w.get('pid')}", set()).add(
            (round(tm["batch_seconds"], 2), round(tm["batch_setup_seconds"], 2), round(tm["loop_seconds"], 2))
        )
    workers = {
        k: {
            "batches": [dict(zip(("seconds", "setup_s", "loop_s"), b)) for b in sorted(v)],
            "busy_s": sum(b[0] for b in v),
        }
        for k, v in per.items()
    }
    top = max((w["busy_s"] for w in workers.values()), default=0.0)
    return {"workers": workers, "outside_batches_s": None if wall is None else wall - top}


def timeline(folder: Path, started: str) -> list[str]:
    """The sweep's timeline: when the command started, then every timestamped line of its workers' logs (what each
    worker did, and when the sweep command saw it exit), in time order."""
    lines = [f"{started} sweep command started"]
    for log in sorted((folder / "workers").glob("gpu*.log")):
        lines += [f"{ln} [{log.stem}]" for ln in log.read_text().splitlines() if ln[:2].isdigit() and ln[2:3] == ":"]
    return sorted(lines)


def steady(folder: Path, skip: int) -> float:
    """Tokens/s between step ``skip`` and the last step (the first steps' warm-up left out), from log.jsonl's
    per-step elapsed seconds and the run card's token count (the same every step: an LM task's blocks)."""
    steps, card = RunFolder(folder).steps(), RunFolder(folder).card()
    per_step = card["timing"]["tokens_per_second"] * card["timing"]["loop_seconds"] / len(steps)
    a, b = steps[skip], steps[-1]
    return per_step * (b["step"] - a["step"]) / (b["elapsed"] - a["elapsed"])


def losses(folder: Path) -> list[float]:
    return [r["loss"] for r in RunFolder(folder).steps()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="wiki")
    ap.add_argument("--inits", default="init_a,init_b")
    ap.add_argument("--lrs", default="1e-4:1e-2:8")
    ap.add_argument("--sweep-steps", type=int, default=200)
    ap.add_argument("--sweep-batch-size", type=int, default=16)
    ap.add_argument("--sweep-seq-len", type=int, default=256)
    ap.add_argument("--sweep-seeds", type=int, default=1, help="seeds per (init, LR): points = inits x LRs x seeds")
    ap.add_argument("--warm-up", action="store_true", help="run the sweep at 2 steps first (see part 1)")
    ap.add_argument("--steps", type=int, default=150, help="steps of the data-parallel runs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1, help="one-process / N-process pairs of part 2, alternating")
    ap.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the steady-state tokens/s")
    ap.add_argument("--parts", default="sweep,dp", help="which parts to run: sweep, dp, graphs (comma-separated)")
    ap.add_argument("--extra", default="", help="more flags for every command, space-separated (e.g. --device cpu)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_out."))
    work.mkdir(parents=True, exist_ok=True)
    extra, lorainit = args.extra.split(), [sys.executable, "-m", "lorainit"]
    sweep = [
        *lorainit,
        "sweep",
        "--experiment",
        "finetune",
        "--model",
        args.model,
        "--task",
        args.task,
        "--inits",
        args.inits,
        "--lrs",
        args.lrs,
        "--steps",
        str(args.sweep_steps),
        "--batch-size",
        str(args.sweep_batch_size),
        "--seq-len",
        str(args.sweep_seq_len),
        "--seeds",
        str(args.sweep_seeds),
        "--no-progress",
        *extra,
    ]
    sweep_part = None
    if "sweep" in args.parts:
        steps_at = sweep.index("--steps") + 1
        warm = (
            timed(
                [
                    *sweep[:steps_at],
                    "2",
                    *sweep[steps_at + 1 :],
                    "--compile",
                    "on",
                    "--gpus",
                    "1",
                    "--out",
                    str(work / "warmup"),
                ],
                work / "warmup.log",
            )
            if args.warm_up
            else None
        )
        started = [stamp()]
        one = timed([*sweep, "--gpus", "1", "--out", str(work / "sweep1")], work / "sweep1.log")
        started.append(stamp())
        many = timed(
            [*sweep, "--gpus", str(args.gpus), "--out", str(work / f"sweep{args.gpus}")], work / f"sweep{args.gpus}.log"
        )
        v1, vn = values(work / "sweep1"), values(work / f"sweep{args.gpus}")
        rel = [abs(vn[k] - v) / abs(v) for k, v in v1.items() if v is not None and vn.get(k) is not None]
        sweep_part = {
            "wall_s_1_gpu": one,
            f"wall_s_{args.gpus}_gpus": many,
            "speedup": one / many,
            "points": len(v1),
            "warm_up_s": warm,
            "median_rel_diff_val_metric": statistics.median(rel) if rel else None,
            "max_rel_diff_val_metric": max(rel) if rel else None,
            "time_1_gpu": busy(work / "sweep1", one),
            f"time_{args.gpus}_gpus": busy(work / f"sweep{args.gpus}", many),
            "timeline_1_gpu": timeline(work / "sweep1", started[0]),
            f"timeline_{args.gpus}_gpus": timeline(work / f"sweep{args.gpus}", started[1]),
        }
        if args.out:  # written now too: a call that runs out of time in part 2 still keeps part 1
            io.write_json(
                args.out,
                {
                    "benchmark": "scale_out",
                    "provenance": io.provenance(),
                    "config": vars(args) | {"out": str(args.out), "work": str(work)},
                    "sweep": sweep_part,
                    "data_parallel": None,
                },
            )
    ft = [
        *lorainit,
        "finetune",
        "--model",
        args.model,
        "--task",
        args.task,
        "--steps",
        str(args.steps),
        "--seq-len",
        str(args.seq_len),
        "--eval-every",
        str(args.steps),
        "--checkpoint-every",
        str(args.steps),
        "--max-eval",
        "32",
        "--no-progress",
        *extra,
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(args.gpus),
        "-m",
        "lorainit",
    ]
    per_process = [*torchrun, *ft[3:], "--batch-size", str(args.batch_size), "--batch-per-process"]  # B x T each
    card = lambda f: RunFolder(work / f).card()  # noqa: E731
    dp = None
    if "dp" in args.parts:
        pairs = []
        for r in range(args.repeats):
            timed([*ft, "--batch-size", str(args.batch_size), "--out", str(work / f"ft1_{r}")], work / f"ft1_{r}.log")
            timed([*per_process, "--out", str(work / f"ftn_{r}")], work / f"ftn_{r}.log")
            pairs.append(
                (
                    card(f"ft1_{r}")["timing"]["tokens_per_second"],
                    card(f"ftn_{r}")["timing"]["tokens_per_second"],
                    steady(work / f"ft1_{r}", args.skip),
                    steady(work / f"ftn_{r}", args.skip),
                )
            )
        timed(
            [*torchrun, *ft[3:], "--batch-size", str(args.batch_size), "--out", str(work / "ftn_same")],
            work / "ftn_same.log",
        )
        curve = [abs(a - b) / abs(b) for a, b in zip(losses(work / "ftn_same"), losses(work / "ft1_0"))]
        ratios, steady_ratios = [p[1] / p[0] for p in pairs], [p[3] / p[2] for p in pairs]
        dp = {
            "tokens_per_s_1_process": [p[0] for p in pairs],
            f"tokens_per_s_{args.gpus}_processes_batch_per_process": [p[1] for p in pairs],
            "speedup_weak_scaling_per_pair": ratios,
            "speedup_weak_scaling_median": statistics.median(ratios),
            "speedup_weak_scaling_range": [min(ratios), max(ratios)],
            f"steady_tokens_per_s_1_process_after_step_{args.skip}": [p[2] for p in pairs],
            f"steady_tokens_per_s_{args.gpus}_processes_after_step_{args.skip}": [p[3] for p in pairs],
            "steady_speedup_per_pair": steady_ratios,
            "steady_speedup_median": statistics.median(steady_ratios),
            "steady_speedup_range": [min(steady_ratios), max(steady_ratios)],
            "equal_global_batch_loss_median_rel_diff": statistics.median(curve),
            "equal_global_batch_loss_max_rel_diff": max(curve),
        }
    graphs = None
    if "graphs" in args.parts:
        rows = []
        for r in range(args.repeats):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                timed(
                    [*per_process, "--cuda-graphs", mode, "--out", str(work / f"g{mode}_{r}")],
                    work / f"g{mode}_{r}.log",
                )
            rows.append(
                {
                    m: (card(f"g{m}_{r}")["timing"]["tokens_per_second"], steady(work / f"g{m}_{r}", args.skip))
                    for m in ("off", "on")
                }
            )
        whole, calm = [x["on"][0] / x["off"][0] for x in rows], [x["on"][1] / x["off"][1] for x in rows]
        curve = [abs(a - b) / abs(b) for a, b in zip(losses(work / "gon_0"), losses(work / "goff_0"))]
        graphs = {
            "processes": args.gpus,
            "modes": [card(f"g{m}_0")["execution"]["compile_mode"] for m in ("off", "on")],
            "tokens_per_s_off": [x["off"][0] for x in rows],
            "tokens_per_s_on": [x["on"][0] for x in rows],
            "speedup_per_pair": whole,
            "speedup_median": statistics.median(whole),
            f"steady_tokens_per_s_off_after_step_{args.skip}": [x["off"][1] for x in rows],
            f"steady_tokens_per_s_on_after_step_{args.skip}": [x["on"][1] for x in rows],
            "steady_speedup_per_pair": calm,
            "steady_speedup_median": statistics.median(calm),
            "loss_on_vs_off_median_rel_diff": statistics.median(curve),
            "loss_on_vs_off_max_rel_diff": max(curve),
        }
    prov = io.provenance()
    if dp is not None and prov["device"] != card("ft1_0")["provenance"]["device"]:  # read back elsewhere: the runs' own
        prov = {**card("ft1_0")["provenance"], "read_back": prov}
    res = {
        "benchmark": "scale_out",
        "provenance": prov,
        "config": vars(args) | {"out": str(args.out), "work": str(work)},
        "sweep": sweep_part,
        "data_parallel": dp,
        "graphs_under_torchrun": graphs,
    }
    print(json.dumps({k: res[k] for k in ("sweep", "data_parallel", "graphs_under_torchrun")}, indent=1))
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
