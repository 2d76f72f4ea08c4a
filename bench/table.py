"""Print the README's performance table (Markdown) from the committed benchmark JSON in bench/results/."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _src(prov: dict) -> str:
    """Where and when a result was measured: device, host CPU where recorded, date, commit."""
    host = f", {prov['host_cpu']}" if prov.get("host_cpu") else ""
    return f"{prov['device']}{host}, {prov['date'][:10]}, commit {(prov['commit'] or '?')[:10]}"


def toy_rows(d: dict) -> list[str]:
    prov = d["provenance"]
    src = f"{prov['device']}, torch {prov['torch']}, {prov['date'][:10]}, commit {(prov['commit'] or '?')[:10]}"
    rows = [
        f"Teacher-student grid of one width, {d['grids'][0]['steps']} steps ({src}); every path starts from the same "
        "students and inits (setup, timed apart):",
        "",
        "| width | runs K | setup | batched | batched, bmm head | one at a time, stock AdamW loop | speed-up "
        "(with setup) | one at a time, own code (K=1) | speed-up | median rel. diff of final loss |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in d["grids"]:
        agree = g["final_train_loss_rel_diff_batched_vs_reference"]
        rows.append(
            f"| {g['width']} | {g['runs']} | {g['seconds_setup_shared']:.2f} s | {g['seconds_batched']:.2f} s | "
            f"{g['seconds_batched_bmm_head']:.2f} s | {g['seconds_reference_one_at_a_time']:.2f} s | "
            f"**{g['speedup_vs_reference']:.1f}x** ({g['speedup_vs_reference_with_setup']:.1f}x) | "
            f"{g['seconds_own_code_one_at_a_time']:.2f} s | {g['speedup_vs_own_k1']:.1f}x | {agree['median']:.1e} |"
        )
    if d.get("paper_preset"):
        p = d["paper_preset"]
        rows += [
            "",
            f"`lorainit toy --preset paper` end to end ({len(p['widths'])} widths x {p['runs_per_width']} runs x "
            f"{p['steps']} steps): **{p['wall_seconds']:.1f} s**.",
        ]
    return rows


def init_rows(d: dict) -> list[str]:
    prov = d["provenance"]
    shapes = list(d["models"])
    rows = [
        f"Init cost, r={d['rank']} on all 7 projections, random weights of these shapes ({_src(prov)}): "
        "seconds, and peak memory / one LoRA train step:",
        "",
        "| scheme | " + " | ".join(shapes) + " |",
        "|---|" + "---:|" * len(shapes),
    ]
    for name in d["models"][shapes[0]]["schemes"]:
        cells = [
            f"{d['models'][s]['schemes'][name]['seconds']:.2f} s, {d['models'][s]['schemes'][name]['peak_vs_train_step']:.2f}x"
            for s in shapes
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    for s in shapes:
        m = d["models"][s]
        if "pissa_randomized_speedup" not in m:  # a partial run (--schemes): its rows only
            continue
        sch = m["schemes"]
        svd_only = (sch["pissa"]["seconds"] - sch["init_a"]["seconds"]) / (
            sch["pissa_niter4"]["seconds"] - sch["init_a"]["seconds"]
        )
        rows.append(
            f"\n{s}: randomized PiSSA {m['pissa_randomized_speedup']:.1f}x faster than full SVD, whole apply "
            f"({svd_only:.1f}x on the time above init_a's apply, same process; top-16 subspace "
            f"sine up to {m['pissa_randomized_subspace_sine_max']:.2f} on these flat random spectra); HRP preheat "
            f"{100 * m['hrp_preheat_share_of_1000_steps']:.1f}% of a 1000-step run."
        )
    return rows


def multi_rows(d: dict) -> list[str]:
    prov, c, mfu = d["provenance"], d["config"], d["mfu"]
    comp, sc = d.get("batched_compiled"), d.get("stock_compiled")
    stock = d["stock_sequential_tokens_per_s"]
    pct = lambda key: f"{100 * mfu[key]:.1f}%" if mfu.get(key) is not None else "-"  # noqa: E731
    rows = [
        f"Real-model sweep step: {c['runs']} LoRA runs (LRs {c['lrs'][0]:.0e}..{c['lrs'][-1]:.0e}) on {c['model']}, r={c['rank']} "
        f"all projections, batch {c['batch']} x {c['seq']} per run, {c['steps']} timed steps ({prov['device']}, "
        f"{prov.get('host_cpu', 'host CPU not recorded')}, {prov['date'][:10]}, commit {(prov['commit'] or '?')[:10]}"
        + (f", LoRA path '{c['lora_path']}'" if c.get("lora_path") else "")  # (bench/multi_run.py --lora-path)
        + "):",
        "",
        "| path | adapter tokens/s | vs stock eager | vs stock compiled | vs stock compiled + CUDA graphs | MFU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    sg = d.get("stock_compiled_graphs")
    paths = [(f"stock PEFT, {c['runs']} runs one after another", stock, "stock_sequential")]
    if sc:
        paths.append(
            (
                f"stock PEFT, each block under torch.compile ({sc['runs_timed']} run{'s' if sc['runs_timed'] > 1 else ''} timed; runs are sequential)",
                sc["tokens_per_s"],
                "stock_compiled",
            )
        )
    if sg:
        paths.append(
            (
                f"... with CUDA graphs (mode {sg['mode']!r}, {sg['runs_timed']} runs timed)",
                sg["tokens_per_s"],
                "stock_compiled_graphs",
            )
        )
    paths.append((f"lorainit.multi, {c['runs']} runs in one pass", d["batched_tokens_per_s"], "batched"))
    if comp and "tokens_per_s" in comp:
        paths.append(("... with each block under torch.compile", comp["tokens_per_s"], "batched_compiled"))
    for label, rate, key in paths:
        vs_sc = f"{rate / sc['tokens_per_s']:.2f}x" if sc else "-"
        vs_sg = f"{rate / sg['tokens_per_s']:.2f}x" if sg else "-"
        b = "**" if key.startswith("batched") else ""
        rows.append(
            f"| {label} | {rate:,.0f} | {b}{rate / stock:.2f}x{b} | {b}{vs_sc}{b} | {b}{vs_sg}{b} | {pct(key)} |"
        )
    s1, sc1 = d["single_run"], d.get("single_run_compiled")
    if sc1:
        rows += [
            "",
            f"One run compiled (mode {sc1['mode']!r}): lorainit K=1 {sc1['lorainit_k1_tokens_per_s']:,.0f} vs stock PEFT "
            f"{sc1['stock_tokens_per_s']:,.0f} tokens/s ({sc1['ratio']:.2f}x).",
        ]
    rows += [
        "",
        f"One run (what `lorainit finetune` runs, K=1, eager): {s1['lorainit_multi_k1_tokens_per_s']:,.0f} vs stock PEFT "
        f"{s1['stock_tokens_per_s']:,.0f} tokens/s ({s1['ratio']:.2f}x). Loss curves batched vs stock: median relative difference "
        f"{d['loss_agreement']['median_rel_diff']:.1e}, max {d['loss_agreement']['max_rel_diff']:.1e} (bf16). "
        f"MFU = 4 x base parameters x tokens/s over the measured bf16 matmul rate ({mfu['matmul_bf16_tflops']:.0f} TFLOP/s).",
    ]
    if d.get("note"):
        rows += ["", f"Note: {d['note']}"]
    return rows


def e2e_rows(d: dict) -> list[str]:
    rows = _e2e_rows(d)
    return rows[:-1] + [rows[-1] + (f" Note: {d['note']}" if d.get("note") else "")]


def _e2e_rows(d: dict) -> list[str]:
    prov, c, b, s = d["provenance"], d["config"], d["batched"], d["single"]
    a = d["agreement"]
    where = "side by side on two GPUs of one host" if d["side_by_side"] else "one after the other"
    if s["points"] < 3:  # (its median point is one that paid the model load or a compilation: no estimate)
        return [
            f"`lorainit sweep --experiment finetune --model {c['model']} --task {c['task']}`, {c['inits']} x "
            f"{b['points'] // len(c['inits'].split(','))} LRs, {c['steps']} steps, batch {c['batch_size']} x {c['seq_len']} "
            f"({_src(prov)}; {where}): --batch {c['batch']} ran all {b['points']} points in {b['wall_s']:.0f} s; --batch 1 "
            f"ran only {s['points']}, each paying one-time costs (model load, compilation), so no speedup is quoted. "
            f"Validation metric batched vs alone on the {a['points_compared']} shared points: median relative difference "
            f"{a['median_rel_diff_val_metric']:.1e}, max {a['max_rel_diff_val_metric']:.1e}."
        ]
    return [
        f"`lorainit sweep --experiment finetune --model {c['model']} --task {c['task']}`, {len(c['inits'].split(','))} inits "
        f"({c['inits']}) x {b['points'] // len(c['inits'].split(','))} LRs, {c['steps']} steps, batch {c['batch_size']} x {c['seq_len']} "
        f"({_src(prov)}; {where}): --batch {c['batch']} ran all "
        f"{b['points']} points in {b['wall_s']:.0f} s ({b['per_point_s']:.1f} s a point); --batch 1 ran {s['points']} of them "
        f"(LR {s['lrs']} of each init) in {s['wall_s']:.0f} s ({s['per_point_s']:.1f} s a point): **{d['speedup_per_point']:.1f}x per point**; "
        f"for the whole grid --batch 1 would take about {s['estimated_wall_s_for_the_whole_grid']:.0f} s (each further point at the "
        f"median {s['median_point_s_without_data_pass']:.1f} s without its init's cached data pass): **{d['speedup_whole_grid_estimated']:.1f}x**. "
        f"Validation metric batched vs alone on the {a['points_compared']} shared points: median relative difference "
        f"{a['median_rel_diff_val_metric']:.1e}, max {a['max_rel_diff_val_metric']:.1e}."
    ]


def sweep_scale_rows(d: dict) -> list[str]:
    """One line per `bench/scale_out.py --parts sweep` result: 1 GPU vs N, and where each command's time went."""
    c, w = d["config"], d["sweep"]
    n = c["gpus"]
    line = (
        f"`lorainit sweep` of {w['points']} points ({c['model']} {c['task']}, {c['inits']} x LRs {c['lrs']}, "
        f"{c['sweep_steps']} steps, {c['sweep_batch_size']} x {c['sweep_seq_len']}) with `--gpus 1` vs `--gpus {n}`"
        f"{' after a warm-up sweep' if c.get('warm_up') else ''} "
        f"({_src(d['provenance'])}): {w['wall_s_1_gpu']:.1f} s vs {w[f'wall_s_{n}_gpus']:.1f} s, **{w['speedup']:.2f}x**; "
        f"validation metric point by point: median relative difference {w['median_rel_diff_val_metric']:.1e}."
    )
    if "time_1_gpu" in w:
        parts = []
        for k in ("1_gpu", f"{n}_gpus"):
            t = w[f"time_{k}"]
            setups = sorted(b["setup_s"] for v in t["workers"].values() for b in v["batches"] if b["setup_s"] > 1)
            parts.append(
                f"{k.replace('_', ' ').replace('gpus', 'GPUs').replace('gpu', 'GPU')}: {t['outside_batches_s']:.1f} s "
                f"outside the batches, first set-up {', '.join(f'{x:.1f}' for x in setups)} s"
            )
        line += " Per command: " + "; ".join(parts) + "."
    return [line + (f" Note: {d['note']}" if d.get("note") else "")]


