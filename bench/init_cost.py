"""Benchmark: wall time and peak GPU memory of every init scheme applied to a whole model, side by side.

Models are randomly initialized with the shapes of SmolLM2-135M and TinyLlama-1.1B (init cost depends
on shapes, not on the pretrained values; a flat random spectrum is the hard case for randomized SVD),
bf16 weights, LoRA r=16 on every linear projection, random-token batches of 4 x 256. Reported:
- per scheme: seconds (best of up to --repeats applications to a fresh model, as many as fit in
  --repeat-budget seconds) and peak memory above the loaded model, and peak relative to one LoRA
  training step (forward, backward, AdamW) on the same batch;
- PiSSA with randomized SVD (niter=4) vs full SVD: speed-up and top-r subspace agreement per layer;
- HRP's preheat (20 steps) as a share of a 1000-step run's time.
Writes JSON with device, date and commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorainit import apply, io  # noqa: E402
from lorainit.inits.spectral import top_svd  # noqa: E402

SHAPES = {
    "smollm2-135m-shape": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    "tinyllama-1.1b-shape": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
    ),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEMES = [
    ("init_a", {}),
    ("init_b", {}),
    ("gaussian", {}),
    ("orthogonal", {}),
    ("pissa", {}),
    ("pissa", {"niter": 4}),
    ("lora_ga", {}),
    ("lora_one", {}),
    ("eva", {}),
    ("hrp", {"preheat_steps": 20}),
]


def model_of(shape: str, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        m = LlamaForCausalLM(LlamaConfig(max_position_embeddings=512, **SHAPES[shape]))
    return m.to(torch.bfloat16)


def batches(vocab: int, device, n: int = 2):
    g = torch.Generator(device="cpu").manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (4, 256), generator=g).to(device)
        out.append({"input_ids": ids, "labels": ids})
    return out


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated()


def train_step_peak(shape: str, device, data) -> tuple[float, float]:
    """Peak memory and time of one LoRA training step (init_a), and its per-step time over 10 steps."""
    applied = apply.apply(model_of(shape, device), "init_a", rank=16, alpha=16, targets=TARGETS)
    opt = torch.optim.AdamW([p for p in applied.model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        applied.model(**data[0]).loss.backward()
        opt.step()

    step()
    _, _, peak = timed(step)
    _, secs, _ = timed(lambda: [step() for _ in range(10)])
    return peak, secs / 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--schemes", default="", help="only these scheme labels (e.g. init_a,eva); default: all")
    p.add_argument("--repeats", type=int, default=3, help="timed applications per scheme (the best is reported) ...")
    p.add_argument(
        "--repeat-budget", type=float, default=15.0, help="... while their total stays under this many seconds"
    )
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    wanted = set(a.schemes.split(",")) if a.schemes else None
    device = torch.device("cuda")
    result = {"benchmark": "init_cost", "provenance": io.provenance(), "rank": 16, "targets": TARGETS, "models": {}}
    for shape in a.shapes.split(","):
        data = batches(SHAPES[shape]["vocab_size"], device)
        step_peak, step_s = train_step_peak(shape, device, data)
        rows = {}
        for name, kw in SCHEMES:
            label = name + ("_niter4" if kw.get("niter") else "")
            if wanted and label not in wanted:
                continue
            times = []
            while len(times) < a.repeats and sum(times) < a.repeat_budget:  # best of a few where a scheme is quick
                model = model_of(shape, device)
                torch.cuda.synchronize()
                loaded = torch.cuda.memory_allocated()
                applied, secs, peak = timed(
                    lambda: apply.apply(
                        model,
                        name,
                        rank=16,
                        alpha=16,
                        targets=TARGETS,
                        data=data if name in ("lora_ga", "lora_one", "eva", "hrp") else None,
                        **kw,
                    )
                )
                times.append(secs)
                del applied, model
                torch.cuda.empty_cache()
            secs = min(times)
            rows[label] = {
                "seconds": secs,
                "all_seconds": times,
                "peak_gib": peak / 2**30,
                "peak_above_model_gib": (peak - loaded) / 2**30,
                "peak_vs_train_step": peak / step_peak,
            }
            print(
                f"{shape:22s} {label:14s} {secs:8.2f} s (best of {len(times)})  peak {peak / 2**30:6.2f} GiB "
                f"({peak / step_peak:4.2f}x a train step)",
                flush=True,
            )
        if wanted:  # a partial run: the rows only
            result["models"][shape] = {
                "train_step_seconds": step_s,
                "train_step_peak_gib": step_peak / 2**30,
                "schemes": rows,
            }
            io.write_json(a.out, result)
            continue
        # randomized vs full SVD on the same weights: subspace agreement (largest principal-angle sine), 6 layers
        model = model_of(shape, device)
        gaps = []
        for lname, mod in list(model.named_modules()):
            if lname.endswith(("q_proj", "down_proj")) and len(gaps) < 6:
                W = mod.weight.float()
                _, _, V1 = top_svd(W, 16)
                _, _, V2 = top_svd(W, 16, niter=4, generator=torch.Generator().manual_seed(0))
                gaps.append(torch.linalg.matrix_norm(V1.T @ V1 - V2.T @ V2, ord=2).item())
        pre = rows["hrp"]["seconds"] - rows["init_a"]["seconds"]
        result["models"][shape] = {
            "train_step_seconds": step_s,
            "train_step_peak_gib": step_peak / 2**30,
            "schemes": rows,
            "pissa_randomized_speedup": rows["pissa"]["seconds"] / rows["pissa_niter4"]["seconds"],
            "pissa_randomized_subspace_sine_max": max(gaps),
            "pissa_randomized_subspace_sine_per_layer": gaps,
            "hrp_preheat_seconds_approx": pre,
            "hrp_preheat_share_of_1000_steps": pre / (1000 * step_s),
        }
        io.write_json(a.out, result)
        m = result["models"][shape]
        print(
            f"{shape}: train step {step_s * 1e3:.0f} ms; randomized PiSSA {m['pissa_randomized_speedup']:.1f}x faster, "
            f"subspace sine <= {m['pissa_randomized_subspace_sine_max']:.3f}; HRP preheat {100 * m['hrp_preheat_share_of_1000_steps']:.1f}% "
            f"of 1000 steps",
            flush=True,
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
