"""Benchmark (CPU): two host-side costs of a sweep batch, each against the way it was done before, in one process.

1. A run's ``features.png`` (``finetune_card._feature_plot``, drawn once per run, K per batch): the current fixed
   layout, drawn once when saved, against the former figure (``tight_layout``, ``plots.caption``'s measuring draw,
   a tight bounding box: three drawing passes), on the same |Z_A|/|Z_B| records of MiniLM's (24) and SmolLM2's (210)
   LoRA layers. Both alternate, best of ``--repeats``.
2. LM blocks (``batches.blocks``): wiki's training split tokenized in one tokenizer call against one call per text
   (the former loop), with the SmolLM2 tokenizer; the blocks must be equal.

    python bench/writeout.py --out bench/results/writeout_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lorainit import batches, data, io, models, plots  # noqa: E402
from lorainit.experiments import finetune_card  # noqa: E402


def former_feature_plot(evals: list[dict], k: int, path: Path, title: str) -> None:
    """The figure as it was drawn before b6f0f57 (the baseline): laid out by tight_layout, captioned below the
    drawn axes, saved with a tight bounding box."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    steps = [r["step"] for r in evals]
    layers = list(evals[0]["features"][k])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for j, (ax, name) in enumerate(zip(axes, ("|Z_A| = mean ||A z||", "|Z_B| = mean ||B A z||"))):
        values = np.array([[r["features"][k][n][j] for n in layers] for r in evals])  # (evals, layers)
        lines = np.stack(np.broadcast_arrays(np.array(steps, float)[:, None], values), -1).transpose(1, 0, 2)
        ax.add_collection(LineCollection(lines, colors="gray", linewidths=0.5, alpha=0.5))
        ax.plot(steps, values.mean(1), color="k", lw=2, label=f"mean over {len(layers)} LoRA layers")
        ax.set(xlabel="step", ylabel="mean token norm", title=name, yscale="log" if (values > 0).all() else "linear")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plots.caption(
        fig,
        "Grey: each LoRA layer; black: their mean. z: a layer's input tokens on a fixed probe batch "
        "(Hayou et al. 2024, Fig. 3: under Init[A], |Z_A| grows with width).",
    )
    plots.save(fig, path)


def records(layers: int, rng: np.random.Generator) -> list[dict]:
    """Five evaluations (steps 0..200) of one run's per-layer (|Z_A|, |Z_B|), spread over decades as real ones are."""
    return [
        {
            "step": s,
            "features": [  # run 0: layer name -> (|Z_A|, |Z_B|)
                {
                    f"layer{i}": (float(rng.random() * 10 ** (i % 5) + 0.1), float(rng.random() + 0.01 * s))
                    for i in range(layers)
                }
            ],
        }
        for s in range(0, 201, 50)
    ]


def seconds_of(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="writeout."))
    plot = {}
    for layers in (24, 210):
        evals = records(layers, rng)
        ways = {
            "current": lambda: finetune_card._feature_plot(evals, 0, work / "current.png", "init_a, lr 0.001, seed 0"),
            "former": lambda: former_feature_plot(evals, 0, work / "former.png", "init_a, lr 0.001, seed 0"),
        }
        for f in ways.values():  # warm-up: fonts, caches
            f()
        times = {w: [] for w in ways}
        for _ in range(args.repeats):  # alternating, so a drift of the host shows in both
            for w, f in ways.items():
                times[w].append(seconds_of(f))
        s = {w: min(v) for w, v in times.items()}
        plot[f"{layers}_layers"] = {"seconds_per_run": s, "speedup": s["former"] / s["current"]}
    _, tok, _, _ = models.load("smollm2-135m")
    texts = data.load("wiki").splits["train"]

    def per_text() -> list:
        ids = []
        for e in texts:
            ids += tok(e["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(ids) // 256
        return list(torch.tensor(ids[: n * 256]).view(n, 256))

    one, alone = batches.blocks(tok, texts, 256), per_text()
    assert len(one) == len(alone) and all(torch.equal(a, b) for a, b in zip(one, alone))
    tok_s = {
        "one_call": min(seconds_of(lambda: batches.blocks(tok, texts, 256)) for _ in range(args.repeats)),
        "per_text": min(seconds_of(per_text) for _ in range(args.repeats)),
    }
    res = {
        "benchmark": "writeout",
        "provenance": io.provenance(),
        "config": {"repeats": args.repeats},
        "features_png": plot,
        "tokenize_wiki_train": {
            "texts": len(texts),
            "blocks_of_256": len(one),
            "seconds": tok_s,
            "speedup": tok_s["per_text"] / tok_s["one_call"],
            "equal": True,
        },
    }
    print(json.dumps(res, indent=1))
    if args.out:
        io.write_json(args.out, res)


if __name__ == "__main__":
    main()
