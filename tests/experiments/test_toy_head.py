"""The toy's hidden layer: Triton kernels and batched matmuls compute one function and one gradient.

Without a GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1 must be set before Triton
compiles a kernel, so that check runs in a child process); on a GPU they run compiled, in process.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lorainit.experiments import toy_head

pytest.importorskip("triton")

SRC = str(Path(toy_head.__file__).resolve().parents[2])

# (S, M, N, n, r): ragged tiles in both N and n, rank 1, a rank past one 16-wide dot, one seed
SHAPES = [(2, 3, 70, 90, 3), (1, 2, 64, 64, 1), (2, 1, 33, 130, 17)]

CHECK = textwrap.dedent("""
    import json, sys, torch
    from lorainit.experiments import toy_head
    out = []
    for S, M, N, n, r in json.loads(sys.argv[1]):
        g = torch.Generator().manual_seed(N * n + r)
        K = S * M
        Z_A = torch.randn(K, N, r, generator=g, dtype=torch.float64)
        B = torch.randn(K, n, r, generator=g, dtype=torch.float64)
        P = torch.randn(S, N, n, generator=g, dtype=torch.float64)
        w = torch.randn(S, n, generator=g, dtype=torch.float64)
        up = torch.randn(K, N, generator=g, dtype=torch.float64)
        res = {}
        for name, fused, dtype in (("fused", True, torch.float32), ("bmm64", False, torch.float64)):
            z, b = (t.to(dtype).requires_grad_(True) for t in (Z_A, B))
            y = toy_head.head(z, b, P.to(dtype), w.to(dtype), fused=fused)
            gz, gb = torch.autograd.grad((y * up.to(dtype)).sum(), [z, b])
            res[name] = [t.double() for t in (y, gz, gb)]
        out.append([((a - e).abs().max() / e.abs().max()).item() for a, e in zip(res["fused"], res["bmm64"])])
    print(json.dumps(out))
""")


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="a GPU runs the compiled kernels (next test); older Triton "
    "interpreters (3.6) cannot run loops with runtime bounds",
)
def test_triton_kernels_equal_the_bmm_form_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(SHAPES)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for shape, (out, g_za, g_b) in zip(SHAPES, errors):
        # float32 kernels against the float64 bmm form: relative to the largest entry
        assert max(out, g_za, g_b) < 1e-5, (shape, out, g_za, g_b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_equal_the_bmm_form_on_the_gpu():
    for S, M, N, n, r in SHAPES + [(2, 8, 1000, 2048, 4)]:
        g = torch.Generator(device="cuda").manual_seed(0)
        K = S * M
        Z_A, B = torch.randn(K, N, r, generator=g, device="cuda"), torch.randn(K, n, r, generator=g, device="cuda")
        P, w = torch.randn(S, N, n, generator=g, device="cuda"), torch.randn(S, n, generator=g, device="cuda")
        up = torch.randn(K, N, generator=g, device="cuda")
        assert toy_head.fused_available(P)
        got, want = [], []
        for fused, dtype, acc in ((True, torch.float32, got), (False, torch.float64, want)):
            z, b = (t.to(dtype).requires_grad_(True) for t in (Z_A, B))
            y = toy_head.head(z, b, P.to(dtype), w.to(dtype), fused=fused)
            acc += [y, *torch.autograd.grad((y * up.to(dtype)).sum(), [z, b])]
        for a, e in zip(got, want):
            assert ((a.double() - e).abs().max() / e.abs().max()).item() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kernels_that_fail_or_disagree_fall_back_to_the_bmm_form_with_a_warning(monkeypatch):
    x = torch.zeros(1, device="cuda")
    assert toy_head._self_check(x.device)

    def broken(*a):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    for patch in (broken, lambda z, b, P, w: toy_head._HeadBmm.apply(z, b, P, w) + 1):
        monkeypatch.setattr(toy_head._HeadFused, "apply", patch)
        monkeypatch.setattr(toy_head, "_RUNS_HERE", {})
        with pytest.warns(UserWarning, match="do not run on cuda"):
            assert not toy_head.fused_available(x)
        assert not toy_head.fused_available(x)  # checked once per device


def test_fused_is_refused_without_triton(monkeypatch):
    monkeypatch.setattr(toy_head, "triton", None)
    x = torch.zeros(1, 2, 1)
    with pytest.raises(RuntimeError, match="needs Triton"):
        toy_head.head(x, torch.zeros(1, 3, 1), torch.zeros(1, 2, 3), torch.zeros(1, 3), fused=True)
    assert not toy_head.fused_available(x)
