"""lorainit.dual's chain (U = P E^T computed inside the kernel from the tiles of P that P Q reads, then
Y = P Q + U V + C) against the two calls it replaces (a bmm for U, which reads P again, then dual_gemm with U), on
the products of an 8-run SmolLM2-135M step (8 x 16 x 512 tokens, r = 16): the forward's x A^T and x W^T + xa D per
layer input, the backward's dL/dxa_i = g_i (s_i B_i) and dL/dx += g_i W_i + dL/dxa_i A_i per member. Timed on the
GPU alone (calls replayed from a CUDA graph, as in a compiled step under graphs; bench/fused_kernel.py's timers);
the values checked against torch's (fp32 reference).

    python bench/chain_kernel.py --out bench/results/chain_kernel_h100.json
"""

from __future__ import annotations

import json

import torch
from fused_kernel import arguments, gpu_timed, timed

from lorainit import dual, fused, io

# name: (inner K1, out N, R, E stored as E^T (a B_i), c: a running sum C added)
SHAPES = {
    "fwd qkv": (576, 960, 48, False, False),
    "fwd o": (576, 576, 16, False, False),
    "fwd gate+up": (576, 3072, 32, False, False),
    "fwd down": (1536, 576, 16, False, False),
    "bwd q": (576, 576, 16, True, False),
    "bwd k (+ C)": (192, 576, 16, True, True),
    "bwd o": (576, 576, 16, True, False),
    "bwd gate": (1536, 576, 16, True, False),
    "bwd up (+ C)": (1536, 576, 16, True, True),
    "bwd down": (576, 1536, 16, True, False),
}


def main() -> None:
    args = arguments(__doc__)
    dev, dt, K, M = torch.device("cuda"), torch.bfloat16, args.runs, args.rows
    g = torch.Generator(dev).manual_seed(0)
    rows = []
    for name, (inner, out, R, e_t, acc) in SHAPES.items():
        p = torch.randn(K, M, inner, device=dev, dtype=dt, generator=g)
        q = (torch.randn(out, inner, device=dev, dtype=dt, generator=g) / inner**0.5).t()  # Q = W^T
        if e_t:  # E = s B^T, B (K, inner, R) contiguous
            e = (torch.randn(K, inner, R, device=dev, dtype=dt, generator=g) / inner**0.5).transpose(1, 2)
        else:  # E = A (K, R, inner)
            e = torch.randn(K, R, inner, device=dev, dtype=dt, generator=g) / inner**0.5
        v = torch.randn(K, R, out, device=dev, dtype=dt, generator=g) / 4
        c = torch.randn(K, M, out, device=dev, dtype=dt, generator=g) if acc else None

        def chain():
            return fused.chain_gemm(p, q, e, v, c, None)

        def two_calls():
            u = torch.bmm(p, e.transpose(1, 2))  # (K, M, R)
            return fused.dual_gemm(p, q, u, v, c, None), u

        y, u = chain()
        y2, u2 = two_calls()
        u_ref = p.float() @ e.float().transpose(1, 2)
        y_ref = p.float() @ q.float() + u.float() @ v.float() + (0 if c is None else c.float())
        err = {
            "u_chain": ((u.float() - u_ref).norm() / u_ref.norm()).item(),
            "u_bmm": ((u2.float() - u_ref).norm() / u_ref.norm()).item(),
            "y_chain": ((y.float() - y_ref).norm() / y_ref.norm()).item(),
            "y_two_calls": ((y2.float() - y_ref).norm() / y_ref.norm()).item(),
        }
        tma = dual._layouts(p, q, None, v, c, e) is not None
        paths = (("chain", chain), ("two_calls", two_calls))
        ms = {k: timed(f, args.reps) for k, f in paths}
        gpu_ms = {k: gpu_timed(f, args.reps) for k, f in paths}
        chain()
        tuned = dual._tma_kernel if tma else dual._pointer_kernel
        row = {"product": name, "inner": inner, "out": out, "R": R, "e_transposed": e_t, "accumulates": acc}
        row |= {"tma": tma, "ms": ms, "gpu_ms": gpu_ms, "rel_err_vs_fp32": err, "tile": str(tuned.best_config)}
        rows.append(row)
        print(
            f"{name:14s} GPU ms: chain{' (TMA)' if tma else ''} {gpu_ms['chain']:.3f}  bmm + dual_gemm "
            f"{gpu_ms['two_calls']:.3f}  ratio {gpu_ms['two_calls'] / gpu_ms['chain']:.3f}  rel err y "
            f"{err['y_chain']:.1e} / {err['y_two_calls']:.1e}  u {err['u_chain']:.1e} / {err['u_bmm']:.1e}  {row['tile']}"
        )
    total = {k: sum(r["gpu_ms"][k] for r in rows) for k in ("chain", "two_calls")}
    print("sum on the GPU alone", {k: round(v, 3) for k, v in total.items()})
    if args.out:
        res = {"runs": K, "rows_per_run": M, "dtype": "bfloat16", "products": rows, "sum_gpu_ms": total}
        args.out.write_text(json.dumps(res | io.provenance(), indent=1))


if __name__ == "__main__":
    main()
