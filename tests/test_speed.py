"""The single-run fast path's pieces (CPU): uncompiled evaluation, LoRA inputs under autocast, block lookup, AdamW."""

import pytest
import torch
from helpers import tiny_llama

from lorainit import apply, speed
from lorainit.experiments import finetune


def test_eager_runs_a_compiled_module_without_compiling():
    graphs = []

    def backend(gm, example_inputs):  # counts compilations, runs the captured graph as is
        graphs.append(gm)
        return gm.forward

    f = torch.compile(lambda x: torch.sin(x) + 1, backend=backend)
    x = torch.randn(3)
    with speed.eager():
        torch.testing.assert_close(f(x), torch.sin(x) + 1)
    assert graphs == []
    f(x)
    assert len(graphs) == 1


def test_autocast_lora_keeps_bf16_inputs_and_the_output_under_autocast():
    model = apply.apply(tiny_llama(), "gaussian", rank=4, targets=["q_proj", "down_proj"], seed=0).model
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits.float()
        assert speed.autocast_lora(model) == 4  # 2 blocks x 2 targets
        seen = []
        layer = apply.lora_layers(model)["base_model.model.model.layers.0.mlp.down_proj"]
        h = layer.lora_A["default"].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
        after = model(input_ids=ids).logits.float()
        h.remove()
    assert seen == [torch.bfloat16]  # no fp32 copy of the input on its way into lora_A
    torch.testing.assert_close(after, before, rtol=0.05, atol=0.05)  # the same model at bf16 precision


def test_blocks_finds_the_decoder_layers_and_refuses_a_model_without_any():
    model = tiny_llama()
    assert speed.blocks(model) is model.model.layers
    assert speed.blocks(apply.apply(model, "init_a", rank=2).model) is model.model.layers
    with pytest.raises(ValueError, match="no list of identical blocks"):
        speed.blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_adamw_is_fused_only_when_every_tensor_is_on_a_gpu():
    p = torch.nn.Parameter(torch.randn(3))
    assert not speed.adamw([{"params": [p]}], lr=1e-3).defaults["fused"]


@pytest.mark.parametrize(
    "mode,steps,device,kind,want",
    [
        ("auto", 199, "cuda", "lm", False),
        ("auto", 200, "cuda", "lm", True),
        ("auto", 10**4, "cuda", "classify", False),  # padded lengths vary by batch: eager
        ("auto", 10**4, "cuda", "choice", False),
        ("on", 10, "cuda", "classify", True),
        ("off", 10**4, "cuda", "lm", False),
        ("on", 10**4, "cpu", "lm", False),
    ],
)
def test_compiles_follows_the_mode_the_steps_the_task_and_the_device(mode, steps, device, kind, want):
    cfg = finetune.FinetuneConfig(compile=mode, steps=steps)
    assert finetune.compiles(cfg, torch.device(device), kind) is want
    assert finetune.COMPILE_FROM == 200


@pytest.mark.parametrize("dynamic, grows", [(True, False), (False, True)])
def test_blocks_compiled_with_dynamic_shapes_keep_one_graph_for_every_padded_length(dynamic, grows):
    """K=2 runs on MiniLM (classification): with dynamic shapes a batch padded to a new length reuses the graph; with
    static shapes each length compiles again (dynamo only: backend 'eager')."""
    from torch._dynamo.utils import counters

    from lorainit import data, models, multi, runloss
    from lorainit.inits import Factors

    task = data.load("nli")
    model, _, _, _ = models.load("minilm-l6", num_labels=len(task.labels))
    model.requires_grad_(False)
    runs = [multi.Run("init_a", 1e-3, seed=k) for k in range(2)]
    linears = multi.targets_of(model, ["query"])
    start = {
        "base_model.model." + n: Factors(A=torch.randn(4, m.in_features) / 100, B=torch.zeros(m.out_features, 4))
        for n, m in linears.items()
    }
    heads = [models.seeded_head(model, "classifier", r.seed) for r in runs]
    multi.attach(model, runs, [start, start], scaling=1.0, targets=["query"], head="classifier", heads=heads)
    torch._dynamo.reset()
    counters.clear()
    assert speed.compile_blocks(model, dynamic=dynamic, backend="eager") == 6
    loss_fn, graphs = runloss.RunLosses(2, "classify"), []
    for T in (17, 23, 31):
        ids = torch.randint(0, 1000, (4, T), generator=torch.Generator().manual_seed(T))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 0])}
        loss_fn(model, batch).backward()
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] > 0 and (graphs[-1] > graphs[0]) is grows


def test_attention_leaves_out_cudnn_for_padded_batches_only():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with speed.attention(padded=True):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with speed.attention(padded=False):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_keep_graphs_lets_a_later_batch_of_the_same_shape_reuse_the_compiled_blocks():
    """Two batches of K=2 runs attached to one tiny Llama in turn (a sweep worker's): the second compiles no graph
    and computes its own adapters' and corrections' function, not the first's (dynamo only: backend 'eager')."""
    from torch._dynamo.utils import counters

    from lorainit import multi
    from lorainit.inits import Factors
    from lorainit.starts import PEFT_PREFIX

    model, targets = tiny_llama(), ["q_proj", "k_proj", "down_proj"]  # (q and k: siblings)
    model.requires_grad_(False)
    ids = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))
    speed._kept.clear()
    torch._dynamo.reset()
    counters.clear()

    def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        g = torch.Generator().manual_seed(seed)
        start = {
            PEFT_PREFIX + n: Factors(
                A=torch.randn(4, m.in_features, generator=g), B=torch.randn(m.out_features, 4, generator=g)
            )
            for n, m in multi.targets_of(model, targets).items()
        }
        runs = [multi.Run("init_a", 1e-3, seed=k) for k in range(2)]
        layers = multi.attach(model, runs, [start, start], scaling=2.0, targets=targets, corrected=[False, True])
        for m in layers.values():  # run 1 carries its start as a frozen correction and has moved from it
            m.lora_B.data[1] += 0.5
        try:
            assert speed.keep_graphs(("tiny", 2)) is True
            speed.compile_blocks(model, backend="eager")
            compiled = model(input_ids=ids).logits
            with speed.eager():
                plain = model(input_ids=ids).logits
        finally:
            multi.detach(model)
        return compiled, plain, counters["stats"]["unique_graphs"]

    c1, p1, graphs1 = batch(1)
    c2, p2, graphs2 = batch(2)
    torch.testing.assert_close(c1, p1)
    torch.testing.assert_close(c2, p2)  # the kept graph runs the second batch's adapters
    assert not torch.allclose(p1, p2)
    assert graphs1 > 0 and graphs2 == graphs1
    for k in range(3, 3 + speed.KEPT_SHAPES - 1):
        assert speed.keep_graphs(("tiny", k)) is True
    assert speed.keep_graphs(("tiny", 99)) is False  # the fifth shape: dynamo starts afresh
    assert speed._kept == {("tiny", 99)}
    speed._kept.clear()
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU"))]
)
def test_readback_gives_the_values_the_tensor_had_when_read_back(device):
    t = torch.tensor([1.5, 2.0], dtype=torch.float64, device=device)
    r = speed.Readback(t)
    t += 1  # later work on the tensor does not reach the copy
    assert r.values() == [1.5, 2.0]
    assert speed.Readback(torch.tensor(3.0, device=device)).values() == 3.0
