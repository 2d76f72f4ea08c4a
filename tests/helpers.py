"""Tiny models and toy studies the tests share (importable as ``helpers``: pytest puts tests/ on the path)."""

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn


def tiny_llama(seed: int = 0, **config):
    """A tiny randomly initialized Llama (vocab 64, hidden 32, 2 layers) in eval mode; ``config`` overrides fields."""
    import transformers

    cfg = transformers.LlamaConfig(
        **{
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32,
            **config,
        }
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_bert(seed: int = 0, num_labels: int = 3):
    """A tiny randomly initialized BERT classifier (no dropout) in eval mode."""
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(cfg).eval()


def _tiny_toy():
    from lorainit.experiments import toy

    return toy.ToyConfig(
        widths=(16, 32),
        rank=2,
        lrs=(1e-3, 1e-2, 5e-2),
        seeds=2,
        steps=6,
        teacher_width=40,
        teacher_rank=4,
        n_train=60,
        n_test=20,
        log_every=3,
        device="cpu",
    )


TINY_TOY = _tiny_toy()  # a teacher-student config that trains in a second
# TINY_TOY's LoRA rank, teacher width and data sizes as command-line flags (a test adds its widths, LRs, seeds, steps)
TOY_SIZE = [
    *("--rank", str(TINY_TOY.rank), "--teacher-width", str(TINY_TOY.teacher_width)),
    *("--n-train", str(TINY_TOY.n_train), "--n-test", str(TINY_TOY.n_test)),
]


def fake_width(width, loss, zb=None, diverged=()):
    """A width result whose final train loss per (init, seed, lr) is given; zb (per-coordinate) likewise."""
    runs = []
    for (init, seed, lr), value in loss.items():
        z = (zb or {}).get((init, seed, lr), 0.1) * math.sqrt(width)
        div = (init, seed, lr) in diverged
        runs.append(
            {
                "seed": seed,
                "init": init,
                "lr": lr,
                "diverged_step": 3 if div else None,
                "train_loss": [1.0, None if div else value],
                "test_loss": [1.0, None if div else value * 2],
                "za": [1.0, 2.0 + seed],
                "zb": [0.0, None if div else z],
            }
        )
    return {"width": width, "steps": [0, 10], "runs": runs}


def known_study():
    """Three widths whose optimal LRs are set: Init[A] >= Init[B] at 512, not at 1024."""
    cfg = dataclasses.replace(TINY_TOY, widths=(256, 512, 1024), lrs=(1e-3, 1e-2, 1e-1), seeds=1)
    widths = []
    for w, (best_a, best_b) in zip(cfg.widths, [(1e-2, 1e-2), (1e-2, 1e-3), (1e-3, 1e-2)]):
        loss = {
            (i, 0, lr): (0.1 if lr == best else 0.5)
            for i, best in (("init_a", best_a), ("init_b", best_b))
            for lr in cfg.lrs
        }
        widths.append(fake_width(w, loss))
    from lorainit.experiments import toy_study

    return {"config": toy_study.config_dict(cfg), "widths": widths, "analysis": toy_study.analyse(cfg, widths)}


def lorainit(*args, cwd=None):
    """``python -m lorainit ARGS`` as a real subprocess, as a user runs it (this tree's src/ first on the path)."""
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    return subprocess.run(
        [sys.executable, "-m", "lorainit", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def lorainit_here(*args, cwd=None) -> subprocess.CompletedProcess:
    """``lorainit ARGS`` through ``lorainit.cli.main`` in this process, as ``lorainit`` returns it (exit code, stdout,
    stderr): for the many bad-input cases, each of which would pay a new interpreter's imports (~2.5 s on 2 cores) for
    a check done before any work; the real process's exit code and one-line error are checked by ``lorainit``'s
    tests (tests/test_cli.py)."""
    import contextlib
    import io

    from lorainit import cli

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or here)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as e:  # (cliargs.fail, argparse)
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["lorainit", *args], code, out.getvalue(), err.getvalue())


class Tiny(nn.Module):
    """A one-layer LoRA-shaped model for the training loop's and the checkpoints' tests."""

    def __init__(self):
        super().__init__()
        self.lora_A = nn.Parameter(torch.full((2, 3), 0.1))
        self.lora_B = nn.Parameter(torch.zeros(3, 2))
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x):
        return x @ self.lora_A.T @ self.lora_B.T + self.frozen


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="runs in run_interpreted's child process")
"""Marks a test that runs only in the child pytest of ``run_interpreted`` (under Triton's interpreter)."""


def run_interpreted(path: str, passed: int) -> None:
    """Run the test file ``path`` in a child pytest under Triton's interpreter (TRITON_INTERPRET=1 must be set before
    Triton compiles a kernel) and check that its ``passed`` interpreted tests passed, none skipped but the parent."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert f"{passed} passed, 1 skipped in" in r.stdout, r.stdout[-2000:]
