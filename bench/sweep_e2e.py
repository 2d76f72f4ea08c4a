"""Benchmark: an end-to-end ``lorainit sweep`` of a real fine-tune, batched (--batch K) vs one point at a time
(--batch 1), each a real CLI process from start to report-ready study, run side by side on two GPUs of one host
(or one after the other on one GPU).

The batched side runs the whole grid. The one-at-a-time side runs every init at ``--single-lrs`` of the grid's
learning rates (all of them with --single-lrs 0): at --batch 1 a point costs the same whatever its LR, except the
init's data pass, which the sweep folder's start cache pays once per (init, seed). So its time for the whole grid
is estimated as its measured wall time plus, for each point it did not run, the median time of its points without
their data pass. Both the measured and the estimated figures are written, with every point's validation metric on
both sides (they must agree: same starts, same data order, same arithmetic per run). Side by side, each side gets
half the host's CPU threads (``sweeps.gpus.thread_env``, as the two workers of a ``--gpus 2`` sweep), not the whole
host twice over.

    python bench/sweep_e2e.py --model smollm2-135m --task wiki --inits init_a,init_b,pissa,lora_ga,eva,hrp \\
        --lrs 1e-4:1e-2:8 --steps 200 --batch-size 16 --seq-len 256 --out bench/results/sweep_e2e_smollm2_wiki_h100.json
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
from lorainit import cliargs, io  # noqa: E402
from lorainit.sweeps.gpus import thread_env  # noqa: E402
from lorainit.sweeps.store import Store  # noqa: E402


def sweep(args, extra: list[str], lrs: str, batch: int, out: Path, gpu: str | None, threads: dict) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "lorainit",
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
        lrs,
        "--seeds",
        str(args.seeds),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
        "--batch",
        str(batch),
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.update(threads)
    return subprocess.Popen(cmd, env=env, stdout=open(out.with_suffix(".log"), "w"), stderr=subprocess.STDOUT)


def records(folder: Path) -> dict:
    st = Store(f"sqlite:///{folder / 'study.db'}", "sweep")
    st.load()
    return {(r["init"], r["lr"], r["seed"]): r for r in st.records()}


def card(record: dict) -> dict:
    return json.loads((Path(record["run"]) / "run_card.json").read_text())


def batches(records: dict, cards: dict) -> list[dict]:
    """Each batch a side trained (its runs share one timing record): its inits, runs, seconds in all, before the
    loop (load, data passes, attach) and in the loop (compilation, steps, evaluations, checkpoints). ``cards``: each
    record's run card, by the records' keys."""
    seen: dict[tuple, dict] = {}
    for key, r in records.items():
        t = cards[key]["timing"]
        b = seen.setdefault(
            (t["batch_seconds"], t["batch_setup_seconds"], t["loop_seconds"]),
            {
                "runs": t["runs_in_batch"],
                "inits": [],
                "batch_s": t["batch_seconds"],
                "setup_s": t["batch_setup_seconds"],
                "loop_s": t["loop_seconds"],
            },
        )
        if r["init"] not in b["inits"]:
            b["inits"].append(r["init"])
    return sorted(seen.values(), key=lambda b: b["inits"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="wiki")
    ap.add_argument("--inits", default="init_a,init_b,pissa,lora_ga,eva,hrp")
    ap.add_argument("--lrs", default="1e-4:1e-2:8")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="points per batch on the batched side")
    ap.add_argument(
        "--single-lrs",
        type=int,
        default=2,
        help="LRs per init on the one-at-a-time side, spread over the grid from its lowest to its highest (1: the "
        "middle one; 0: all)",
    )
    ap.add_argument("--extra", default="", help="more sweep flags for both sides, space-separated")
    ap.add_argument(
        "--work", type=Path, default=None, help="where the two sweep folders go (default: a temporary folder)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    lrs = cliargs.parse_range(args.lrs, float)
    pick = (
        lrs
        if not args.single_lrs
        else [lrs[len(lrs) // 2]]  # one: the grid's middle, where runs learn (the lowest may not move the metric)
        if args.single_lrs == 1
        else [lrs[round(i * (len(lrs) - 1) / max(1, args.single_lrs - 1))] for i in range(args.single_lrs)]
    )
    single_lrs = ",".join(repr(x) for x in dict.fromkeys(pick))
    work = args.work or Path(tempfile.mkdtemp(prefix="sweep_e2e."))
    work.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    extra = args.extra.split()
    t0 = time.perf_counter()
    threads = thread_env(2) if gpus > 1 else {}  # side by side: each side half the host's threads, as 2 workers
    a = sweep(args, extra, ",".join(repr(x) for x in lrs), args.batch, work / "batched", "0" if gpus else None, threads)
    if gpus < 2:
        a.wait()
    t1 = time.perf_counter()
    b = sweep(args, extra, single_lrs, 1, work / "single", ("1" if gpus > 1 else "0") if gpus else None, threads)
    ends, running = {}, {"batched": (a, t0), "single": (b, t1)}
    while running:  # each side's wall time ends when its own process does
        for name, (proc, start) in list(running.items()):
            if proc.poll() is not None:
                ends[name] = time.perf_counter() - start
                del running[name]
                if proc.returncode:
                    raise SystemExit(f"the {name} sweep failed (exit {proc.returncode}); see {work / name}.log")
        time.sleep(0.2)
    many, one = records(work / "batched"), records(work / "single")
    rel = []
    pairs = []
    for key, r1 in sorted(one.items()):
        rk = many[key]
        same_state = r1["state"] == rk["state"]
        d = abs(rk["value"] - r1["value"]) / abs(r1["value"]) if r1["state"] == rk["state"] == "COMPLETE" else None
        if d is not None:
            rel.append(d)
        pairs.append(
            {
                "init": key[0],
                "lr": key[1],
                "seed": key[2],
                "batched": rk["value"],
                "single": r1["value"],
                "state": [rk["state"], r1["state"]],
                "same_state": same_state,
                "rel_diff": d,
            }
        )
    many_cards, one_cards = ({k: card(r) for k, r in side.items()} for side in (many, one))
    for p in pairs:  # both training-loss curves, every 10th step: a point that disagrees can be read from the JSON
        key = (p["init"], p["lr"], p["seed"])
        p["train_loss_every_10_steps"] = {
            side: [round(x, 5) for x in cards[key]["metrics"]["train_loss"][::10]]
            for side, cards in (("batched", many_cards), ("single", one_cards))
        }
    marginal = statistics.median(
        c["timing"]["batch_seconds"] - c["init"]["starts"]["seconds"] for c in one_cards.values()
    )
    full_estimate = ends["single"] + (len(many) - len(one)) * marginal
    res = {
        "benchmark": "sweep_e2e",
        "provenance": io.provenance(),
        "config": vars(args) | {"out": str(args.out), "work": str(work)},
        "threads_per_side": threads or None,  # (the variables the user set none of)
        "gpus": gpus,
        "side_by_side": gpus > 1,
        "batched": {
            "points": len(many),
            "wall_s": ends["batched"],
            "per_point_s": ends["batched"] / len(many),
            "diverged": sum(r["state"] == "PRUNED" for r in many.values()),
            "batch_sizes": sorted({r.get("batched_with") for r in many.values()}),
            "batches": batches(many, many_cards),
        },
        "single": {
            "points": len(one),
            "lrs": single_lrs,
            "wall_s": ends["single"],
            "per_point_s": ends["single"] / len(one),
            "median_point_s_without_data_pass": marginal,
            "estimated_wall_s_for_the_whole_grid": full_estimate,
            **(
                {"estimate_caveat": "fewer than 3 points: the median includes one-time costs (model load, compilation)"}
                if len(one) < 3
                else {}
            ),
            "batches": batches(one, one_cards),
        },
        "speedup_per_point": (ends["single"] / len(one)) / (ends["batched"] / len(many)),
        "speedup_whole_grid_estimated": full_estimate / ends["batched"],
        "agreement": {
            "points_compared": len(pairs),
            "same_state": all(p["same_state"] for p in pairs),
            "median_rel_diff_val_metric": statistics.median(rel) if rel else None,
            "max_rel_diff_val_metric": max(rel) if rel else None,
            "points": pairs,
        },
    }
    print(json.dumps({k: v for k, v in res.items() if k not in ("agreement", "config", "provenance")}, indent=1))
    print("agreement:", {k: v for k, v in res["agreement"].items() if k != "points"})
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
