"""Benchmark: K LoRA runs batched on one base (lorainit.multi) vs K sequential stock-PEFT runs, same process.

Model: SmolLM2-135M's shape (LlamaConfig, 30 layers, hidden 576, vocab 49152), bf16, random weights
(throughput does not depend on the weights; no hub or staging needed); r=16, alpha=16 on all seven
projections; batch 16 x 512 per run; AdamW; bf16 autocast; Init[A] drawn once per run and given to
both paths, so their loss curves must agree up to bf16 noise. Data: tokens drawn from a Zipf law, each
run its own stream. Stock: ``peft.get_peft_model`` + torch AdamW, one run after another. Also: one run
through each path (K=1) and the card's measured bf16 matmul rate, for MFU = 4 N tokens/s / rate
(forward + input-gradient matmuls of the frozen base; LoRA and attention FLOPs left out).

    python bench/multi_run.py --out bench/results/multi_run_h100.json
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorainit import batches, fused, io, multi, runloss, siblings, speed, starts  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


LORA_PATHS = (
    *("default", "unchained", "chain-backward", "fused", "pointers"),
    *("merged", "siblings", "split", "alone", "baddbmm"),
)


def lora_path(name: str) -> None:
    """The LoRA layers' forward for this process: 'default' (lorainit's, as a fresh process has it: 'fused' where the
    compiled blocks replay as CUDA graphs on at least fused.MIN_ROWS rows, else 'merged'), 'unchained' (as 'default'
    with x A^T and each dL/dxa_i as bmms beside the kernel, not inside it: fused.CHAIN_*, the default until this
    option), 'chain-backward' (as 'default' with only the backward's dL/dxa_i inside the kernel), 'merged' (under
    torch.compile the base output and the update from one bmm over a concatenated input, lorainit.merged, the layers
    sharing an input computed together; eager as 'siblings'; the default until 1248714), 'fused' (as 'merged' with
    the two products in one Triton kernel, lorainit.fused, even without graphs), 'pointers' (as 'fused' with the
    kernel's tiles loaded through pointers, not TMA descriptors), 'siblings' (lorainit's from a9456da until the
    merged GEMM: siblings computed together, lorainit.siblings, the update added in place or fused by the compiler),
    'split' (as 'siblings', but the shared GEMM's output split by autograd, whose backward concatenates the parts'
    gradients: lorainit from 72d812e to a9456da), 'alone' (each layer on its own, the update added as in 'siblings'),
    'baddbmm' (each alone, one out-of-place baddbmm: lorainit until 72d812e)."""
    if name not in LORA_PATHS:
        raise ValueError(f"--lora-path must be one of {', '.join(LORA_PATHS)}; got {name!r}")
    if name in ("alone", "baddbmm"):
        multi.attach = functools.partial(multi.attach, siblings=False)
    if name == "split":
        siblings._Shared.apply = staticmethod(lambda x, w, b, outs: F.linear(x, w, b).split(outs, -1))
    multi.MultiLoRALinear.fused_add = name != "baddbmm"
    multi.MultiLoRALinear.merged = name not in ("siblings", "split", "alone", "baddbmm")
    fused.ENABLED = None if name in ("default", "unchained", "chain-backward") else name in ("fused", "pointers")
    if name in ("unchained", "chain-backward"):
        fused.CHAIN_FORWARD, fused.CHAIN_BACKWARD = False, name == "chain-backward"
    if name == "pointers":
        from lorainit import dual

        dual.TMA = False


def base_model(device):
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(device=device, dtype=torch.bfloat16)


def batch(run: int, step: int, b: int, T: int) -> dict:
    """Run ``run``'s micro-batch of step ``step`` on the CPU, for ``uploader`` to take to the GPU (before b71aa38 a
    plain ``.to(device)`` here, on both sides)."""
    g = torch.Generator().manual_seed(run * 100003 + step)
    u = torch.rand(b, T, generator=g)
    ids = (49152**u - 1).long().clamp(max=49151)  # inverse CDF of P(id) ~ 1/(id+1): a learnable unigram law
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def uploader(args, device):
    """The batches' way to the GPU: ``batches.Uploader`` (lorainit's training loop's), or with ``--pageable`` a plain
    ``.to(device)`` (this harness until b71aa38)."""
    if getattr(args, "pageable", False):
        return lambda b: {k: v.to(device) for k, v in b.items()}
    return batches.Uploader(device)


def timed_loop(step_fn, steps: int, warmup: int, device) -> tuple[float, list[float]]:
    losses = []
    for s in range(warmup):
        losses.append(step_fn(s))
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        losses.append(step_fn(s))
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return time.perf_counter() - t0, losses


def first(factors: dict, n: int) -> dict:
    """The factors of the first ``n`` runs (each layer's list of (A, B) cut to ``n``)."""
    return {name: v[:n] for name, v in factors.items()}


def stock_runs(
    runs, factors, args, device, schedule=None, compile_: bool = False, mode: str | None = None, **adamw
) -> tuple[float, list[list[float]]]:
    """K sequential stock-PEFT runs; returns total timed seconds and each run's loss curve. ``schedule(step)``
    multiplies the LR (default: constant); ``adamw``: AdamW's keyword arguments (default: torch's); ``compile_``:
    each block under torch.compile (the --warmup steps absorb the compilation), in torch.compile's ``mode``
    ('reduce-overhead': CUDA graphs, the strongest stock setting for a launch-bound step). The forward passes use_cache=False:
    a Llama in training mode otherwise builds a key/value cache every step, which under torch.compile also
    recompiled the blocks per layer until dynamo's recompile limit left the rest eager (results before 2026-11-26
    22:30 UTC, multi_run_h200.json included, timed that weaker stock baseline)."""
    from peft import LoraConfig, get_peft_model

    total, curves = 0.0, []
    for k, run in enumerate(runs):
        model = get_peft_model(
            base_model(device), LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=TARGETS, lora_dropout=0.0)
        )
        with torch.no_grad():
            for name, m in model.named_modules():
                if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
                    A, B = factors[name.removeprefix("base_model.model.")][k]
                    m.lora_A["default"].weight.copy_(A)
                    m.lora_B["default"].weight.copy_(B)
        if compile_:
            speed.compile_blocks(model, mode=mode)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=run.lr, **adamw)
        upload = uploader(args, device)

        def step(s):
            if schedule is not None:
                opt.param_groups[0]["lr"] = run.lr * schedule(s)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**upload(batch(k, s, args.batch, args.seq)), use_cache=False).loss  # (see stock_runs)
            loss.backward()
            opt.step()
            return loss.detach()

        sec, losses = timed_loop(step, args.steps, args.warmup, device)
        total += sec
        curves.append([float(x) for x in losses])
        model = opt = step = None  # (this run's model and optimizer go before the next is built)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return total, curves


