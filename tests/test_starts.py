"""Starts of several schemes at one seed: one data pass per needed statistic, each scheme's factors as drawn alone."""

import pytest
import torch

from lorainit import multi, starts

TARGETS = ["q_proj", "v_proj", "down_proj"]


def batches(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": (ids := torch.randint(0, 64, (2, 12), generator=g)), "labels": ids} for _ in range(n)]


def layers_of(model):
    return {starts.PEFT_PREFIX + n: m for n, m in multi.targets_of(model, TARGETS).items()}


def drawn(model, schemes, counted=None):
    layers = layers_of(model)
    loss = counted or (lambda m, b: m(**b).loss)
    out = {}
    for s, n, f in starts.draw_all(
        model,
        layers,
        schemes,
        seed=3,
        ranks={n: 4 for n in layers},
        scalings={n: 2.0 for n in layers},
        data=batches(),
        loss_fn=loss,
        hyperparameters={"hrp": {"preheat_steps": 3}},
    ):
        out.setdefault(s, {})[n] = f
    return out


def test_schemes_needing_one_statistic_share_its_data_pass(tiny_llama):
    model = tiny_llama()
    calls = []
    together = drawn(model, ["lora_ga", "lora_one", "init_a"], lambda m, b: calls.append(1) or m(**b).loss)
    assert len(calls) == 2  # one gradient pass over the 2 batches, for both gradient schemes
    for scheme in ("lora_ga", "lora_one", "init_a"):
        alone = drawn(tiny_llama(), [scheme])[scheme]
        assert together[scheme].keys() == alone.keys() == layers_of(model).keys()
        for n, f in alone.items():
            torch.testing.assert_close(together[scheme][n].A, f.A)
            torch.testing.assert_close(together[scheme][n].B, f.B)


def test_the_pass_leaves_the_model_as_it_was(tiny_llama):
    model = tiny_llama()
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    drawn(model, ["lora_ga", "eva", "hrp", "pissa"])
    assert all(torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] for n, p in model.named_parameters())
    assert not model.training and not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_a_seed_gives_the_same_start_and_another_seed_another(tiny_llama):
    layers = layers_of(tiny_llama())
    args = dict(ranks={n: 4 for n in layers}, scalings={n: 2.0 for n in layers})
    a = dict((n, f) for _, n, f in starts.draw_all(None, layers, ["init_a"], seed=1, **args))
    b = dict((n, f) for _, n, f in starts.draw_all(None, layers, ["init_a"], seed=1, **args))
    c = dict((n, f) for _, n, f in starts.draw_all(None, layers, ["init_a"], seed=2, **args))
    assert all(torch.equal(a[n].A, b[n].A) and not torch.equal(a[n].A, c[n].A) for n in layers)


def test_refusals(tiny_llama):
    layers = layers_of(tiny_llama())
    args = dict(seed=0, ranks={n: 4 for n in layers}, scalings={n: 2.0 for n in layers})
    with pytest.raises(ValueError, match="lora_one needs training data"):
        list(starts.draw_all(tiny_llama(), layers, ["lora_one"], **args))
    with pytest.raises(ValueError, match="oracle"):
        list(starts.draw_all(tiny_llama(), layers, ["target"], **args))


def test_options_are_the_schemes_keywords_and_its_passes_settings():
    assert starts.options("init_a") == {"std": None, "distribution": "normal"}  # (no generator: the draw seeds it)
    hrp = starts.options("hrp")
    assert list(hrp) == ["a_scale", "row_norm", "seed_b", "scaling", "preheat_rank", "preheat_steps", "preheat_lr"]
    assert hrp["preheat_steps"] == 50 and hrp["preheat_rank"] is None and hrp["a_scale"] == "unit"
    assert "grad" not in starts.options("lora_ga") and "activations" not in starts.options("eva")
    own, passes = starts.split_options("hrp", {"a_scale": "sqrt_s", "preheat_rank": 16})
    assert own == {"a_scale": "sqrt_s"} and passes == {"preheat_rank": 16}
    with pytest.raises(ValueError, match="init scheme 'init_a' takes no option 'preheat_steps' \\(its options: "):
        starts.split_options("init_a", {"preheat_steps": 3})


def test_the_preheat_settings_reach_the_preheat(tiny_llama, monkeypatch):
    seen = []
    real = starts.stats.preheat
    monkeypatch.setattr(starts.stats, "preheat", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    model = tiny_llama()
    layers = layers_of(model)
    args = dict(seed=0, ranks={n: 4 for n in layers}, scalings={n: 2.0 for n in layers}, data=batches())
    list(
        starts.draw_all(
            model, layers, ["hrp"], **args, hyperparameters={"hrp": {"preheat_steps": 2, "preheat_lr": 0.5}}
        )
    )
    list(starts.draw_all(model, layers, ["hrp"], **args))
    assert [(k["rank"], k["steps"], k["lr"]) for k in seen] == [
        (16, 2, 0.5),
        (16, 50, 1e-3),
    ]  # rank None: 4 x the LoRA rank
    with pytest.raises(ValueError, match="takes no option 'niter'"):
        list(starts.draw_all(model, layers, ["hrp"], **args, hyperparameters={"hrp": {"niter": 2}}))
