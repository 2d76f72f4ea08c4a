"""Randomized vs full SVD for PiSSA on pretrained weights: top-r subspace agreement and time (CPU).

The init-cost benchmark (bench/init_cost.py) times PiSSA on random weights, whose flat spectra make any
top-r subspace ill-defined. This measures what matters on real weights: for every adapted projection of
SmolLM2-135M (the package-shipped GGUF, de-quantized), the largest principal-angle sine between the
top-r right singular subspaces of the full SVD and of the randomized SVD (``pissa(niter=K)``), the
mean squared sine over the r angles, and the relative excess error of the rank-r reconstruction ||W - U_r S_r V_r^T||_F against the optimal one.

    python bench/pissa_agreement.py --out bench/results/pissa_agreement_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorainit import io, models  # noqa: E402
from lorainit.inits.spectral import top_svd  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def max_sine(V1: torch.Tensor, V2: torch.Tensor) -> float:
    """Largest principal-angle sine between the row spaces of V1, V2 (r x n, orthonormal rows)."""
    s = torch.linalg.svdvals(V1 @ V2.T).clamp(max=1.0)
    return float((1 - s.min() ** 2).clamp(min=0).sqrt())


def mean_sq_sine(V1: torch.Tensor, V2: torch.Tensor) -> float:
    """Mean squared principal-angle sine: 1 - ||V1 V2^T||_F^2 / r (0: same subspace, 1: orthogonal)."""
    return float(1 - (V1 @ V2.T).pow(2).sum() / V1.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--niters", default="2,4,8")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model, *_ = models.load("smollm2-135m", dtype=torch.float32)
    layers = {n: m.weight.detach().double() for n, m in model.named_modules() if n.split(".")[-1] in TARGETS}
    niters = [int(x) for x in args.niters.split(",")]
    rows = {
        k: {"sine": [], "msq": [], "excess_error": [], "seconds": 0.0} for k in ["full"] + [f"niter{k}" for k in niters]
    }
    for i, (name, W) in enumerate(layers.items()):
        t0 = time.perf_counter()
        U, S, Vh = top_svd(W, args.rank)
        rows["full"]["seconds"] += time.perf_counter() - t0
        best = (W - U @ torch.diag(S) @ Vh).norm()
        for k in niters:
            t0 = time.perf_counter()
            Ur, Sr, Vr = top_svd(W, args.rank, niter=k, generator=torch.Generator().manual_seed(i))
            rows[f"niter{k}"]["seconds"] += time.perf_counter() - t0
            rows[f"niter{k}"]["sine"].append(max_sine(Vh, Vr))
            rows[f"niter{k}"]["msq"].append(mean_sq_sine(Vh, Vr))
            rows[f"niter{k}"]["excess_error"].append(float((W - Ur @ torch.diag(Sr) @ Vr).norm() / best - 1))
    summary = {}
    for k, r in rows.items():
        if k == "full":
            summary[k] = {"seconds": r["seconds"]}
            continue
        sines = torch.tensor(r["sine"])
        summary[k] = {
            "seconds": r["seconds"],
            "speedup_vs_full": rows["full"]["seconds"] / r["seconds"],
            "sine_median": float(sines.median()),
            "sine_max": float(sines.max()),
            "layers_sine_below_0.1": int((sines < 0.1).sum()),
            "mean_sq_sine_median": float(torch.tensor(r["msq"]).median()),
            "mean_sq_sine_max": max(r["msq"]),
            "excess_error_median": float(torch.tensor(r["excess_error"]).median()),
            "excess_error_max": max(r["excess_error"]),
        }
    res = {
        "provenance": io.provenance(),
        "model": "smollm2-135m (GGUF Q4_1 de-quantized)",
        "layers": len(layers),
        "rank": args.rank,
        "summary": summary,
    }
    for k, v in summary.items():
        print(k, {a: round(b, 4) if isinstance(b, float) else b for a, b in v.items()})
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
