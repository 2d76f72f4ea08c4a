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
