"""The fused layer (lorainit.fused), its kernels run on the CPU by Triton's interpreter: its outputs and gradients
are LoRA's (as lorainit.merged's), by either kernel, compiled or not. The interpreter is chosen when Triton is
imported, so the checks run in a child pytest with TRITON_INTERPRET=1 (``test_under_the_interpreter``)."""

import pytest
import torch
from helpers import INTERPRETED, run_interpreted
from helpers import interpreted as child

triton = pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def enabled(monkeypatch):
    """The fused layer switched on everywhere (by default only where the layer asks: ``fused.ENABLED``)."""
    from lorainit import fused

    monkeypatch.setattr(fused, "ENABLED", True)


@pytest.fixture
def kernel_calls(monkeypatch) -> list:
    """One entry per call of the fused layer (``fused.Fused.apply``): the kernel's path, not the merged bmm."""
    from lorainit import fused

    calls, apply = [], fused.Fused.apply
    monkeypatch.setattr(fused.Fused, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


@pytest.mark.skipif(INTERPRETED, reason="the parent of the interpreted tests")
def test_under_the_interpreter():
    run_interpreted(__file__, passed=20)


@child
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("used", [(0, 1, 2), (1, 2)])  # every member, and the first left unused
@pytest.mark.parametrize("tma", [True, False])  # widths whose rows TMA reads (16-byte multiples), or not
@pytest.mark.parametrize("chained", [True, False])  # xa and each dL/dxa_i inside the kernel (dual.chain), or bmms
def test_fused_outputs_and_gradients_are_loras(bias, used, tma, chained, monkeypatch, kernel_calls):
    """merged.outputs takes the kernel here (float32 under the interpreter) and gives LoRA's values and gradients
    for every member (corrections, bias, an unused member); the same checks as tests/test_merged.py's."""
    from test_merged import _grads, _members, _reference

    from lorainit import dual, fused, merged

    monkeypatch.setattr(fused, "CHAIN_FORWARD", chained)
    monkeypatch.setattr(fused, "CHAIN_BACKWARD", chained)

    ins, outs, ranks = (8, (8, 4, 12), (4, 4, 4)) if tma else (6, (5, 3, 4), (2, 3, 2))  # (R = 16 with A0)
    rows = 16 if tma else 4  # (a whole row tile per run under the interpreter)
    members = [m.float() for m in _members(ins=ins, outs=outs, ranks=ranks, bias=bias)]
    weight = torch.cat([m.base.weight for m in members])  # (sum out_i, in)
    b = torch.cat([m.base.bias for m in members]) if bias else None
    g = torch.Generator().manual_seed(0)  # (drawn alike on every run: an unseeded draw failed 1e-5 once, at 1.1e-5)
    xs = torch.randn(3, rows, ins, generator=g).requires_grad_()  # (K, rows_k, in)
    weights = [torch.randn(rows, m.base.out_features, generator=g) for m in members]  # a loss per member
    params = [p for m in members for p in (m.lora_A, m.lora_B)] + [xs]
    paths, layouts = [], dual._layouts  # (kind, layouts or None) per product: chain's are given an E
    monkeypatch.setattr(
        dual, "_layouts", lambda *a: paths.append(("chain" if len(a) > 5 else "gemm", layouts(*a))) or paths[-1][1]
    )
    ys = merged.outputs(xs, weight, b, members)
    assert kernel_calls == [1]  # the kernel's path, not the bmm one
    sum((ys[i] * weights[i]).sum() for i in used).backward()
    took = {m is not None for _, m in paths}  # the forward's and the backward's products, by the kernel chosen
    assert len(paths) >= 2 and took == {tma}
    assert {kind for kind, _ in paths} == ({"chain"} if chained else {"gemm"})
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
def test_switched_off_the_layer_takes_the_merged_bmm(monkeypatch, kernel_calls):
    from test_merged import _members

    from lorainit import fused, merged

    monkeypatch.setattr(fused, "ENABLED", False)
    members = [m.float() for m in _members()]
    merged.outputs(torch.randn(3, 4, 6), torch.cat([m.base.weight for m in members]), None, members)
    assert kernel_calls == []


@child
def test_by_default_the_kernel_runs_where_the_layer_asks(monkeypatch, kernel_calls):
    """fused.ENABLED None (the default): the kernel where the layers' ``kernel`` is set (multi.compile_blocks, under
    CUDA graphs), the dtype is a half one and the runs' rows reach MIN_ROWS; False: never; True: in any dtype and
    size, asked or not."""
    from test_merged import _members

    from lorainit import fused, merged

    monkeypatch.setattr(fused, "ENABLED", None)
    monkeypatch.setattr(fused, "MIN_ROWS", 12)  # (32768 on the GPU)
    x = torch.zeros(3, 4, 6)  # (K, rows_k, in): 12 rows
    assert fused.usable(x, torch.bfloat16, True) and fused.usable(x, torch.float16, True)
    assert not fused.usable(x, torch.float32, True) and not fused.usable(x, torch.bfloat16, False)
    assert not fused.usable(x[:, :3], torch.bfloat16, True)  # 9 rows
    members = [m.half() for m in _members()]
    args = (torch.randn(3, 4, 6).half(), torch.cat([m.base.weight for m in members]), None, members)
    merged.outputs(*args)
    assert kernel_calls == []  # not asked
    for m in members:
        m.kernel = True
    ys = merged.outputs(*args)
    assert kernel_calls == [1] and all(y.dtype == torch.float16 for y in ys)
    monkeypatch.setattr(fused, "ENABLED", False)
    merged.outputs(*args)
    assert kernel_calls == [1]  # switched off
    monkeypatch.setattr(fused, "ENABLED", True)
    assert fused.usable(x, torch.float32, False) and fused.usable(x[:, :1], torch.float32, False)


def test_chained_where_the_output_is_narrow_and_r_fits_a_tile():
    """fused.chains: every column tile computes U again, so only outputs of at most CHAIN_MAX_N columns chain (and R
    must fit the kernel's one U tile, dual.CHAIN_R)."""
    from lorainit import dual, fused

    assert fused.chains(576, 16) and fused.chains(fused.CHAIN_MAX_N, dual.CHAIN_R)
    assert not fused.chains(fused.CHAIN_MAX_N + 1, 16) and not fused.chains(576, dual.CHAIN_R + 1)
    assert not fused.chains(960, 48) and not fused.chains(3072, 32) and not fused.chains(1536, 16)  # (measured)