def attach_runs(model, runs, rank: int) -> dict:
    """``lorainit.multi`` adapters for ``runs`` on ``model``, each drawn as ``lorainit.starts`` draws it (scaling 1)."""
    linears = multi.targets_of(model, TARGETS)
    start = [
        {
            starts.PEFT_PREFIX + n: starts.draw(
                r.init, m.weight, rank, seed=r.seed, layer=starts.PEFT_PREFIX + n, layer_scaling=1.0
            )
            for n, m in linears.items()
        }
        for r in runs
    ]
    return multi.attach(model, runs, start, scaling=1.0, targets=TARGETS)


def batched_runs(
    runs, args, device, compile_: bool = False, mode: str | None = None
) -> tuple[float, list[list[float]], dict]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = base_model(device)
    layers = attach_runs(model, runs, args.rank)
    if compile_:  # each block under torch.compile (fuses the elementwise ops, fewer launches), in ``mode``
        multi.compile_blocks(model, mode=mode)  # (as lorainit finetune: the kernel where graphs replay)
    factors = {
        n: [(m.lora_A[k].detach().clone(), m.lora_B[k].detach().clone()) for k in range(len(runs))]
        for n, m in layers.items()
    }
    model.train()
    opt = multi.optimizer(model, runs)  # as lorainit finetune builds it: one AdamW for all runs
    loss_fn = runloss.RunLosses(len(runs), "lm")
    upload = uploader(args, device)

    def step(s):
        opt.zero_grad(set_to_none=True)
        b = upload(multi.stack_batches([batch(k, s, args.batch, args.seq) for k in range(len(runs))]))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model, b)
        loss.backward()
        opt.step()
        return loss.detach()

    sec, _ = timed_loop(step, args.steps, args.warmup, device)
    curves = [[h[k] for h in loss_fn.history] for k in range(len(runs))]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return sec, curves, {"factors": factors, "peak_gib": peak}


