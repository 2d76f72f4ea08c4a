"""Initialize a PEFT LoRA model's adapters with any registered scheme, and save adapters plain PEFT loads.

    from lorainit import apply
    applied = apply.apply(model, "pissa", rank=16, alpha=32, targets=["q_proj", "v_proj"])
    applied = apply.apply(model, "lora_one", rank=16, data=batches)          # data-dependent
    apply.save(applied, "adapter/")   # PEFT format; residual schemes become a rank-2r adapter for the ORIGINAL base

This module writes the adapters (and residual base weights) of PEFT models; ``lorainit.multi`` holds its own
K adapters, drawn from the same ``lorainit.starts``. ``model`` is a plain
transformers/torch model (wrapped here with ``peft.get_peft_model``) or a ``PeftModel`` whose adapter
is re-initialized. Each target layer gets ``scheme(W, r, generator=..., **data, **hyperparameters)``
with W its base weight as (out, in); a residual scheme (PiSSA, LoRA-GA) also replaces W by its
residual, which keeps the model's output but changes the base: ``save`` then writes the equivalent
plain adapter for the original base, Delta W = s (B A - B_0 A_0) as rank 2r: A' = [A; A_0],
B' = [B, -B_0], with lora_alpha chosen so the scaling s is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import export, inits, io, starts, stats
from .inits import Factors


@dataclass
class Applied:
    """A model whose adapter ``adapter`` was initialized with ``scheme``."""

    model: nn.Module  # the PeftModel
    scheme: str
    adapter: str
    initial: dict[str, Factors]  # initial factors of the layers whose base weight was replaced by a residual


def lora_layers(model, adapter: str = "default") -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}


def _as_peft(model, rank, alpha, targets, use_rslora, adapter, task_type=None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        if rank is not None or targets is not None:
            raise ValueError(
                "model is already a PeftModel: its adapter fixes rank and targets; do not pass rank/targets"
            )
        return model
    if rank is None:
        raise ValueError("rank is required when the model has no LoRA adapter yet")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=targets or "all-linear",
        lora_dropout=0.0,
        use_rslora=use_rslora,
        task_type=task_type,
    )
    try:
        return get_peft_model(model, cfg, adapter_name=adapter)
    except ValueError as e:  # PEFT's message for targets that match nothing
        raise ValueError(f"cannot add LoRA to this model: {e}".splitlines()[0]) from None


def apply(
    model,
    scheme: str,
    *,
    rank: int | None = None,
    alpha: float | None = None,
    targets: list[str] | None = None,
    data=None,
    loss_fn: stats.LossFn = stats.default_loss,
    seed: int = 0,
    use_rslora: bool = False,
    adapter: str = "default",
    budget_mb: float = 1024.0,
    freeze_a: bool = False,
    task_type: str | None = None,
    **options,
) -> Applied:
    """Initialize every LoRA layer of ``model`` with ``scheme``; see the module docstring.

    ``options`` are the scheme's (``starts.options(scheme)``): its own keywords (pissa's ``niter``, hrp's
    ``a_scale``, ...) and the settings of the data pass it needs (hrp: ``preheat_rank``, ``preheat_steps``,
    ``preheat_lr``); a name the scheme does not take is refused in one line that lists those it does.

    ``budget_mb`` bounds the per-layer statistics of a data-dependent init held at once (full-size gradients,
    or in x in activation scatter matrices): layers are processed in groups that fit, one data pass each.
    It also bounds the working memory of a scheme's stacked form (PiSSA), which decomposes same-shape layers at once.
    ``freeze_a=True`` gives asymmetric LoRA (Chen et al. 2025): ``lora_A`` keeps its initial value and
    only ``lora_B`` trains. ``task_type`` is PEFT's (e.g. "SEQ_CLS" also trains and saves the new head)."""
    entry = inits.entry(scheme)
    starts.split_options(scheme, options)  # (checked before PEFT wraps the model)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0):
        raise ValueError(f"rank must be a positive integer; got {rank!r}")
    if "target" in entry.needs:
        raise ValueError(
            "'target' is an oracle for synthetic problems with a known update (lorainit mf); it has no meaning on a model"
        )
    if entry.needs and data is None:
        raise ValueError(
            f"{scheme} needs training data ({', '.join(entry.needs)}): pass data=an iterable of batches (and loss_fn)"
        )
    peft_model = _as_peft(model, rank, alpha, targets, use_rslora, adapter, task_type)
    layers = lora_layers(peft_model, adapter)
    if not layers:
        raise ValueError(f"the model has no LoRA layers for adapter {adapter!r}: check the target module names")
    for name, layer in layers.items():
        out_f, in_f = stats.base_weight(layer).shape
        if layer.r[adapter] > min(out_f, in_f):
            raise ValueError(
                f"rank {layer.r[adapter]} exceeds min(out, in) = {min(out_f, in_f)} of layer {name}; "
                f"choose rank <= {min(out_f, in_f)} or leave that layer out of the targets"
            )
    drawn = starts.draw_all(
        peft_model,
        layers,
        [scheme],
        seed=seed,
        ranks={n: l.r[adapter] for n, l in layers.items()},
        scalings={n: l.scaling[adapter] for n, l in layers.items()},
        data=data,
        loss_fn=loss_fn,
        budget_mb=budget_mb,
        hyperparameters={scheme: options},
    )
    # every layer is drawn before any is written: a residual written into one layer's base would change the
    # function a data pass still running over the other layers' groups sees
    factors = [(name, f) for _, name, f in drawn]
    initial = {}
    for name, f in factors:
        layer = layers[name]
        _write(layer, adapter, f)
        layer.lora_A[adapter].weight.requires_grad_(not freeze_a)
        if f.residual is not None:
            initial[name] = Factors(A=f.A.detach().clone(), B=f.B.detach().clone())
    return Applied(model=peft_model, scheme=scheme, adapter=adapter, initial=initial)


