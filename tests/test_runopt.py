"""One AdamW for K runs (lorainit.runopt) == torch.optim.AdamW on each run alone; gradients land in its buffers."""

import pytest
import torch

from lorainit.runopt import RunAdamW


def losses_of(stacked, per_run_heads, x):
    """A toy loss per run k: a function of run k's slice of each stacked tensor and of its own head tensor."""
    W1, W2 = stacked
    return [
        ((x @ W1[k].T).tanh() @ W2[k].T).pow(2).mean() + (per_run_heads[k] * x[:, :3]).sum().pow(2)
        for k in range(W1.shape[0])
    ]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_equals_torch_adamw_run_by_run(float64, weight_decay):
    K, g = 3, torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(K, 5, 4, generator=g), torch.randn(K, 2, 5, generator=g)
    heads = [torch.randn(3, generator=g) for _ in range(K)]
    lrs, ratio = [1e-3, 3e-2, 1e-1], 4.0
    ours = [torch.nn.Parameter(W1.clone()), torch.nn.Parameter(W2.clone())]
    our_heads = [torch.nn.Parameter(h.clone()) for h in heads]
    opt = RunAdamW(
        {"a": [ours[0]], "b": [ours[1]], "head": [our_heads]},
        {"a": lrs, "b": [lr * ratio for lr in lrs], "head": lrs},
        betas=(0.9, 0.99),
        eps=1e-6,
        weight_decay=weight_decay,
    )
    theirs = [
        [torch.nn.Parameter(W1[k].clone()), torch.nn.Parameter(W2[k].clone()), torch.nn.Parameter(heads[k].clone())]
        for k in range(K)
    ]
    torch_opts = [
        torch.optim.AdamW(
            [{"params": [t[0], t[2]], "lr": lrs[k]}, {"params": [t[1]], "lr": lrs[k] * ratio}],
            betas=(0.9, 0.99),
            eps=1e-6,
            weight_decay=weight_decay,
        )
        for k, t in enumerate(theirs)
    ]
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
    assert torch.equal(opt.buffers["a"]["grad"][:12], torch.zeros(12)) and torch.equal(
        opt.buffers["a"]["grad"][12:], torch.ones(12)
    )
    opt.step()
    assert torch.equal(A[0], before[0]) and not torch.equal(A[1], before[1])  # a zero gradient moves nothing at step 1
    saved = opt.state_tensors()
    other = RunAdamW({"a": [torch.nn.Parameter(torch.zeros(K, 3, 4))]}, {"a": [1e-2, 1e-1]})
    other.load_state_tensors(saved)
    assert other.t == 1 and torch.equal(other.buffers["a"]["param"], opt.buffers["a"]["param"])
    with pytest.raises(ValueError, match="resume with the same runs"):
        RunAdamW({"a": [torch.nn.Parameter(torch.zeros(K, 3, 5))]}, {"a": [1e-2, 1e-1]}).load_state_tensors(saved)


def _bucketed_worker(rank, world, init_file, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layers = [torch.nn.Parameter(torch.randn(2, 3, 5)) for _ in range(4)]  # K = 2 runs, 4 'layers'
    head = [torch.nn.Parameter(torch.randn(3)) for _ in range(2)]
    opt = RunAdamW({"a": layers, "head": [head]}, {"a": [1e-2, 1e-1], "head": [1e-2, 1e-1]})
    sync = opt.gradient_sync(world, bucket_mb=2 * 3 * 5 * 4 / 2**20)  # one layer a bucket: 4 + 1 buckets
    assert len(sync.buckets) == 5
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(rank))  # each process its own data
    for micro in range(2):  # gradient accumulation: the all-reduce runs in the last micro-batch's backward only
        if micro == 1:
            sync.arm()
        loss = sum((x @ p[k].T).tanh().sum() * (i + 1) for i, p in enumerate(layers) for k in range(2)) + sum(
            h.sum() ** 2 for h in head
        )
        loss.backward()
    sync.finish()
    torch.save({k: b["grad"].clone() for k, b in opt.buffers.items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_bucketed_all_reduce_averages_the_gradients_over_processes(tmp_path):
    torch.multiprocessing.spawn(_bucketed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k])  # every process ends with the same (averaged) gradient
    torch.manual_seed(0)
    layers = [torch.randn(2, 3, 5) for _ in range(4)]
    head = [torch.randn(3) for _ in range(2)]
    want = []
    for rank in range(2):
        ps = [p.clone().requires_grad_() for p in layers]
        x = torch.randn(7, 5, generator=torch.Generator().manual_seed(rank))
        for _ in range(2):
            sum((x @ p[k].T).tanh().sum() * (i + 1) for i, p in enumerate(ps) for k in range(2)).backward()
        want.append(torch.cat([p.grad.reshape(-1) for p in ps]))
    torch.testing.assert_close(a["a"], (want[0] + want[1]) / 2)
    # d/dh (sum h)^2 = 2 sum(h) in every element, in both micro-batches, the same on both processes
    torch.testing.assert_close(a["head"], torch.cat([4 * h.sum() * torch.ones(3) for h in head]))
