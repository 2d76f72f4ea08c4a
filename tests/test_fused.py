"""The Triton kernel of lorainit.fused, run on the CPU by Triton's interpreter: dual_gemm is P Q + U V + C + bias,
and the fused layer's outputs and gradients are LoRA's (as lorainit.merged's). The interpreter is chosen when Triton
is imported, so the checks run in a child pytest with TRITON_INTERPRET=1 (``test_under_the_interpreter``)."""

import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
child = pytest.mark.skipif(not INTERPRETED, reason="runs in test_under_the_interpreter's child process")


@pytest.fixture(autouse=True)
def enabled(monkeypatch):
    """The fused layer switched on (it is opt-in: ``fused.ENABLED``)."""
    from lorainit import fused

    monkeypatch.setattr(fused, "ENABLED", True)


@pytest.mark.skipif(INTERPRETED, reason="the parent of the interpreted tests")
def test_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "18 passed, 1 skipped in" in r.stdout, r.stdout[-2000:]  # every child test ran (none skipped)


def _rand(*shape, g):
    return torch.randn(*shape, generator=g)


@child
@pytest.mark.parametrize("k2", [5, 70])  # one block of R, and R over several blocks (BLOCK_R is at most 64)
@pytest.mark.parametrize("m,k1", [(37, 23), (32, 48)])  # sizes no tile divides; whole tiles (loads without masks)
def test_dual_gemm_is_pq_plus_uv_plus_c_plus_bias(k2, m, k1):
    from lorainit import fused

    g = torch.Generator().manual_seed(k2)
    p = _rand(2, m, k1, g=g)  # (B, M, K1)
    q = _rand(19, k1, g=g).t()  # (K1, N): shared by the batch, a transposed view
    u, v = _rand(2, k2, m, g=g).transpose(1, 2), _rand(2, k2, 19, g=g)  # u a strided view
    c, bias = _rand(2, m, 19, g=g), _rand(19, g=g)
    want = p @ q + u @ v + c + bias
    torch.testing.assert_close(fused.dual_gemm(p, q, u, v, c, bias), want, rtol=1e-5, atol=1e-5)
    qb = _rand(2, k1, 19, g=g)  # (B, K1, N): one per batch
    torch.testing.assert_close(fused.dual_gemm(p, qb, None, None, None, None), p @ qb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.dual_gemm(p, q, None, None, c, None), p @ q + c, rtol=1e-5, atol=1e-5)


@child
@pytest.mark.parametrize("k1,k2", [(24, 16), (48, 80)])  # K1 past a whole tile, R over one and several blocks
@pytest.mark.parametrize("q_t", [True, False])  # Q = W^T (the forward's) or Q = W (the backward's)
def test_tma_kernel_is_pq_plus_uv_plus_c_plus_bias(k1, k2, q_t):
    """The descriptor kernel (zero-filled tiles past the edges: 20 columns, K1 and R past whole tiles; batches of
    whole row tiles) and the pointer kernel agree with torch on operands TMA can read (rows 16-byte aligned, last
    dimension contiguous, batches one after another)."""
    from lorainit import dual, fused

    g = torch.Generator().manual_seed(k1 + k2)
    p, u, v = _rand(2, 48, k1, g=g), _rand(2, 48, k2, g=g), _rand(2, k2, 20, g=g)
    q = _rand(20, k1, g=g).t() if q_t else _rand(k1, 20, g=g)  # (K1, N)
    c, bias = _rand(2, 48, 20, g=g), _rand(20, g=g)
    want = p @ q + u @ v + c + bias
    assert dual.tma_ok(p, q, u, v, c)
    for tma in (True, False):
        dual.TMA = tma
        try:
            assert dual.tma_ok(p, q, u, v, c) == tma
            torch.testing.assert_close(fused.dual_gemm(p, q, u, v, c, bias), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fused.dual_gemm(p, q, None, None, None, None), p @ q, rtol=1e-5, atol=1e-5)
        finally:
            dual.TMA = True
    v[1] = float("nan")  # batch 1's V (a diverged run's adapter) reaches no other batch's output
    y = fused.dual_gemm(p, q, u, v, c, bias)
    torch.testing.assert_close(y[0], want[0], rtol=1e-5, atol=1e-5)
    assert y[1].isnan().all()
    assert not dual.tma_ok(p, q, u[..., :12], v[:, :12], c)  # R not of whole 16-wide tiles: the pointer kernel
    assert not dual.tma_ok(p[:, :, 1:], q[1:], u, v, c)  # a row start off 16 bytes
    assert not dual.tma_ok(p[:, 1:], q, u[:, 1:], v, c[:, 1:])  # 47 rows a batch: a tile would cross batches
    assert not dual.tma_ok(p, q, u, v, c.transpose(0, 1).contiguous().transpose(0, 1))  # batches not in order


