"""Full fine-tuning, the reference row beside the LoRA inits (``--init full``; HRP's claim that it "achieves
results comparable to full-parameter fine-tuning", Chen et al. 2025, Sec. 5).

``full`` is a method, not an init scheme: there are no factors, so it is not in the ``inits`` registry (whose
contract is the factors of a rank-r adapter); ``check`` accepts it wherever an init name is taken.

A full fine-tune trains a copy of the loaded base (``prepare``), never the base itself: a sweep worker keeps
one frozen base for all its LoRA batches. The copy is float32, the master weights of mixed precision: under
bf16 autocast its matmuls run in bf16 as the LoRA runs' do, while AdamW's small updates land on fp32
weights (on bf16 weights an update below 2^-8 of the weight is lost). Every parameter trains except the
embedding tables (token, position, type; with them a tied output layer), which train with ``embeddings``.
What it costs (``memory``): 16 bytes per trained parameter (fp32 weight, gradient and two AdamW moments)
and 4 per frozen one, before activations; ``check_memory`` refuses a device that cannot hold it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

FULL = "full"
BYTES_TRAINED = 16  # fp32 weight, gradient, AdamW exp_avg and exp_avg_sq
BYTES_FROZEN = 4  # fp32 weight


def is_full(name: str) -> bool:
    return name == FULL


def check(name: str) -> None:
    """Accept ``full`` or a registered init scheme; a KeyError naming the closest scheme otherwise."""
    from . import inits

    if not is_full(name):
        try:
            inits.entry(name)
        except KeyError as e:
            raise KeyError(f"{e.args[0]}; or '{FULL}' (every weight trains)") from None


def trained(model: nn.Module, *, embeddings: bool = False) -> dict[str, nn.Parameter]:
    """The parameters a full fine-tune trains, by name: all, but the ``nn.Embedding`` tables unless ``embeddings``
    (a tied output layer shares its table's parameter, so it trains exactly when the embeddings do)."""
    frozen = set() if embeddings else {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {n: p for n, p in model.named_parameters() if id(p) not in frozen}


def memory(model: nn.Module, *, embeddings: bool = False) -> dict[str, int]:
    """{"trained", "frozen": parameter counts, "bytes": what the fp32 copy, its gradients and AdamW state take}."""
    total = sum(p.numel() for p in model.parameters())  # (tied parameters once)
    n = sum(p.numel() for p in trained(model, embeddings=embeddings).values())
    return {"trained": n, "frozen": total - n, "bytes": n * BYTES_TRAINED + (total - n) * BYTES_FROZEN}


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: the GPU's free memory, or the host's MemAvailable on CPU (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def describe(need: dict[str, int], model_name: str) -> str:
    return (
        f"full fine-tuning of {model_name}: {need['trained']:,} trained parameters x {BYTES_TRAINED} bytes "
        f"(fp32 weights, gradients, AdamW moments) + {need['frozen']:,} frozen x {BYTES_FROZEN} = "
        f"{need['bytes'] / 2**30:.2f} GiB before activations"
    )


def check_memory(need: dict[str, int], device: torch.device, model_name: str) -> None:
    """Refuse (ValueError, one line) when ``device`` has less free memory than ``need["bytes"]``."""
    free = available_bytes(device)
    if free is not None and need["bytes"] > free:
        raise ValueError(
            f"{describe(need, model_name)}, but {device} has {free / 2**30:.2f} GiB free; "
            "fine-tune a LoRA adapter instead (--init init_a) or use a device with more memory"
        )


def prepare(
    model: nn.Module, *, embeddings: bool = False, head: str | None = None, head_module: nn.Module | None = None
) -> nn.Module:
    """A float32 copy of ``model`` in training mode with the ``trained`` parameters trainable (the rest frozen); where
    ``head`` names the task head, ``head_module`` replaces it (the seeded head of ``models.seeded_head``)."""
    method = quantization(model)
    if method not in (None, "gguf") or not all(p.is_floating_point() for p in model.parameters()):
        raise ValueError(
            f"full fine-tuning needs float weights, and this model is quantized ({method}); load it unquantized "
            "or fine-tune a LoRA adapter (--init init_a)"
        )
    out = copy.deepcopy(model)
    if method is not None:  # GGUF weights are de-quantized at load: a plain float model that only carries the mark
        out.hf_quantizer, out.is_quantized = None, False
        out.__dict__.pop("quantization_method", None)
        del out.config.quantization_config
    out = out.float()
    for m in out.modules():  # a block compiled for an earlier batch would call the original's forward: uncompiled here
        m._compiled_call_impl = None
    if head is not None:
        setattr(out, head, head_module.to(next(out.parameters()).device).float())
    out.requires_grad_(False)
    for p in trained(out, embeddings=embeddings).values():
        p.requires_grad_(True)
    return out.train()


def quantization(model: nn.Module) -> str | None:
    """The quantization method transformers records for ``model`` ("gguf", "bitsandbytes", ...), or None."""
    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    if qc is None and getattr(model, "hf_quantizer", None) is None:
        return None
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    return str(getattr(method, "value", method))


def save(model: nn.Module, tok, path: Path) -> dict:
    """``model`` and its tokenizer as a plain transformers folder (safetensors, float32) at ``path``, written whole or
    not at all; returns what the run card records about it."""
    from . import io

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    io.replace_folder(Path(path), fill)
    return {
        "path": Path(path).name,
        "format": "transformers, safetensors, float32",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
