"""Data statistics for data-dependent inits (lorainit.stats): grouping under a memory budget, base weights and
adapters switched off. (Gradients, activation statistics and HRP's preheat: tests/inits and tests/test_apply.py.)"""

import peft
import torch

from lorainit import stats


def test_budget_groups_are_consecutive_and_within_budget_a_large_one_alone():
    assert stats.budget_groups({"a": 2, "b": 2, "c": 5, "d": 1}, 4) == [["a", "b"], ["c"], ["d"]]
    assert stats.budget_groups({}, 4) == []


def test_base_weight_of_a_lora_layer_and_adapters_off_restores_the_base_output(tiny_llama):
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert stats.base_weight(layer) is layer.base_layer.weight
    ids = torch.randint(0, 64, (1, 5))
    with stats.adapters_off(model):
        off = model(ids).logits
    on = model(ids).logits
    with model.disable_adapter():
        base = model(ids).logits
    assert torch.equal(off, base) and not torch.allclose(on, base)


def _plain_preheat(model, layers, data, loss_fn, *, rank, steps, lr, seed):
    """The preheat as it was before it ran on the one loop (a plain AdamW loop): its factors must not move."""
    import itertools

    from lorainit import inits
    from lorainit.seeding import generator

    temp = {}
    for name, layer in layers.items():
        W = stats.base_weight(layer)
        f = inits.get("init_a")(W.detach().float(), rank, generator=generator("hrp-preheat", seed, name))
        temp[name] = (torch.nn.Parameter(f.A), torch.nn.Parameter(f.B))
    hooks = [
        stats.base_layer(layers[n]).register_forward_hook(
            lambda m, a, out, n=n: out + ((a[0].to(temp[n][0].dtype) @ temp[n][0].T) @ temp[n][1].T).to(out.dtype)
        )
        for n in layers
    ]
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([t for pair in temp.values() for t in pair], lr=lr, weight_decay=0.0)
    model.train()
    for batch in itertools.islice(itertools.cycle(data), steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        opt.step()
    for h in hooks:
        h.remove()
    return temp


def test_the_preheat_on_the_one_loop_gives_the_plain_loops_factors_bitwise_and_leaves_the_rng(tiny_llama):
    from lorainit import multi, starts

    g = torch.Generator().manual_seed(3)
    data = [{"input_ids": (ids := torch.randint(0, 64, (2, 12), generator=g)), "labels": ids} for _ in range(3)]
    loss = lambda m, b: m(**b).loss  # noqa: E731
    model = tiny_llama()
    layers = {starts.PEFT_PREFIX + n: m for n, m in multi.targets_of(model, ["q_proj", "v_proj", "down_proj"]).items()}
    rng = torch.get_rng_state()
    got = stats.preheat(model, layers, data, loss, rank=8, steps=7, lr=3e-2, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # (the loop seeds dropout per step inside a forked RNG)
    assert all(p.requires_grad for p in model.parameters())  # every parameter's requires_grad as it was
    model2 = tiny_llama()
    layers2 = {
        starts.PEFT_PREFIX + n: m for n, m in multi.targets_of(model2, ["q_proj", "v_proj", "down_proj"]).items()
    }
    want = _plain_preheat(model2, layers2, data, loss, rank=8, steps=7, lr=3e-2, seed=1)
    for n in layers:
        assert torch.equal(got[n].A, want[n][0].detach()) and torch.equal(got[n].B, want[n][1].detach())
        assert not torch.equal(got[n].B, torch.zeros_like(got[n].B))  # it trained
