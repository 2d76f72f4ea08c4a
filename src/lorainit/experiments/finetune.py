"""Fine-tuning a real pretrained model with a chosen LoRA init (Hayou et al. 2024, Sec. 4 setups): the config,
its validation and identity. The batches a run trains on are the data layer's (``lorainit.batches``); the runs
themselves (K >= 1 on one frozen base) are ``finetune_run``; their evaluation and feature monitor ``finetune_eval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .. import io


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA fine-tune of one model on one task with one init and one learning rate."""

    model: str = "smollm2-135m"
    """short name (smollm2-135m, minilm-l6), local folder or hub id"""
    task: str = "wiki"
    """wiki, mathqa, nli, sentiment, or a .jsonl file"""
    init: str = "init_a"
    """LoRA init scheme (lorainit.inits), or 'full': full fine-tuning, every weight trains (lorainit.full)"""
    lr: float = 2e-4
    """peak learning rate (lora_A and other trainable tensors)"""
    rank: int = 16
    """LoRA rank r"""
    alpha: float = 16.0
    """LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with --rslora)"""
    targets: tuple[str, ...] = ()
    """module names to adapt (default: every linear projection of the model's blocks)"""
    loraplus_ratio: float = 1.0
    """LoRA+: lora_B's learning rate is this times lr"""
    rslora: bool = False
    """rank-stabilized scaling alpha/sqrt(r)"""
    steps: int = 200
    """optimizer steps"""
    batch_size: int = 8
    """sequences per micro-batch, over all processes under torchrun (see --batch-per-process)"""
    batch_per_process: bool = False
    """under torchrun, --batch-size counts each process's sequences (weak scaling: the global batch is batch_size x
    processes, and a resumed run must use as many processes)"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    seq_len: int = 256
    """tokens per sequence (LM block length; truncation length otherwise)"""
    warmup_ratio: float = 0.03
    """fraction of steps with linear warmup"""
    eval_every: int = 50
    """evaluate on validation every this many steps"""
    checkpoint_every: int = 50
    """write a resumable checkpoint every this many steps"""
    max_train: int = 0
    """use only the first N training examples, or LM blocks (0: all)"""
    max_eval: int = 0
    """use only the first N validation and test examples, or LM blocks (0: all)"""
    eval_batch_size: int = 0
    """examples (questions, texts or LM blocks) per evaluation batch, each evaluated for all K runs at once (0: 64, or
    --batch-size where larger). Evaluation keeps nothing for a backward pass, so a larger batch fits (one that does
    not is evaluated in halves), and on a GPU, where evaluating small batches waits on Python rather than the card,
    runs faster (H100: 64 vs 16 is 2.2x on wiki at K=1, the same at K=8, 1.53x on mathqa at K=8;
    bench/results/batch_phases_smollm2_wiki_*, choice_eval_ebs_h100.json). It changes how the metrics are computed
    (rounding), not what"""
    init_batches: int = 2
    """training batches given to data-dependent inits"""
    seed: int = 0
    """seed of the init, the classifier head and the data order"""
    train_embeddings: bool = False
    """with --init full: train the embedding tables too (token, position, type; a tied output layer with them); LoRA
    runs ignore it"""
    dropout: bool = False
    """keep the model's own dropout (off by default: with several runs in one batch, a run's dropout masks would
    depend on its batch neighbours, and a study's values would depend on how its points were batched)"""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'"""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile each transformer block on a GPU: 15-25 s at the start (cold cache), then 1.6-1.7x the steps/s
    on an H100; 'auto': on from 200 steps on a language-modelling task, whose batches all have one shape (SmolLM2
    wiki, 200 steps: 16 runs 101.7 vs 121.2 s in the loop, one run 43.6 vs 44.3 s; at 100 steps it lost:
    results/compile-check; bench/results/batch_phases_smollm2_wiki_k*_compile_*), off for classification and
    multiple choice, whose padded lengths vary by batch ('on' compiles those with dynamic shapes, and MiniLM nli
    then lost: one run 80.9 vs 34.0 s, 16 runs not done in 120 s vs 62.7 s eager); ignored on CPU. A compiled
    language-modelling run of adapters replays each block as a CUDA graph (--cuda-graphs)"""
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    """replay each compiled block's kernels as a CUDA graph (torch.compile's 'reduce-overhead'; no effect where
    the blocks are not compiled): 'auto' for adapters on a language-modelling task, in one process or under
    torchrun (one run's step 2.7x faster on an H100; 2 torchrun processes 1.96x the tokens/s on two H200s); 'on'
    for every compiled run (also full fine-tunes and padded kinds: a graph per padded length); 'off' never
    (graphs keep their own memory pool)"""


