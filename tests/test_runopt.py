"""One AdamW for K runs (lorainit.runopt) == torch.optim.AdamW on each run alone; gradients land in its buffers."""
import pytest
import torch

from lorainit.runopt import RunAdamW


def losses_of(stacked, per_run_heads, x):
    """A toy loss per run k: a function of run k's slice of each stacked tensor and of its own head tensor."""
    W1, W2 = stacked
    return [((x @ W1[k].T).tanh() @ W2[k].T).pow(2).mean() + (per_run_heads[k] * x[:, :3]).sum().pow(2) for k in range(W1.shape[0])]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_equals_torch_adamw_run_by_run(float64, weight_decay):
    K, g = 3, torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(K, 5, 4, generator=g), torch.randn(K, 2, 5, generator=g)
    heads = [torch.randn(3, generator=g) for _ in range(K)]
    lrs, ratio = [1e-3, 3e-2, 1e-1], 4.0
    ours = [torch.nn.Parameter(W1.clone()), torch.nn.Parameter(W2.clone())]
    our_heads = [torch.nn.Parameter(h.clone()) for h in heads]
    opt = RunAdamW({"a": [ours[0]], "b": [ours[1]], "head": [our_heads]}, {"a": lrs, "b": [lr * ratio for lr in lrs], "head": lrs},
                   betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    theirs = [[torch.nn.Parameter(W1[k].clone()), torch.nn.Parameter(W2[k].clone()), torch.nn.Parameter(heads[k].clone())] for k in range(K)]
    torch_opts = [torch.optim.AdamW([{"params": [t[0], t[2]], "lr": lrs[k]}, {"params": [t[1]], "lr": lrs[k] * ratio}],
                                    betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay) for k, t in enumerate(theirs)]
    for step in range(6):
        x = torch.randn(7, 4, generator=g)
        factor = 1.0 / (step + 1)  # a schedule: each group's lr = base_lr x factor
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        opt.zero_grad()
        sum(losses_of(ours, our_heads, x)).backward()
        opt.step()
        for k, (t, o) in enumerate(zip(theirs, torch_opts)):
            for group in o.param_groups:
                group["lr"] = (lrs[k] * (ratio if group["params"][0] is t[1] else 1.0)) * factor
            o.zero_grad()
            losses_of([t[0][None].expand(K, -1, -1), t[1][None].expand(K, -1, -1)], [t[2]] * K, x)[0].backward()
            o.step()
    for k, t in enumerate(theirs):
        torch.testing.assert_close(ours[0][k], t[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours[1][k], t[1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(our_heads[k], t[2], rtol=1e-10, atol=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[0] / 6)


def test_parameters_and_gradients_live_in_the_buffers_and_the_state_round_trips():
    K = 2
    A = torch.nn.Parameter(torch.randn(K, 3, 4))
    before = A.detach().clone()
    opt = RunAdamW({"a": [A]}, {"a": [1e-2, 1e-1]})
    assert torch.equal(A, before) and A.data_ptr() == opt.buffers["a"]["param"].data_ptr()
    (A * torch.arange(K)[:, None, None]).sum().backward()  # run 0's gradient is zero
    assert torch.equal(opt.buffers["a"]["grad"][:12], torch.zeros(12)) and torch.equal(opt.buffers["a"]["grad"][12:], torch.ones(12))
    opt.step()
    assert torch.equal(A[0], before[0]) and not torch.equal(A[1], before[1])  # a zero gradient moves nothing at step 1
    saved = opt.state_tensors()
    other = RunAdamW({"a": [torch.nn.Parameter(torch.zeros(K, 3, 4))]}, {"a": [1e-2, 1e-1]})
    other.load_state_tensors(saved)
    assert other.t == 1 and torch.equal(other.buffers["a"]["param"], opt.buffers["a"]["param"])
    with pytest.raises(ValueError, match="resume with the same runs"):
        RunAdamW({"a": [torch.nn.Parameter(torch.zeros(K, 3, 5))]}, {"a": [1e-2, 1e-1]}).load_state_tensors(saved)