draw = starts.draw  # the one seeded draw of a layer (kept here: ``apply.draw`` is where users found it)


@torch.no_grad()
def _write(layer, adapter: str, f: Factors) -> None:
    layer.lora_A[adapter].weight.copy_(f.A)  # nn.Linear(in, r).weight is (r, in)
    layer.lora_B[adapter].weight.copy_(f.B)  # nn.Linear(r, out).weight is (out, r)
    if f.residual is not None:
        base = layer.get_base_layer().weight
        base.copy_(f.residual.T if getattr(layer, "fan_in_fan_out", False) else f.residual)


def save(applied: Applied, path: str | Path, *, overwrite: bool = False) -> dict:
    """Write the adapter in PEFT's format (atomically: a temporary folder renamed at the end); an
    existing ``path`` is refused unless ``overwrite``.

    Returns what was written: {"rank", "lora_alpha", "converted_for_original_base"}."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another folder or pass overwrite=True")
    model, adapter = applied.model, applied.adapter
    cfg = model.peft_config[adapter]
    info = {}

    def fill(tmp: Path) -> Path:
        if not applied.initial:
            model.save_pretrained(tmp, selected_adapters=[adapter])
            src = tmp / adapter if adapter != "default" else tmp
            info.update(rank=cfg.r, lora_alpha=cfg.lora_alpha, converted_for_original_base=False)
        else:
            src = tmp
            state = get_peft_model_state_dict(model, adapter_name=adapter)
            for name, layer in lora_layers(model, adapter).items():
                key = name  # PEFT's state-dict keys are module paths without the adapter name
                A, B = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
                f0 = applied.initial.get(name, Factors(A=torch.zeros_like(A), B=torch.zeros_like(B)))
                state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"] = export.rank_2r(
                    A, B, f0.A, f0.B
                )  # (2r, in), (out, 2r)
            new = dataclasses.replace(
                cfg, r=2 * cfg.r, lora_alpha=export.alpha_2r(cfg.lora_alpha, cfg.use_rslora), init_lora_weights=True
            )
            new.save_pretrained(tmp)
            save_file(state, tmp / "adapter_model.safetensors")
            info.update(rank=new.r, lora_alpha=new.lora_alpha, converted_for_original_base=True)
        (src / "lorainit.json").write_text(json.dumps({"scheme": applied.scheme, **info}, indent=1) + "\n")
        return src

    io.replace_folder(path, fill)
    return info


def load(model, path: str | Path, *, adapter: str = "default"):
    """Load a saved adapter onto ``model`` (a plain transformers model) as a ``PeftModel``, after checking
    that every adapter tensor fits a layer of this model: a mismatched base gives one ValueError line
    naming the first layer that does not fit, instead of PEFT's size-mismatch dump. Only safetensors and
    JSON are read."""
    from peft import PeftModel
    from safetensors import safe_open

    path = Path(path)
    weights = path / "adapter_model.safetensors"
    if not (path / "adapter_config.json").exists() or not weights.exists():
        raise ValueError(f"{path} is not a saved adapter (needs adapter_config.json and adapter_model.safetensors)")
    config = json.loads((path / "adapter_config.json").read_text())
    modules = dict(model.named_modules())
    with safe_open(weights, framework="pt") as f:
        for key in f.keys():
            name, sep, kind = key.rpartition(".lora_")
            if not sep:  # not a LoRA factor: a trained task head (PEFT's modules_to_save), loaded by PEFT as it is
                continue
            name = name.removeprefix("base_model.model.")  # PEFT's key prefix
            module = modules.get(name)
            shape = tuple(f.get_slice(key).get_shape())
            if module is None or not hasattr(module, "weight") or module.weight.dim() != 2:
                raise ValueError(
                    f"adapter at {path} does not fit this model: it has no linear layer {name!r}; load it onto "
                    f"the base model it was trained for ({config.get('base_model_name_or_path') or 'see adapter_config.json'})"
                )
            out_f, in_f = module.weight.shape
            want = in_f if kind.startswith("A") else out_f
            have = shape[1] if kind.startswith("A") else shape[0]
            if have != want:
                raise ValueError(
                    f"adapter at {path} does not fit this model: {name}.lora_{kind} is {shape} but the layer is "
                    f"{out_f} x {in_f}; load it onto the base model it was trained for "
                    f"({config.get('base_model_name_or_path') or 'see adapter_config.json'})"
                )
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter)
