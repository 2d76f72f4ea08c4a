"""Adapters as plain PEFT folders, written from factors: what ``lorainit finetune`` saves for each run.

A run of a residual scheme (PiSSA, LoRA-GA) trained on the unchanged base with the frozen correction
-s B0 A0 (``lorainit.multi``); for the original base that is the rank-2r adapter

    A' = [A; A0]  (2r x in),   B' = [B, -B0]  (out x 2r),   lora_alpha' = 2 alpha (sqrt(2) alpha under rsLoRA)

so that s' B' A' = s (B A - B0 A0) with s' = s (``rank_2r``; ``lorainit.apply.save`` writes the same for a
PeftModel whose base was replaced by the residual). A trained task head is saved as PEFT saves its
``modules_to_save``. Folders are written to a temporary name and renamed: complete or absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import io
from .starts import PEFT_PREFIX


def rank_2r(A: torch.Tensor, B: torch.Tensor, A0: torch.Tensor, B0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank-2r factors (A' (2r, in), B' (out, 2r)) with B' A' = B A - B0 A0."""
    return torch.cat([A, A0.to(A.dtype)], 0).contiguous(), torch.cat([B, -B0.to(B.dtype)], 1).contiguous()


def alpha_2r(alpha: float, use_rslora: bool) -> float:
    """lora_alpha at rank 2r that keeps the scaling alpha/r (or alpha/sqrt(r) under rsLoRA)."""
    return alpha * (2**0.5 if use_rslora else 2.0)


def write_adapter(
    path: Path,
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    rank: int,
    alpha: float,
    use_rslora: bool,
    task_type: str | None = None,
    head: dict[str, torch.Tensor] | None = None,
    base_model: str | None = None,
    info: dict | None = None,
) -> dict:
    """A PEFT adapter folder at ``path`` (replaced if present): ``factors`` maps module paths (without PEFT's
    prefix) to (lora_A (rank, in), lora_B (out, rank)); ``head`` maps the trained head's state-dict keys
    (e.g. "classifier.weight") to tensors. ``info`` goes to lorainit.json beside the adapter. Returns it."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from .models import HEADS

    state = {}
    for name, (A, B) in factors.items():
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.detach().float().contiguous().cpu()
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B.detach().float().contiguous().cpu()
    for key, t in (head or {}).items():
        state[PEFT_PREFIX + key] = t.detach().float().contiguous().cpu()
    targets = sorted({n.rsplit(".", 1)[-1] for n in factors})
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        use_rslora=use_rslora,
        task_type=task_type,
        modules_to_save=list(HEADS) if head else None,
        base_model_name_or_path=base_model,
    )
    info = {"rank": rank, "lora_alpha": alpha, **(info or {})}

    def fill(tmp: Path) -> None:
        cfg.save_pretrained(tmp)
        save_file(state, tmp / "adapter_model.safetensors")
        (tmp / "lorainit.json").write_text(json.dumps(info, indent=1) + "\n")

    io.replace_folder(path, fill)
    return info
