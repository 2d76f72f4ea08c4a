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
        ("auto", 499, "cuda", "lm", False),
        ("auto", 500, "cuda", "lm", True),
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
    assert finetune.COMPILE_FROM == 500
