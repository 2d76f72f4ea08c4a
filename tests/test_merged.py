"""The one-GEMM LoRA layer (lorainit.merged): its outputs and gradients are those of y_i = x W_i^T + b_i +
s_i (x A_i^T) B_i^T for every member, with and without a frozen correction, a member left unused, under autocast."""

import pytest
import torch
from torch import nn

from lorainit import merged, multi
from lorainit.inits import Factors


def _members(K=3, ins=6, outs=(5, 3, 4), ranks=(2, 3, 2), corrected=(False, True, False), bias=True, seed=0):
    """Members reading one input: different widths, ranks and scalings; member 1 carries a frozen correction."""
    g = torch.Generator().manual_seed(seed)
    members = []
    for i, (o, r, c) in enumerate(zip(outs, ranks, corrected)):
        base = nn.Linear(ins, o, bias=bias).double().requires_grad_(False)
        with torch.no_grad():
            base.weight.copy_(torch.randn(o, ins, generator=g, dtype=torch.float64))
        A = [torch.randn(r, ins, generator=g, dtype=torch.float64) for _ in range(K)]
        B = [torch.randn(o, r, generator=g, dtype=torch.float64) for _ in range(K)]
        corr = [Factors(A=torch.randn(r, ins, generator=g), B=torch.randn(o, r, generator=g)) for _ in range(K)]
        m = multi.MultiLoRALinear(base, A, B, scaling=0.5 + i, corrections=corr if c else None).double()
        members.append(m)
    return members


def _reference(xs, members):
    """y_i = x W_i^T + b_i + s_i (x A_i'^T) B_i'^T per run, by autograd's own ops (A' = [A; A0], B' = [B, -B0])."""
    out = []
    for m in members:
        y = nn.functional.linear(xs, m.base.weight, m.base.bias)  # (K, rows, out_i)
        xa = torch.bmm(xs, m.adapter_A(xs.dtype).transpose(1, 2))
        out.append(y + m.scaling * torch.bmm(xa, m.adapter_B(xs.dtype).transpose(1, 2)))
    return out


def _grads(tensors):
    return [None if t.grad is None else t.grad.clone() for t in tensors]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("used", [(0, 1, 2), (0, 2)])
def test_outputs_and_gradients_are_loras_for_every_member(bias, used):
    members = _members(bias=bias)
    weight = torch.cat([m.base.weight for m in members])  # (sum out_i, in)
    b = torch.cat([m.base.bias for m in members]) if bias else None
    xs = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)  # (K, rows_k, in)
    weights = [torch.randn(4, m.base.out_features, dtype=torch.float64) for m in members]  # a loss per member
    params = [p for m in members for p in (m.lora_A, m.lora_B)] + [xs]

    def loss(ys):
        return sum((ys[i] * weights[i]).sum() for i in used)

    ys = merged.outputs(xs, weight, b, members)
    assert [y.shape for y in ys] == [(3, 4, m.base.out_features) for m in members]
    loss(ys).backward()
    got = _grads(params)
    for p in params:
        p.grad = None
    want_ys = _reference(xs, members)
    loss(want_ys).backward()
    want = _grads(params)
    for y, w in zip(ys, want_ys):
        torch.testing.assert_close(y, w, rtol=1e-12, atol=1e-12)
    for gt, w in zip(got, want):  # (an unused member's A gets zeros, its B no gradient; autograd's gives neither)
        w = torch.zeros_like(gt) if w is None and gt is not None else w
        assert (gt is None) == (w is None)
        if gt is not None:
            torch.testing.assert_close(gt, w, rtol=1e-10, atol=1e-10)


def test_an_input_that_needs_no_gradient_gets_none_and_the_adapters_still_theirs():
    members = _members()
    xs = torch.randn(3, 4, 6, dtype=torch.float64)  # (the first layer's input: the frozen embedding's output)
    ys = merged.outputs(xs, torch.cat([m.base.weight for m in members]), None, members)
    sum(y.square().sum() for y in ys).backward()
    got = [(m.lora_A.grad.clone(), m.lora_B.grad.clone()) for m in members]
    for m in members:
        m.lora_A.grad = m.lora_B.grad = None
        m.base.bias = None
    sum(y.square().sum() for y in _reference(xs, members)).backward()
    for (ga, gb), m in zip(got, members):
        torch.testing.assert_close(ga, m.lora_A.grad)
        torch.testing.assert_close(gb, m.lora_B.grad)


