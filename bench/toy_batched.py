"""Benchmark: the teacher-student grid of one width trained batched vs one run at a time, in one process.

Baselines, each over the same (init, LR) grid, the same steps and the same logging (train loss every
step; test loss and |Z_A|, |Z_B| every ``log_every`` steps), sharing the precomputed frozen student
and initial factors (built once, timed apart as ``seconds_setup_shared``; the ratio with that time
added to both sides is reported too):
  - reference: the way one would write a single run: plain autograd on eq. (4), torch.optim.AdamW;
  - own-k1:    lorainit's batched code with K = 1, run after run (isolates the gain of batching);
  - bmm head:  the batched program with the hidden layer as batched matmuls instead of the fused
               Triton kernels (isolates the kernels' gain; the same path where Triton is absent).
Optionally (--paper-out) the whole ``paper`` preset is run end to end and its wall time recorded.
Prints a table and writes JSON with device, date and commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorainit import batched, devices, io  # noqa: E402
from lorainit.experiments import toy, toy_head, toy_model, toy_study  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def grid_config(width: int, k: int, steps: int, device: str) -> toy.ToyConfig:
    lrs = tuple(2.0 ** (-12 + 8 * i / max(1, k // 2 - 1)) for i in range(k // 2))  # k/2 LRs from 2^-12 to 2^-4
    return toy.ToyConfig(widths=(width,), lrs=lrs, seeds=1, steps=steps, device=device, log_every=10)


def reference_run(st_train, st_test, y_train, y_test, A0, B0, lr, cfg):
    """One run alone: nn.Parameters, plain autograd, torch.optim.AdamW; losses kept on the device."""
    A, B = torch.nn.Parameter(A0.clone()), torch.nn.Parameter(B0.clone())
    opt = torch.optim.AdamW([A, B], lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0.0)
    losses, logs = [], []
    for t in range(cfg.steps + 1):
        z_a = st_train.Z[0] @ A.T  # (N, r)
        h = st_train.P[0] + cfg.scaling * z_a @ B.T  # (N, n)
        loss = ((torch.relu(h) @ st_train.w_out[0] - y_train) ** 2).mean()
        losses.append(loss.detach())
        if t % cfg.log_every == 0 or t == cfg.steps:
            with torch.no_grad():
                test = ((torch.relu(st_test.P[0] + (st_test.Z[0] @ A.T) @ B.T) @ st_test.w_out[0] - y_test) ** 2).mean()
                logs.append(torch.stack([test, z_a.norm(dim=1).mean(), (z_a @ B.T).norm(dim=1).mean()]))
        if t < cfg.steps:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return torch.stack(losses)


def own_k1_run(st_train, st_test, y_train, y_test, A0, B0, lr, cfg):
    A, B = A0[None].clone().requires_grad_(True), B0[None].clone().requires_grad_(True)

    def loss_fn(params, log):
        out, Z_A = toy_model.forward(st_train, *params, cfg.scaling)
        return ((out - y_train) ** 2).mean(-1), toy_model.feature_norms(Z_A.detach(), params[1].detach()) if log else {}

    def evaluate(params):
        return {"test_loss": ((toy_model.forward(st_test, *params, cfg.scaling)[0] - y_test) ** 2).mean(-1)}

    opt = batched.AdamW(beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps)
    h = batched.fit(
        [A, B],
        loss_fn,
        torch.tensor([lr], device=A.device),
        cfg.steps,
        opt=opt,
        log_every=cfg.log_every,
        evaluate=evaluate,
    )
    return h.train_loss[:, 0]


def one_seed(st: toy_model.Student) -> toy_model.Student:
    return toy_model.Student(Z=st.Z[:1], P=st.P[:1], w_out=st.w_out[:1], W_h=st.W_h[:1])


def bench_grid(width: int, k: int, steps: int, device: torch.device, repeats: int) -> dict:
    cfg = grid_config(width, k, steps, str(device))
    data = toy_model.teacher_data(cfg)
    y_train, y_test = data["Y_train"].to(device), data["Y_test"].to(device)
    sync(device)
    t0 = time.perf_counter()
    setup = toy.setup_width(cfg, width, data, device)  # students and inits: shared by every timed path
    sync(device)
    setup_seconds = time.perf_counter() - t0
    st, A0, B0, grid = setup.students, setup.A, setup.B, setup.grid
    sts = (one_seed(st["train"]), one_seed(st["test"]), y_train, y_test)

    def batched_all():
        return toy.train_width(cfg, width, data, device, setup=setup)

    def batched_bmm():  # the same batched program with the hidden layer as batched matmuls (no Triton)
        with mock.patch.object(toy_head, "fused_available", lambda x: False):
            return batched_all()

    def sequential(fn):
        return [fn(*sts, A0[i], B0[i], lr, cfg) for i, (_, _, lr) in enumerate(grid)]

    paths = {
        "batched": batched_all,
        "batched_bmm": batched_bmm,
        "reference": lambda: sequential(reference_run),
        "own_k1": lambda: sequential(own_k1_run),
    }
    # warm-up: CUDA context, kernels (Triton compiles here), allocator
    w = dataclasses.replace(cfg, steps=5)
    toy.train_width(w, width, data, device, setup=setup)
    with mock.patch.object(toy_head, "fused_available", lambda x: False):
        toy.train_width(w, width, data, device, setup=setup)
    reference_run(*sts, A0[0], B0[0], 1e-3, w)
    own_k1_run(*sts, A0[0], B0[0], 1e-3, w)
    times: dict[str, list[float]] = {name: [] for name in paths}
    peak = {}
    for _ in range(repeats):
        for name, fn in paths.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
            if name == "batched":
                final_b = torch.tensor(
                    [float("nan") if r["train_loss"][-1] is None else r["train_loss"][-1] for r in out["runs"]],
                    dtype=torch.float64,
                )
            elif name == "reference":
                final_r = torch.stack([c[-1] for c in out]).double().cpu()
    best = {k_: min(v) for k_, v in times.items()}
    # agreement over runs the batched path did not stop (the reference has no divergence stop)
    lrs = torch.tensor([lr for _, _, lr in grid], dtype=torch.float64)
    ok = torch.isfinite(final_b) & torch.isfinite(final_r)
    rel = (final_b - final_r).abs() / final_r.abs()
    low = ok & (lrs <= 2.0**-8)
    return {
        "width": width,
        "runs": len(grid),
        "steps": steps,
        "fused_head": toy_head.fused_available(st["train"].P),
        "seconds_setup_shared": setup_seconds,
        "seconds_batched": best["batched"],
        "seconds_batched_bmm_head": best["batched_bmm"],
        "seconds_reference_one_at_a_time": best["reference"],
        "seconds_own_code_one_at_a_time": best["own_k1"],
        "speedup_vs_reference": best["reference"] / best["batched"],
        "speedup_vs_own_k1": best["own_k1"] / best["batched"],
        "speedup_fused_vs_bmm_head": best["batched_bmm"] / best["batched"],
        "speedup_vs_reference_with_setup": (setup_seconds + best["reference"]) / (setup_seconds + best["batched"]),
        "all_times": times,
        "peak_mib": peak or None,
        "final_train_loss_rel_diff_batched_vs_reference": {
            "runs_compared": int(ok.sum()),
            "runs_stopped_by_batched": int((~torch.isfinite(final_b)).sum()),
            "median": rel[ok].median().item(),
            "max_lr_le_2^-8": rel[low].max().item() if low.any() else None,
            "max": rel[ok].max().item(),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="1024,8192", help="widths to time (comma-separated)")
    p.add_argument("--runs", default="16,64", help="grid sizes K (2 inits x K/2 LRs)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions; the best is reported")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--paper-out", type=Path, default=None, help="also run the whole 'paper' preset into this folder and time it"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON result file")
    a = p.parse_args()
    device = devices.resolve_device(a.device)
    result = {"benchmark": "toy_batched", "provenance": io.provenance(), "paper_preset": None, "grids": []}
    if a.paper_out is not None:
        cfg = toy_study.preset("paper", device=str(device))
        sync(device)
        t0 = time.perf_counter()
        toy_study.run_study(cfg, a.paper_out, overwrite=True, progress=False)
        sync(device)
        paper = {
            "wall_seconds": time.perf_counter() - t0,
            "widths": list(cfg.widths),
            "runs_per_width": cfg.seeds * len(cfg.inits) * len(cfg.lrs),
            "steps": cfg.steps,
        }
        result["paper_preset"] = paper
        io.write_json(a.out, result)
        print(
            f"paper preset end to end: {paper['wall_seconds']:.1f}s "
            f"({len(cfg.widths)} widths x {paper['runs_per_width']} runs x {cfg.steps} steps)",
            flush=True,
        )
    for width in map(int, a.widths.split(",")):
        for k in map(int, a.runs.split(",")):
            r = bench_grid(width, k, a.steps, device, a.repeats)
            result["grids"].append(r)
            io.write_json(a.out, result)  # partial results survive an interruption
            print(
                f"width {width:5d} K={k:3d}: batched {r['seconds_batched']:.2f}s (bmm head {r['seconds_batched_bmm_head']:.2f}s)  "
                f"one-at-a-time reference {r['seconds_reference_one_at_a_time']:.2f}s ({r['speedup_vs_reference']:.1f}x; "
                f"{r['speedup_vs_reference_with_setup']:.1f}x with the {r['seconds_setup_shared']:.2f}s setup)  own K=1 "
                f"{r['seconds_own_code_one_at_a_time']:.2f}s ({r['speedup_vs_own_k1']:.1f}x)  "
                f"final-loss rel diff median {r['final_train_loss_rel_diff_batched_vs_reference']['median']:.1e}",
                flush=True,
            )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