COMPILE_FROM = 200  # steps from which 'auto' compiles an LM task (measured break-even for one run: about 190)


def graph_mode(setting: str, kind: str, trainee) -> str | None:
    """torch.compile's mode for the blocks of a compiled run (``setting``: --cuda-graphs): 'reduce-overhead' (each
    block's kernels replayed as a CUDA graph, no launch per kernel) with 'on', and with 'auto' for adapters on a
    language-modelling task, whose batches all have one shape. It is the host's launches that bound a small step:
    SmolLM2 wiki, 16 x 256, median step one run 44 vs 118 ms, 16 runs 276-280 vs 277-287 ms (GPU-bound), side by
    side on two H100s with the cards swapped (bench/results/batch_phases_smollm2_wiki_k*_{cudagraphs,compiled}_card*
    _h100.json); under torchrun, 2 processes at 16 x 512 each: 435k / 458k vs 232k / 224k tokens/s past step 20,
    loss curves within 1.2e-4 (median relative difference; bench/results/scale_out_graphs_torchrun_h200x2.json).
    'auto' leaves padded kinds (a graph per length) and full fine-tunes in the default mode (not measured)."""
    if setting == "on":
        return "reduce-overhead"
    return "reduce-overhead" if setting == "auto" and kind == "lm" and trainee is None else None


def compiles(cfg: "FinetuneConfig", device, kind: str) -> bool:
    """Whether this run's blocks are compiled; ``kind`` is the task's (``data.Task.kind``): 'auto' compiles only
    'lm', the one kind whose batches keep one shape (blocks of seq_len tokens), from COMPILE_FROM steps (measured).
    With --compile on, a classification or choice run compiles its blocks with dynamic shapes, one graph for every
    padded length (with static shapes each new length compiled again, until dynamo's recompile limit left the rest
    eager: the measured H100 run of 9.5k against 15.3k tokens/s eager); on an H100 that lost to eager too (MiniLM
    nli, 200 steps: 80.9 vs 34.0 s for one run; bench/results/batch_phases_minilm_nli_k1_compile_*)."""
    if device.type != "cuda" or cfg.compile == "off":
        return False
    return cfg.compile == "on" or (kind == "lm" and cfg.steps >= COMPILE_FROM)


def autocast_dtype(device) -> torch.dtype | None:
    """The dtype a run's forward and backward compute in: bf16 autocast on a GPU, none (fp32) on CPU."""
    return torch.bfloat16 if device.type == "cuda" else None


EVAL_BATCH = 64  # examples per evaluation batch by default (--eval-batch-size 0)


def eval_batch(cfg: FinetuneConfig) -> int:
    """Examples per evaluation batch: --eval-batch-size, or where it is 0 the larger of EVAL_BATCH and --batch-size."""
    return cfg.eval_batch_size or max(cfg.batch_size, EVAL_BATCH)


POINT = ("init", "lr", "seed")  # the fields a point sets; the rest of the config is shared by the batch


def identity(cfg: FinetuneConfig, points: list[dict]) -> dict:
    """A batch's config.json: the shared config and its points (execution fields left out)."""
    return {**io.config_dict(cfg, drop=(*io.EXECUTION, *POINT)), "points": points}


def run_identity(cfg: FinetuneConfig, point: dict) -> dict:
    """One run's config, as its run card records it."""
    return {**io.config_dict(cfg, drop=(*io.EXECUTION, *POINT)), **{k: point[k] for k in POINT}}


def validate(cfg: FinetuneConfig) -> None:
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0; got {cfg.lr}")
    for name in (
        "rank",
        "steps",
        "batch_size",
        "grad_accum",
        "seq_len",
        "eval_every",
        "checkpoint_every",
        "init_batches",
    ):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {getattr(cfg, name)}")
    if not cfg.loraplus_ratio > 0 or not cfg.alpha > 0:
        raise ValueError("alpha and loraplus_ratio must be > 0")
    for name in ("eval_batch_size", "max_eval", "max_train"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0: its default, see --help); got {getattr(cfg, name)}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1); got {cfg.warmup_ratio}")