def dp_rows(d: dict) -> list[str]:
    """`bench/scale_out.py --parts dp`: torchrun weak scaling, every pair of the call."""
    c, p = d["config"], d["data_parallel"]
    pairs = ", ".join(f"{x:.2f}x" for x in p["steady_speedup_per_pair"])
    base = p[f"steady_tokens_per_s_1_process_after_step_{c['skip']}"]
    flags = f", both with {c['extra']}" if c.get("extra") else ""
    return [
        f"`torchrun --nproc_per_node {c['gpus']}` fine-tune at {c['batch_size']} x {c['seq_len']} per process vs one process "
        f"({c['steps']} steps, {c['repeats']} alternating pairs{flags}; {_src(d['provenance'])}): steady state past step {c['skip']} "
        f"{pairs} (the one-process baseline {min(base) / 1000:.1f}k..{max(base) / 1000:.1f}k tokens/s); at an equal global "
        f"batch the loss curve matches one process to a median relative difference of "
        f"{p['equal_global_batch_loss_median_rel_diff']:.1e}."
    ]


def graphs_rows(d: dict) -> list[str]:
    """`bench/scale_out.py --parts graphs`: torchrun with CUDA graphs off vs on, every pair of the call."""
    c, g = d["config"], d["graphs_under_torchrun"]
    pairs = ", ".join(f"{x:.2f}x" for x in g["steady_speedup_per_pair"])
    on, off = g[f"steady_tokens_per_s_on_after_step_{c['skip']}"], g[f"steady_tokens_per_s_off_after_step_{c['skip']}"]
    return [
        f"`torchrun --nproc_per_node {c['gpus']}` fine-tune at {c['batch_size']} x {c['seq_len']} per process, "
        f"`--cuda-graphs on` vs `off` ({c['steps']} steps, {c['repeats']} alternating pairs; {_src(d['provenance'])}): "
        f"steady state past step {c['skip']} {pairs} ({min(on) / 1000:.0f}k..{max(on) / 1000:.0f}k vs "
        f"{min(off) / 1000:.0f}k..{max(off) / 1000:.0f}k tokens/s); loss curves on vs off: median relative difference "
        f"{g['loss_on_vs_off_median_rel_diff']:.1e}."
    ]


