"""Where a training step's GPU time goes: torch.profiler over a few steps of the batched multi-run path
(K runs) or of one stock-PEFT run, same model and batch as bench/multi_run.py; prints the top kernels.
``--mode base``: the frozen base alone on the K runs' stacked batch, forward and input-gradient backward, no
adapter and no optimizer: the work MFU counts (multi_run's 4 N flops per token), the ceiling of any LoRA path.

    python bench/profile_step.py --mode batched --runs 8
    python bench/profile_step.py --mode stock
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_run  # noqa: E402

from lorainit import multi, runloss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["batched", "stock", "base"], default="batched")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--compile", action="store_true", help="batched and base: each block under torch.compile")
    ap.add_argument("--graphs", action="store_true", help="with --compile: mode reduce-overhead (CUDA graphs)")
    ap.add_argument("--lora-path", choices=multi_run.LORA_PATHS, default="default", help="batched: multi_run's")
    ap.add_argument("--timed", type=int, default=10, help="steps timed (outside the profiler) before profiling")
    ap.add_argument(
        "--out", type=Path, help="also write the median step, tokens/s, per-kind GPU ms and provenance as JSON"
    )
    ap.add_argument("--sort", default="self_cuda_time_total", help="the table's sort key (torch.profiler's)")
    ap.add_argument(
        "--pageable", action="store_true", help="batches copied by a plain .to(device), the harness until b71aa38"
    )
    args = ap.parse_args()
    multi_run.lora_path(args.lora_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    K = args.runs if args.mode in ("batched", "base") else 1
    runs = [multi.Run("init_a", 1e-4, seed=k) for k in range(K)]
    model = multi_run.base_model(device)
    if args.mode == "batched":
        multi_run.attach_runs(model, runs, args.rank)
        opt = multi.optimizer(model, runs)
        loss_fn = runloss.RunLosses(K, "lm")
    elif args.mode == "base":  # the embedding's output as the leaf the backward reaches: every block's input gradient
        from lorainit import lmloss

        model.requires_grad_(False)
        model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.detach().requires_grad_(True))
        opt = None
        loss_fn = lmloss.causal_lm_loss
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=multi_run.TARGETS))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        loss_fn = lambda m, b: m(**b, use_cache=False).loss  # noqa: E731  (no key/value cache in training)
    if args.compile and args.mode != "stock":
        multi.compile_blocks(model, mode="reduce-overhead" if args.graphs else None)  # (base: no adapter layers)
    model.train()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    upload = multi_run.uploader(args, device)

    def step(s):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        b = upload(multi.stack_batches([multi_run.batch(k, s, args.batch, args.seq) for k in range(K)]))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model, b)
        loss.backward()
        if opt is not None:
            opt.step()

    for s in range(4):
        step(s)
    sync()
    import time

    secs = []
    for s in range(args.timed):
        t0 = time.perf_counter()
        step(100 + s)
        sync()
        secs.append(time.perf_counter() - t0)
    secs.sort()
    med = secs[len(secs) // 2] if secs else float("nan")
    rate = K * args.batch * args.seq / med  # tokens/s
    print(f"median step {med * 1e3:.1f} ms ({rate:.0f} tokens/s) over {len(secs)} steps")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for s in range(4, 7):
            step(s)
        sync()
    print(prof.key_averages().table(sort_by=args.sort, row_limit=args.rows, max_name_column_width=60))
    per = kernel_ms(prof.key_averages(), 3)
    print(categories(per))
    if args.out:
        from lorainit import io

        io.write_json(
            args.out,
            {
                "provenance": io.provenance(),
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "median_step_ms": med * 1e3,
                "tokens_per_s": rate,
                "gpu_kernel_ms_per_step": per,
                "pointer_products": pointer_products(),
            },
        )


def pointer_products() -> list[dict]:
    """The products lorainit's kernel gave to its pointer form (``dual.POINTER_PRODUCTS``), by operand layout."""
    try:
        from lorainit import dual
    except ImportError:  # (no Triton)
        return []
    names = ("p", "q", "u", "v", "c")
    return [
        {
            "calls": n,
            **{
                k: None if o is None else {"shape": o[0], "strides": o[1], "offset_mod_16": o[2]}
                for k, o in zip(names, key)
            },
        }
        for key, n in dual.POINTER_PRODUCTS.most_common()
    ]


CATEGORIES = (  # kernel name patterns, first match wins
    ("attention", ("sdpa", "flash", "fmha", "attention")),
    ("gemm", ("nvjet", "gemm", "xmma", "cutlass", "sm90_", "_tma_kernel", "_pointer_kernel")),  # (lorainit.dual's)
    ("triton (fused elementwise, reductions)", ("triton_",)),
    ("copies", ("memcpy", "memset", "copy")),
)


def kernel_ms(averages, steps: int) -> dict[str, float]:
    """GPU kernel ms per step by kind of kernel (kernel events: no CPU time of their own)."""
    per: dict[str, float] = {}
    for e in averages:
        if e.self_cpu_time_total == 0 and e.self_device_time_total > 0:
            name = e.key.lower()
            kind = next((k for k, pats in CATEGORIES if any(p in name for p in pats)), "other")
            per[kind] = per.get(kind, 0.0) + e.self_device_time_total / 1e3 / steps
    return per


def categories(per: dict[str, float]) -> str:
    """The table of ``kernel_ms``'s answer."""
    total = sum(per.values())
    rows = [f"{k:40s} {v:8.2f} ms {v / total:6.1%}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])]
    return "\n".join(["GPU kernel time per step:", *rows, f"{'total':40s} {total:8.2f} ms"])


if __name__ == "__main__":
    main()
