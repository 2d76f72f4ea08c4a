"""lorainit.fused's dual_gemm against cuBLAS on the products of an 8-run SmolLM2-135M step (8 x 16 x 512 tokens,
r = 16), each timed two ways (one call between CUDA events, host launch work included; and on the GPU alone, calls
replayed from a CUDA graph): the kernel (x W^T + xa D; its TMA form, lorainit.dual), the same with
pointer loads (the kernel before the TMA form), the merged layer's bmm over the concatenated input (lorainit.merged:
the cat included), and cuBLAS's x W^T alone (the base's product: the kernel's floor).
Forward products, then the backward's input-gradient products (one member's, with LoRA's, and one accumulated).

    python bench/fused_kernel.py --out bench/results/fused_kernel_h100.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lorainit import dual, fused, io

# name: (inner, out, R, c): P (K, rows, inner) Q (inner, out), U (K, rows, R), c: a running sum C added
SHAPES = {
    "fwd qkv": (576, 960, 48, False),
    "fwd o": (576, 576, 16, False),
    "fwd gate+up": (576, 3072, 32, False),
    "fwd down": (1536, 576, 16, False),
    "bwd dx q (+ LoRA's)": (576, 576, 48, False),
    "bwd dx k (+ C)": (192, 576, 0, True),
    "bwd dx gate (+ LoRA's)": (1536, 576, 32, False),
    "bwd dx down (+ LoRA's)": (576, 1536, 16, False),
}


def timed(fn, reps: int) -> float:
    """Median ms of one call of ``fn`` between CUDA events, after 3 warm-up calls: the GPU time plus whatever host work
    the GPU waits for (a launch's argument checks and descriptors), as an eager caller sees it."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def gpu_timed(fn, reps: int) -> float:
    """Ms per call of ``fn`` on the GPU alone: ``reps`` calls captured in one CUDA graph (no host work at replay, as
    in a compiled step under CUDA graphs), ``timed``'s median of 5 replays over ``reps``. Call after ``timed``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return timed(graph.replay, 5) / reps


def arguments(doc: str) -> argparse.Namespace:
    """The products' benchmarks' command line (this one's and bench/chain_kernel.py's)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rows", type=int, default=16 * 512, help="rows (tokens) per run")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", type=Path)
    return ap.parse_args()


def main() -> None:
    args = arguments(__doc__)
    dev, dt, K, M = torch.device("cuda"), torch.bfloat16, args.runs, args.rows
    g = torch.Generator(dev).manual_seed(0)
    rows = []
    for name, (inner, out, R, acc) in SHAPES.items():
        p = torch.randn(K, M, inner, device=dev, dtype=dt, generator=g)
        w = torch.randn(out, inner, device=dev, dtype=dt, generator=g) / inner**0.5  # W (out, inner): Q = W^T
        u = torch.randn(K, M, R, device=dev, dtype=dt, generator=g) if R else None
        v = torch.randn(K, R, out, device=dev, dtype=dt, generator=g) / 4 if R else None
        c = torch.randn(K, M, out, device=dev, dtype=dt, generator=g) if acc else None
        q = w.t()
        kernel = lambda: fused.dual_gemm(p, q, u, v, c, None)  # noqa: E731

        def merged():
            if u is None:
                y = torch.matmul(p, q)
            else:
                y = torch.bmm(torch.cat([p, u], -1), torch.cat([q.expand(K, -1, -1), v], 1))
            return y if c is None else y + c

        def pointers():
            dual.TMA = False
            try:
                return kernel()
            finally:
                dual.TMA = True

        base = lambda: torch.matmul(p, q)  # noqa: E731
        want = merged().float()
        err = ((kernel().float() - want).norm() / want.norm()).item()
        tma = dual.tma_ok(p, q, u, v, c)
        paths = (("kernel", kernel), ("pointers", pointers), ("merged", merged), ("base", base))
        ms = {k: timed(f, args.reps) for k, f in paths}
        gpu_ms = {k: gpu_timed(f, args.reps) for k, f in paths}
        tflops = 2 * K * M * (inner + R) * out / (gpu_ms["kernel"] * 1e-3) / 1e12
        row = {"product": name, "inner": inner, "out": out, "R": R, "accumulates": acc, "tma": tma, "ms": ms}
        row["gpu_ms"] = gpu_ms
        kernel()  # (the tuned tile for this product: the last call's)
        tuned = dual._tma_kernel if tma else dual._pointer_kernel
        row |= {"kernel_tflops": tflops, "rel_err_vs_merged": err, "tile": str(tuned.best_config)}
        rows.append(row)
        print(
            f"{name:24s} GPU ms: kernel{' (TMA)' if tma else ''} {gpu_ms['kernel']:.3f} ({tflops:.0f} TFLOP/s)  "
            f"pointers {gpu_ms['pointers']:.3f}  merged {gpu_ms['merged']:.3f}  base alone {gpu_ms['base']:.3f}  "
            f"kernel/base {gpu_ms['kernel'] / gpu_ms['base']:.2f}; one call: kernel {ms['kernel']:.3f} "
            f"merged {ms['merged']:.3f}  rel err {err:.1e}  "
            f"{row['tile']}"
        )
    names = ("kernel", "pointers", "merged", "base")
    total = {k: sum(r["ms"][k] for r in rows) for k in names}
    gpu_total = {k: sum(r["gpu_ms"][k] for r in rows) for k in names}
    print("sum of one call each", {k: round(v, 3) for k, v in total.items()})
    print("sum on the GPU alone", {k: round(v, 3) for k, v in gpu_total.items()})
    if args.out:
        res = {
            "runs": K,
            "rows_per_run": M,
            "dtype": "bfloat16",
            "products": rows,
            "sum_ms": total,
            "sum_gpu_ms": gpu_total,
            **io.provenance(),
        }
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