def main() -> None:
    root = Path(__file__).resolve().parent / "results"
    for path in sorted(root.glob("toy_batched_*.json")):
        print("\n".join(toy_rows(json.loads(path.read_text()))))
        print()
    for path in sorted(root.glob("sweep_e2e_*.json")):
        print("\n".join(e2e_rows(json.loads(path.read_text()))))
        print()
    for path in sorted(root.glob("scale_out_sweep_*.json")):  # (scale_out_h200x2.json: trial spans, an older schema)
        print("\n".join(sweep_scale_rows(json.loads(path.read_text()))))
        print()
    for path in sorted(root.glob("scale_out_dp_*.json")):
        print("\n".join(dp_rows(json.loads(path.read_text()))))
        print()
    for path in sorted(root.glob("scale_out_graphs_*.json")):
        print("\n".join(graphs_rows(json.loads(path.read_text()))))
        print()
    # the H200 run against the cache-building stock baseline, then the H100 run against the fixed one (use_cache=False)
    # (multi_run_h100.json, multi_run_h100_b.json, single_run_h100.json: older code or no --compile)
    # and at ef61c92 against stock compiled with CUDA graphs too (the strongest stock baseline), at e7c995d with the
    # merged GEMM (lorainit.merged), at 4fb416d (the merged GEMM compiled only) on another machine, and at 235d5a0 with
    # the Triton kernel (lorainit.fused), and lorainit's default path at deb518f (the one-kernel loss) and ec6be0d (the
    # two-step views, merged.by_run) on an H100 and on an H200, and at d76cb75 (the chained kernel, dual.chain, and the
    # harness's batches through batches.Uploader) on an H200
    for name in (
        "multi_run_h200.json",
        "multi_run_h100_c.json",
        "multi_run_h100_e_stock_graphs.json",
        "multi_run_h100_f_merged.json",
        "multi_run_h100_g_eager_added.json",
        "multi_run_h100_h_fused.json",
        "multi_run_h100_k_default_deb518f.json",
        "multi_run_h100_l_default_ec6be0d.json",
        "multi_run_h200_default_ec6be0d.json",
        "multi_run_h200_default_d76cb75.json",
    ):
        print("\n".join(multi_rows(json.loads((root / name).read_text()))))
        print()
    for path in sorted(
        root.glob("init_cost_*.json")
    ):  # (eva_memory_h100.json: the EVA-only run before the full re-run)
        print("\n".join(init_rows(json.loads(path.read_text()))))
        print()


if __name__ == "__main__":
    sys.exit(main())
