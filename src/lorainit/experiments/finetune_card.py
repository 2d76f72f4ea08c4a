"""What a finished fine-tune leaves in its run folder: the trained weights (a plain PEFT adapter, or for a full
fine-tune a plain transformers folder), features.png (the Z_A / Z_B monitor of Hayou et al. 2024, Fig. 3) and
run_card.json: config, provenance, versions, task and model hashes, metrics, divergence, execution and timing."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import export, full, io, plots
from .finetune import autocast_dtype, eval_batch, run_identity


def finish(
    k: int,
    point: dict,
    run_dir: Path,
    layers: dict,
    head_state,
    corrected: bool,
    *,
    cfg,
    loaded,
    device,
    world,
    scaling,
    params,
    init_cost,
    setup,
    compiled,
    compile_mode,
    wall,
    trained,
    trainee=None,
    memory=None,
) -> dict:
    """Run k's weights, features.png and run card in ``run_dir``; ``trainee``: the trained copy of a full fine-tune;
    ``compiled``: whether the blocks ran compiled; ``compile_mode``: the torch.compile mode they ran in (None: the
    default, or not compiled)."""
    import peft
    import transformers

    task, losses, evals = loaded.task, trained["losses"], trained["evals"]
    metric = task.metric
    dead = losses.diverged_step[k]
    last = evals[-1] if evals and evals[-1]["step"] == cfg.steps and dead is None else None
    pick = lambda rec: {key: v[k] for key, v in rec.items() if isinstance(v, list) and key != "features"}  # noqa: E731
    run_dir.mkdir(parents=True, exist_ok=True)
    adapter = model_folder = None
    if dead is None and trainee is not None:
        model_folder = full.save(trainee, loaded.tok, run_dir / "model")
    elif dead is None:
        factors = {}
        for name, m in layers.items():
            A, B = m.lora_A[k].detach(), m.lora_B[k].detach()
            if corrected:
                A, B = export.rank_2r(A, B, m.corr_A[k], -m.corr_B[k])
            factors[name] = (A, B)
        adapter = export.write_adapter(
            run_dir / "adapter",
            factors,
            rank=cfg.rank * (2 if corrected else 1),
            alpha=export.alpha_2r(cfg.alpha, cfg.rslora) if corrected else cfg.alpha,
            use_rslora=cfg.rslora,
            task_type="SEQ_CLS" if head_state else None,
            head=head_state,
            base_model=cfg.model,
            info={"scheme": point["init"], "converted_for_original_base": corrected},
        )
        _feature_plot(
            evals, k, run_dir / "features.png", f"{cfg.model}, {cfg.task}, {point['init']}, lr {point['lr']:g}"
        )
    result = trained["result"]
    card = {
        "config": run_identity(cfg, point),
        "provenance": io.provenance(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "task": {
            "name": task.name,
            "metric": metric,
            "split_hash": task.split_hash,
            "data_sha256": task.source_sha256,
            "sizes": {s: len(v) for s, v in task.splits.items()},
            "max_train": cfg.max_train,
            "max_eval": cfg.max_eval,
        },
        "model": {"name": cfg.model, "kind": loaded.kind, "sha256": loaded.fingerprint, **params},
        "init": {
            "scheme": point["init"],
            "corrected": corrected,
            "scaling": scaling,
            "starts": init_cost,
            **({"memory": memory} if memory else {}),
        },
        "metrics": {
            "base_test": pick(trained["base"]),
            "final": pick(last) if last else None,
            "val_history": [
                {"step": r["step"], **pick({key: v for key, v in r.items() if key.startswith("val_")})} for r in evals
            ],
            "train_loss": trained["curves"][k],
        },
        "diverged": None if dead is None else {"step": dead, "reason": losses.reason[k]},
        "execution": {
            "device": str(device),
            "compile": compiled,
            "compile_mode": compile_mode,
            "autocast": str(autocast_dtype(device)),
            "processes": world,
            "eval_batch_size": eval_batch(cfg),
        },
        "timing": {
            "runs_in_batch": losses.K,
            "seconds": wall / losses.K,
            "batch_seconds": wall,
            "batch_setup_seconds": setup,
            "loop_seconds": result["seconds"],
            "resumed_from": result["resumed_from"],
            "tokens_per_second": result["tokens"] / result["seconds"] if result["seconds"] else None,
        },
        "adapter": adapter,
        **({"model_folder": model_folder} if trainee is not None else {}),
    }
    io.write_json(run_dir / "run_card.json", card)
    return card


def _feature_plot(evals: list[dict], k: int, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection

    evals = [r for r in evals if r.get("features") and r["features"][k]]  # (a full fine-tune has none)
    if not evals:
        return
    steps = [r["step"] for r in evals]
    layers = list(evals[0]["features"][k])
    # a fixed layout, drawn once when saved: tight_layout, a caption placed below the drawn axes and a tight bounding
    # box drew every run's figure three times: 2.6x slower, K figures per batch (bench/results/writeout_cpu.json)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.22, wspace=0.24)  # room for 6x10^-1 ticks
    for j, (ax, name) in enumerate(zip(axes, ("|Z_A| = mean ||A z||", "|Z_B| = mean ||B A z||"))):
        values = np.array([[r["features"][k][n][j] for n in layers] for r in evals])  # (evals, layers)
        lines = np.stack(np.broadcast_arrays(np.array(steps, float)[:, None], values), -1).transpose(1, 0, 2)
        ax.add_collection(LineCollection(lines, colors="gray", linewidths=0.5, alpha=0.5))  # (layers, evals, 2)
        # (one artist for all layers: a line each, with the legend placed around them, was 94% of a run's write-out)
        ax.plot(steps, values.mean(1), color="k", lw=2, label=f"mean over {len(layers)} LoRA layers")
        ax.set(xlabel="step", ylabel="mean token norm", title=name, yscale="log" if (values > 0).all() else "linear")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.text(
        0.5,
        0.02,
        "Grey: each LoRA layer; black: their mean. z: a layer's input tokens on a fixed probe batch "
        "(Hayou et al. 2024, Fig. 3: under Init[A], |Z_A| grows with width).",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    plots.save(fig, path, tight=False)