@child
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("used", [(0, 1, 2), (1, 2)])  # every member, and the first left unused
@pytest.mark.parametrize("tma", [True, False])  # widths whose rows TMA reads (16-byte multiples), or not
def test_fused_outputs_and_gradients_are_loras(bias, used, tma, monkeypatch):
    """merged.outputs takes the kernel here (float32 under the interpreter) and gives LoRA's values and gradients
    for every member (corrections, bias, an unused member); the same checks as tests/test_merged.py's."""
    from test_merged import _grads, _members, _reference

    from lorainit import dual, fused, merged

    ins, outs, ranks = (8, (8, 4, 12), (4, 4, 4)) if tma else (6, (5, 3, 4), (2, 3, 2))  # (R = 16 with A0)
    rows = 16 if tma else 4  # (a whole row tile per run under the interpreter)
    members = [m.float() for m in _members(ins=ins, outs=outs, ranks=ranks, bias=bias)]
    weight = torch.cat([m.base.weight for m in members])  # (sum out_i, in)
    b = torch.cat([m.base.bias for m in members]) if bias else None
    xs = torch.randn(3, rows, ins, requires_grad=True)  # (K, rows_k, in)
    weights = [torch.randn(rows, m.base.out_features) for m in members]  # a loss per member
    params = [p for m in members for p in (m.lora_A, m.lora_B)] + [xs]
    calls, paths, layouts = [], [], dual._layouts
    apply = fused.Fused.apply
    monkeypatch.setattr(fused.Fused, "apply", lambda *a: calls.append(1) or apply(*a))
    monkeypatch.setattr(dual, "_layouts", lambda *a: paths.append(layouts(*a)) or paths[-1])
    ys = merged.outputs(xs, weight, b, members)
    assert calls == [1]  # the kernel's path, not the bmm one
    sum((ys[i] * weights[i]).sum() for i in used).backward()
    took = {m is not None for m in paths}  # the forward's and the backward's products, by the kernel chosen
    assert len(paths) >= 2 and took == {tma}
    got = _grads(params)
    for p in params:
        p.grad = None
    ref = _reference(xs, members)
    sum((ref[i] * weights[i]).sum() for i in used).backward()
    for y, r in zip(ys, ref):
        torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    for a, e in zip(got, _grads(params)):  # (an unused member's A gets zeros, its B no gradient; autograd's neither)
        e = torch.zeros_like(a) if e is None and a is not None else e
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@child
def test_compiled_layer_traces_the_kernel_as_one_op_and_matches_eager():
    """Under torch.compile (aot_eager, fullgraph: no graph break) the fused layer gives eager's loss and gradients."""
    from test_merged import _members

    from lorainit import merged

    members = [m.float() for m in _members(bias=True)]
    weight = torch.cat([m.base.weight for m in members])
    b = torch.cat([m.base.bias for m in members])
    xs = torch.randn(3, 4, 6, requires_grad=True)
    params = [p for m in members for p in (m.lora_A, m.lora_B)] + [xs]

    def loss(xs):
        return sum(y.square().sum() for y in merged.outputs(xs, weight, b, members))

    got = []
    for f in (torch.compile(loss, backend="aot_eager", fullgraph=True), loss):
        f(xs).backward()
        got.append([p.grad.clone() for p in params])
        for p in params:
            p.grad = None
    for a, e in zip(*got):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)


@child
def test_switched_off_the_layer_takes_the_merged_bmm(monkeypatch):
    from test_merged import _members

    from lorainit import fused, merged

    monkeypatch.setattr(fused, "ENABLED", False)
    calls = []
    apply = fused.Fused.apply
    monkeypatch.setattr(fused.Fused, "apply", lambda *a: calls.append(1) or apply(*a))
    members = [m.float() for m in _members()]
    merged.outputs(torch.randn(3, 4, 6), torch.cat([m.base.weight for m in members]), None, members)
    assert calls == []