def test_under_autocast_the_output_is_in_autocasts_dtype_and_close_to_fp32():
    members = [m.float() for m in _members(corrected=(False, False, False))]
    for m in members:
        m.base.float()
    weight = torch.cat([m.base.weight for m in members])
    xs = torch.randn(3, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert merged.compute_dtype(xs, weight) == torch.bfloat16
        ys = merged.outputs(xs, weight, None, members)
    assert merged.compute_dtype(xs, weight) == torch.float32
    for y, m in zip(ys, members):
        assert y.dtype == torch.bfloat16
        m.base.bias = None
    for y, w in zip(ys, _reference(xs, members)):
        torch.testing.assert_close(y.float(), w, rtol=2e-2, atol=2e-2 * w.abs().max().item())


def test_block_diagonal_puts_each_block_on_the_diagonal_and_zeros_elsewhere():
    blocks = (torch.ones(2, 1, 3), 2 * torch.ones(2, 2, 1))
    d = merged._block_diagonal(blocks)
    want = torch.tensor([[1.0, 1, 1, 0], [0, 0, 0, 2], [0, 0, 0, 2]]).expand(2, -1, -1)
    assert torch.equal(d, want)


def test_the_backward_concatenates_no_output_gradients(monkeypatch):
    """The members' gradients g_i reach x and xa one GEMM each (no cat of (K, rows, sum out_i), which inductor fused
    into the SiLU backward as masked loads; lorainit.siblings), and dB only as the diagonal blocks (r_i x out_i)."""
    members = _members(outs=(5, 3, 4))
    xs = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    ys = merged.outputs(xs, torch.cat([m.base.weight for m in members]), None, members)
    loss = sum(y.square().sum() for y in ys)
    joined = []

    class Recording:  # torch as merged sees it, its cat recorded (torch itself untouched: torch.compile's tables
        def __getattr__(self, name):  # of torch's functions, built on first use, must not see a patched cat)
            return getattr(torch, name)

        def cat(self, ts, *a, **k):
            joined.append([tuple(t.shape) for t in ts])
            return torch.cat(ts, *a, **k)

    monkeypatch.setattr(merged, "torch", Recording())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    monkeypatch.undo()
    assert joined  # (the premise: the backward's concatenations are seen: weights and the small d(xa) parts)
    grads = {(3, 4, o) for o in (5, 3, 4)}
    assert not [shapes for shapes in joined if grads & set(shapes)], joined
    gemms = [s for e in prof.events() if e.name == "aten::bmm" for s in e.input_shapes]
    assert [3, 4, 5] in gemms and [3, 4, 12] not in gemms  # each g_i in a GEMM; none over the whole output's gradient


@pytest.mark.parametrize("shape", [(6, 4), (6, 2, 4), (6, 2, 3, 4)])
def test_by_run_gives_run_ks_rows_as_views_and_by_batch_undoes_it(shape):
    """K = 3 runs' micro-batches stacked on dimension 0 (2 each): run k's rows are rows 2k, 2k + 1 of the stack,
    in order, the same as one reshape gives; both directions are views of a contiguous tensor (no copy)."""
    x = torch.arange(torch.Size(shape).numel(), dtype=torch.float64).view(shape)  # (K b, ..., d)
    runs = merged.by_run(x, 3)  # (K, rows_k, d)
    assert runs.shape == (3, x[:2].numel() // shape[-1], shape[-1])
    for k in range(3):
        torch.testing.assert_close(runs[k], x[2 * k : 2 * k + 2].reshape(-1, shape[-1]), rtol=0, atol=0)
    storage = x.untyped_storage().data_ptr()
    assert runs.untyped_storage().data_ptr() == storage
    back = merged.by_batch(runs, x.shape[:-1])
    assert back.shape == x.shape and back.untyped_storage().data_ptr() == storage
    torch.testing.assert_close(back, x, rtol=0, atol=0)
    wide = torch.cat([runs, runs], -1)[..., 1:5]  # an output part with a wider row stride (a sibling's split)
    assert merged.by_batch(wide, x.shape[:-1]).untyped_storage().data_ptr() == wide.untyped_storage().data_ptr()