def matmul_rate(device) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize(device)
    t0, n = time.perf_counter(), 50
    for _ in range(n):
        a @ a
    torch.cuda.synchronize(device)
    return 2 * 8192**3 * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--compile", action="store_true", help="also time the batched path with the decoder under torch.compile"
    )
    ap.add_argument(
        "--stock-compiled-runs", type=int, default=2, help="stock PEFT runs timed with each block under torch.compile"
    )
    ap.add_argument(
        "--cuda-graphs",
        choices=("on", "off"),
        default="on",
        help="compiled paths also under torch.compile's 'reduce-overhead' (CUDA graphs; lorainit's compiled LM runs "
        "use it since 9f14ca7): lorainit's batched and one-run paths take it, and stock PEFT is timed both ways",
    )
    ap.add_argument("--lora-path", choices=LORA_PATHS, default="default", help=lora_path.__doc__.split(": ", 1)[1])
    ap.add_argument(
        "--pageable",
        action="store_true",
        help="batches by a plain .to(device) on both sides (the harness until b71aa38)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lora_path(args.lora_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lrs = [1e-4 * 30 ** (k / max(1, args.runs - 1)) for k in range(args.runs)]
    runs = [multi.Run("init_a", lr, seed=k) for k, lr in enumerate(lrs)]
    tokens = args.batch * args.seq * args.steps  # per run, timed part
    graphs = "reduce-overhead" if args.cuda_graphs == "on" and device.type == "cuda" else None

    one_b, _, _ = batched_runs(runs[:1], args, device)
    b_sec, b_curves, extra = batched_runs(runs, args, device)
    compiled = None
    if args.compile:
        t0 = time.perf_counter()
        try:
            c_sec, c_curves, c_extra = batched_runs(runs, args, device, compile_=True, mode=graphs)
        except Exception as e:  # recorded, not hidden
            c_sec, c_curves, c_extra = None, None, {"error": f"{type(e).__name__}: {e}"[:2000]}
    if args.compile and c_sec is None:
        compiled = {"error": c_extra["error"]}
    elif args.compile:
        c_rel = [
            abs(a - b) / abs(b)
            for ca, cb in zip(c_curves, b_curves)
            for a, b in zip(ca, cb)
            if a is not None and b is not None
        ]
        compiled = {
            "tokens_per_s": len(runs) * args.batch * args.seq * args.steps / c_sec,
            "wall_s_incl_compile": time.perf_counter() - t0,
            "peak_gib": c_extra["peak_gib"],
            "median_rel_diff_vs_eager": sorted(c_rel)[len(c_rel) // 2],
        }
    one_s, _ = stock_runs(runs[:1], first(extra["factors"], 1), args, device)
    s_sec, s_curves = stock_runs(runs, extra["factors"], args, device)
    sc = scg = one_c = None
    if args.stock_compiled_runs and device.type == "cuda":  # sequential runs: the rate of a few is the rate of K
        n = args.stock_compiled_runs

        def stock_compiled(mode):
            t0 = time.perf_counter()
            sc_sec, sc_curves = stock_runs(runs[:n], first(extra["factors"], n), args, device, compile_=True, mode=mode)
            return {
                "runs_timed": n,
                "mode": mode,
                "tokens_per_s": n * tokens / sc_sec,
                "wall_s_incl_compile": time.perf_counter() - t0,
                "median_rel_diff_vs_stock_eager": sorted(
                    abs(a - b) / abs(b) for ca, cb in zip(sc_curves, s_curves) for a, b in zip(ca, cb)
                )[sum(len(c) for c in sc_curves) // 2],
            }

        sc = stock_compiled(None)
        scg = stock_compiled(graphs) if graphs else None
    if args.compile and graphs:  # one run each way, compiled as each would be at its best: lorainit finetune vs stock
        one_cb, _, _ = batched_runs(runs[:1], args, device, compile_=True, mode=graphs)
        one_cs, _ = stock_runs(runs[:1], first(extra["factors"], 1), args, device, compile_=True, mode=graphs)
        one_c = {"mode": graphs, "stock_tokens_per_s": tokens / one_cs, "lorainit_k1_tokens_per_s": tokens / one_cb}
        one_c["ratio"] = one_cs / one_cb
    n_base = sum(p.numel() for p in base_model(device).parameters())
    rate = matmul_rate(device)
    rel = [abs(a - b) / abs(b) for ca, cb in zip(b_curves, s_curves) for a, b in zip(ca, cb) if a is not None]
    final = [{"lr": r.lr, "batched": cb[-1], "stock": cs[-1]} for r, cb, cs in zip(runs, b_curves, s_curves)]
    res = {
        "provenance": io.provenance(),
        "config": vars(args) | {"out": str(args.out), "lrs": lrs, "model": "SmolLM2-135M shape, random bf16"},
        "stock_sequential_tokens_per_s": len(runs) * tokens / s_sec,
        "batched_tokens_per_s": len(runs) * tokens / b_sec,
        "speedup_batched_vs_stock": s_sec / b_sec,
        "single_run": {
            "stock_tokens_per_s": tokens / one_s,
            "lorainit_multi_k1_tokens_per_s": tokens / one_b,
            "ratio": one_s / one_b,
        },
        "mfu": None
        if rate is None
        else {
            "matmul_bf16_tflops": rate / 1e12,
            "stock_single": 4 * n_base * tokens / one_s / rate,
            "batched": 4 * n_base * len(runs) * tokens / b_sec / rate,
            "base_params": n_base,
        },
        "loss_agreement": {"median_rel_diff": sorted(rel)[len(rel) // 2], "max_rel_diff": max(rel), "final": final},
        "batched_peak_gib": extra["peak_gib"],
        "batched_compiled": compiled,
        "stock_compiled": sc,
        "stock_compiled_graphs": scg,
        "single_run_compiled": one_c,
    }
    if compiled and "tokens_per_s" in compiled:
        res["speedup_batched_compiled_vs_stock"] = compiled["tokens_per_s"] / res["stock_sequential_tokens_per_s"]
    if sc:
        best = max(res["batched_tokens_per_s"], (compiled or {}).get("tokens_per_s") or 0)
        res["speedup_best_batched_vs_stock_compiled"] = best / sc["tokens_per_s"]
        if scg:  # against the strongest stock setting
            res["speedup_best_batched_vs_best_stock_compiled"] = best / max(sc["tokens_per_s"], scg["tokens_per_s"])
    if rate:  # MFU of every path
        res["mfu"].update(
            {
                k: 4 * n_base * v / rate
                for k, v in (
                    ("stock_sequential", res["stock_sequential_tokens_per_s"]),
                    ("batched_compiled", (compiled or {}).get("tokens_per_s")),
                    ("stock_compiled", (sc or {}).get("tokens_per_s")),
                    ("stock_compiled_graphs", (scg or {}).get("tokens_per_s")),
                )
                if v
            }
        )
    print(
        f"{len(runs)} runs: batched {res['batched_tokens_per_s']:.0f} tok/s vs stock sequential "
        f"{res['stock_sequential_tokens_per_s']:.0f} tok/s = {res['speedup_batched_vs_stock']:.2f}x; single run "
        f"{res['single_run']['ratio']:.2f}x; loss rel diff median {res['loss_agreement']['median_rel_diff']:.2e} "
        f"max {res['loss_agreement']['max_rel_diff']:.2e}; mfu {res['mfu']}; compiled {compiled}; stock compiled {sc}; "
        f"stock compiled with graphs {scg}; one run compiled {one_c}"
    )
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
